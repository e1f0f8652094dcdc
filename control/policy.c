/* Allow/deny rules over the client's leaf certificate.
 *
 * Compiling does every piece of work that depends only on the configuration
 * (regcomp, hex decoding, case folding, DN canonical form), so a check only
 * extracts facts from the certificate, each at most once and only when a
 * rule asks for it: a policy of "cn" rules never hashes the DER or prints
 * the subject.
 *
 * Distinguished names (subject, issuer) are compared as the RFC 2253 text
 * OpenSSL prints with XN_FLAG_RFC2253, i.e. what
 * `openssl x509 -noout -subject -nameopt RFC2253` shows: most specific RDN
 * first ("CN=alice,OU=eng,O=Example,C=US"), '+' inside a multi-valued RDN (in
 * the order OpenSSL prints it), OpenSSL short names (CN, O, OU, C, L, ST, DC,
 * UID, emailAddress), bytes outside ASCII as \XX. Both sides are put in one
 * canonical form first: spaces around '=', ',' and '+' dropped, ';' read as
 * ',', attribute names case-insensitive, a non-ASCII byte the same whether
 * written raw (UTF-8) or as \XX, "\2C" the same as "\,". Values are
 * otherwise exact and case-sensitive; quoted values ("...") are not supported.
 * subject_regex runs over OpenSSL's text as printed, not the canonical form.
 *
 * Fail closed: a leaf whose extensions OpenSSL flags invalid, or whose SAN a
 * rule needed but could not be read strictly, is refused with rule
 * "invalid certificate extensions", since a deny rule might have matched. */
#include "policy.h"

#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <regex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FP_LEN 32 /* SHA-256 */
#define SERIAL_MAX 64 /* octets; RFC 5280 allows 20, be generous */

struct pval {
	char *s;         /* normalised value; for a prefix URI, without the '*' */
	size_t len;
	size_t fold;     /* URI: leading bytes (scheme, authority) compared caselessly */
	size_t at;       /* email: index of the '@' */
	bool prefix;     /* URI ending in '*' */
	bool wild;       /* DNS "*.rest" */
	bool has_re;
	regex_t re;
	unsigned char fp[FP_LEN];
};

struct pcond {
	enum kg_match what;
	struct pval *vals;
	size_t nvals;
};

struct prule {
	char *name;
	struct pcond *conds;
	size_t nconds;
};

struct kg_policy {
	struct prule *allow, *deny;
	size_t nallow, ndeny;
};

/* ---- small string helpers ---- */

static char ascii_lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static char ascii_upper(char c)
{
	return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
}

static bool ascii_caseeq(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (ascii_lower(a[i]) != ascii_lower(b[i]))
			return false;
	return true;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* A value as it may appear in one error line: quoted, control bytes escaped,
 * cut with "..." when long. */
static void quote(const char *s, char *buf, size_t cap)
{
	size_t w = 0;

	if (cap < 16) {
		if (cap)
			buf[0] = '\0';
		return;
	}
	buf[w++] = '"';
	for (; *s && w + 9 < cap; s++) {
		unsigned char c = (unsigned char)*s;
		if (c < 0x20 || c == 0x7f)
			w += (size_t)snprintf(buf + w, cap - w, "\\x%02x", c);
		else
			buf[w++] = (char)c;
	}
	if (*s) {
		memcpy(buf + w, "...", 3);
		w += 3;
	}
	buf[w++] = '"';
	buf[w] = '\0';
}

static void fail(const struct kg_cond *c, const char *value, const char *reason,
		 char *err, size_t errlen)
{
	char where[512], q[160];

	kg_where_format(&c->at, where, sizeof(where));
	if (!value) {
		snprintf(err, errlen, "%s: %s", where, reason);
		return;
	}
	quote(value, q, sizeof(q));
	snprintf(err, errlen, "%s: %s: %s", where, reason, q);
}

/* ---- distinguished names ---- */

/* One escaped character of a DN value ("\," or "\C3"), s[*r] just past the
 * backslash, rewritten at s[*w] in the one spelling both sides share: bytes
 * outside ASCII raw (so "J\C3\BCrgen" and UTF-8 "J\xc3\xbcrgen" agree),
 * RFC 2253 specials, space and '#' as "\c", control bytes as "\XX",
 * anything else as itself. -1 when the backslash ends the text or escapes a
 * raw control byte. */
static int dn_escape(char *s, size_t *r, size_t *w)
{
	static const char hex[] = "0123456789ABCDEF";
	unsigned char c;

	if (!s[*r])
		return -1;
	if (hexval(s[*r]) >= 0 && hexval(s[*r + 1]) >= 0) {
		c = (unsigned char)(hexval(s[*r]) << 4 | hexval(s[*r + 1]));
		*r += 2;
	} else {
		c = (unsigned char)s[(*r)++];
		if (c < 0x20 || c == 0x7f)
			return -1; /* would grow the text, and OpenSSL never writes it */
	}
	if (c < 0x20 || c == 0x7f) {
		s[(*w)++] = '\\';
		s[(*w)++] = hex[c >> 4];
		s[(*w)++] = hex[c & 0xf];
		return 0;
	}
	if (strchr(",+\";<>\\ #", c))
		s[(*w)++] = '\\';
	s[(*w)++] = (char)c;
	return 0;
}

/* Canonical form of RFC 2253 text, in place (it only ever shrinks). -1 when
 * a component has no "type=" part or a separator has nothing after it. */
static int dn_canon(char *s)
{
	size_t r = 0, w = 0;

	for (;;) {
		size_t type_start, sig;

		while (s[r] == ' ')
			r++;
		type_start = w;
		while (s[r] && s[r] != '=' && s[r] != ',' && s[r] != '+' && s[r] != ';')
			s[w++] = ascii_lower(s[r++]);
		while (w > type_start && s[w - 1] == ' ')
			w--;
		if (s[r] != '=' || w == type_start)
			return -1;
		s[w++] = s[r++];
		while (s[r] == ' ')
			r++;
		sig = w;
		while (s[r] && s[r] != ',' && s[r] != '+' && s[r] != ';') {
			if (s[r] == '\\') {
				r++;
				if (dn_escape(s, &r, &w) < 0)
					return -1;
				sig = w;
				continue;
			}
			s[w++] = s[r++];
			if (s[w - 1] != ' ')
				sig = w;
		}
		w = sig;
		if (!s[r])
			break;
		s[w++] = s[r] == ';' ? ',' : s[r];
		r++;
		if (!s[r])
			return -1;
	}
	s[w] = '\0';
	return 0;
}

/* ---- compiling one value ---- */

static int compile_regex(struct pval *v, const struct kg_cond *c, const char *in,
			 char *err, size_t errlen)
{
	char msg[128], reason[192];
	int rc = regcomp(&v->re, in, REG_EXTENDED | REG_NOSUB);

	if (rc != 0) {
		regerror(rc, &v->re, msg, sizeof(msg)); /* regcomp freed what it built */
		snprintf(reason, sizeof(reason), "not a POSIX extended regex (%s)", msg);
		fail(c, in, reason, err, errlen);
		return -1;
	}
	v->has_re = true;
	return 0;
}

/* Hex digits with optional ':' separators into uppercase without leading
 * zeros ("0" for zero). */
static int normalise_serial(struct pval *v, const char *in)
{
	size_t w = 0, digits = 0;

	for (const char *p = in; *p; p++) {
		if (*p == ':')
			continue;
		if (hexval(*p) < 0)
			return -1;
		digits++;
		if (w == 0 && *p == '0')
			continue;
		v->s[w++] = ascii_upper(*p);
	}
	if (digits == 0 || digits > 2 * SERIAL_MAX)
		return -1;
	if (w == 0)
		v->s[w++] = '0';
	v->s[w] = '\0';
	v->len = w;
	return 0;
}

static int normalise_fingerprint(struct pval *v, const char *in)
{
	size_t n = 0;

	for (const char *p = in; *p; p++) {
		if (*p == ':')
			continue;
		if (hexval(*p) < 0 || n == 2 * FP_LEN)
			return -1;
		if (n % 2 == 0)
			v->fp[n / 2] = (unsigned char)(hexval(*p) << 4);
		else
			v->fp[n / 2] |= (unsigned char)hexval(*p);
		n++;
	}
	return n == 2 * FP_LEN ? 0 : -1;
}

/* Lowercase; '*' only as a whole leading label followed by at least one more. */
static const char *normalise_dns(struct pval *v)
{
	char *s = v->s;

	for (size_t i = 0; i < v->len; i++)
		s[i] = ascii_lower(s[i]);
	v->wild = s[0] == '*' && s[1] == '.';
	if (strchr(s + (v->wild ? 1 : 0), '*'))
		return "wildcard only as a leading \"*.\" label";
	if (s[0] == '.' || s[v->len - 1] == '.' || strstr(s, ".."))
		return "not a DNS name (empty label)";
	return NULL;
}

/* Scheme and authority ("spiffe://Trust.Domain") are case-insensitive: v->fold
 * covers them (all of a prefix that ends inside them). */
static void normalise_uri(struct pval *v)
{
	size_t scheme;
	char *end;

	if (v->len && v->s[v->len - 1] == '*') {
		v->prefix = true;
		v->s[--v->len] = '\0';
	}
	scheme = strspn(v->s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.");
	if (v->s[scheme] != ':') {
		v->fold = v->prefix && scheme == v->len ? v->len : 0;
	} else {
		end = v->s + scheme + 1;
		if (end[0] == '/' && end[1] == '/')
			end += 2 + strcspn(end + 2, "/?#");
		v->fold = (size_t)(end - v->s);
	}
	for (size_t i = 0; i < v->fold; i++)
		v->s[i] = ascii_lower(v->s[i]);
}

static const char *normalise_email(struct pval *v)
{
	char *at = strrchr(v->s, '@');

	if (!at || at == v->s || !at[1])
		return "not an email address (local@domain)";
	v->at = (size_t)(at - v->s);
	for (char *p = at + 1; *p; p++)
		*p = ascii_lower(*p);
	return NULL;
}

static int compile_value(struct pval *v, const struct kg_cond *c, const char *in,
			 char *err, size_t errlen)
{
	const char *why = NULL;

	if (!in || !*in) {
		fail(c, NULL, "empty value", err, errlen);
		return -1;
	}
	if (c->what == KG_MATCH_SUBJECT_REGEX)
		return compile_regex(v, c, in, err, errlen);
	v->len = strlen(in);
	if (!(v->s = strdup(in))) {
		fail(c, NULL, "out of memory", err, errlen);
		return -1;
	}
	switch (c->what) {
	case KG_MATCH_SUBJECT:
	case KG_MATCH_ISSUER:
		if (dn_canon(v->s) < 0)
			why = "not a distinguished name (TYPE=value,...)";
		v->len = strlen(v->s);
		break;
	case KG_MATCH_DNS:
		why = normalise_dns(v);
		break;
	case KG_MATCH_URI:
		normalise_uri(v);
		break;
	case KG_MATCH_EMAIL:
		why = normalise_email(v);
		break;
	case KG_MATCH_SERIAL:
		if (normalise_serial(v, in) < 0)
			why = "not a serial number (hex digits, ':' allowed)";
		break;
	case KG_MATCH_FINGERPRINT:
		if (normalise_fingerprint(v, in) < 0)
			why = "not a SHA-256 fingerprint (64 hex digits)";
		break;
	case KG_MATCH_CN:
		break;
	default:
		why = "unknown match kind";
	}
	if (why) {
		fail(c, in, why, err, errlen);
		free(v->s);
		v->s = NULL;
		return -1;
	}
	return 0;
}

/* ---- compiling rules ---- */

static void free_cond(struct pcond *c)
{
	for (size_t i = 0; i < c->nvals; i++) {
		free(c->vals[i].s);
		if (c->vals[i].has_re)
			regfree(&c->vals[i].re);
	}
	free(c->vals);
}

static void free_rules(struct prule *r, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < r[i].nconds; j++)
			free_cond(&r[i].conds[j]);
		free(r[i].conds);
		free(r[i].name);
	}
	free(r);
}

static int compile_cond(struct pcond *out, const struct kg_cond *c, char *err, size_t errlen)
{
	out->what = c->what;
	if (c->nvalues == 0) {
		fail(c, NULL, "no values", err, errlen);
		return -1;
	}
	out->vals = calloc(c->nvalues, sizeof(*out->vals));
	if (!out->vals) {
		fail(c, NULL, "out of memory", err, errlen);
		return -1;
	}
	for (; out->nvals < c->nvalues; out->nvals++)
		if (compile_value(&out->vals[out->nvals], c, c->values[out->nvals], err, errlen) < 0)
			return -1; /* the failed value holds nothing to free */
	return 0;
}

static int compile_rule(struct prule *out, const struct kg_rule_spec *r, const char *kind,
			size_t idx, char *err, size_t errlen)
{
	char name[32], where[512];

	snprintf(name, sizeof(name), "%s[%zu]", kind, idx);
	if (r->nconds == 0) { /* would match every certificate: surely a mistake */
		kg_where_format(&r->at, where, sizeof(where));
		snprintf(err, errlen, "%s: rule %s has no conditions", where, r->name ? r->name : name);
		return -1;
	}
	out->name = strdup(r->name ? r->name : name);
	out->conds = calloc(r->nconds, sizeof(*out->conds));
	if (!out->name || !out->conds) {
		snprintf(err, errlen, "out of memory compiling rule %s", r->name ? r->name : name);
		return -1;
	}
	for (; out->nconds < r->nconds; out->nconds++)
		if (compile_cond(&out->conds[out->nconds], &r->conds[out->nconds], err, errlen) < 0) {
			out->nconds++; /* free what the failed condition compiled */
			return -1;
		}
	return 0;
}

static int compile_list(struct prule **out, size_t *nout, const struct kg_rule_spec *r, size_t n,
			const char *kind, char *err, size_t errlen)
{
	if (n == 0)
		return 0;
	if (!(*out = calloc(n, sizeof(**out)))) {
		snprintf(err, errlen, "out of memory compiling %s rules", kind);
		return -1;
	}
	for (; *nout < n; (*nout)++)
		if (compile_rule(&(*out)[*nout], &r[*nout], kind, *nout, err, errlen) < 0) {
			(*nout)++;
			return -1;
		}
	return 0;
}

struct kg_policy *kg_policy_compile(const struct kg_rules *rules, char *err, size_t errlen)
{
	struct kg_policy *p = calloc(1, sizeof(*p));

	if (!p) {
		snprintf(err, errlen, "out of memory compiling the policy");
		return NULL;
	}
	if (!rules)
		return p;
	if (compile_list(&p->deny, &p->ndeny, rules->deny, rules->ndeny, "deny", err, errlen) < 0 ||
	    compile_list(&p->allow, &p->nallow, rules->allow, rules->nallow, "allow", err, errlen) < 0)
		goto error;
	return p;
error:
	kg_policy_free(p);
	return NULL;
}

void kg_policy_free(struct kg_policy *p)
{
	if (!p)
		return;
	free_rules(p->deny, p->ndeny);
	free_rules(p->allow, p->nallow);
	free(p);
}

bool kg_policy_empty(const struct kg_policy *p)
{
	return !p || (p->nallow == 0 && p->ndeny == 0);
}

/* ---- subjectAltName, walked in place ----
 * Decoding the extension with X509_get_ext_d2i costs a dozen allocations per
 * handshake; the names we need are IA5 strings under implicit tags, so a
 * bounds-checked walk over the DER the certificate already holds is enough.
 * OpenSSL also reads BER there (a name split in constructed pieces,
 * indefinite lengths, bytes after the SEQUENCE) without flagging it; a SAN
 * this walk cannot read strictly refuses the client (fact_san). Where the
 * walk does read it, it reads what OpenSSL reads: the fuzz harness checks. */

#define SAN_EMAIL 0x81 /* [1] rfc822Name */
#define SAN_DNS 0x82   /* [2] dNSName */
#define SAN_URI 0x86   /* [6] uniformResourceIdentifier */

struct san_iter {
	const unsigned char *p, *end;
};

/* One DER TLV at *p: its tag, value and length; *p moves past it. */
static bool der_next(const unsigned char **p, const unsigned char *end, unsigned *tag,
		     const unsigned char **val, size_t *len)
{
	const unsigned char *q = *p;
	size_t n;

	if (end - q < 2 || (*q & 0x1f) == 0x1f) /* no high tag numbers here */
		return false;
	*tag = *q++;
	n = *q++;
	if (n & 0x80) {
		unsigned k = n & 0x7f;

		if (k == 0 || k > sizeof(size_t) || (size_t)(end - q) < k)
			return false;
		for (n = 0; k--;)
			n = n << 8 | *q++;
	}
	if (n > (size_t)(end - q))
		return false;
	*val = q;
	*len = n;
	*p = q + n;
	return true;
}

/* 1: it walks the names; 0: no SAN; -1: a SAN that is not one DER SEQUENCE. */
static int san_begin(X509 *x, struct san_iter *it)
{
	int i = x ? X509_get_ext_by_NID(x, NID_subject_alt_name, -1) : -1;
	const ASN1_OCTET_STRING *d;
	const unsigned char *p, *end, *v;
	unsigned tag;
	size_t len;

	if (i < 0)
		return 0;
	if (!(d = X509_EXTENSION_get_data(X509_get_ext(x, i))))
		return -1;
	p = ASN1_STRING_get0_data(d);
	end = p + ASN1_STRING_length(d);
	if (!der_next(&p, end, &tag, &v, &len) || tag != 0x30 || p != end)
		return -1; /* GeneralNames ::= SEQUENCE OF GeneralName */
	it->p = v;
	it->end = v + len;
	return 1;
}

/* Every name parses, and none of the kinds we match hides in a constructed
 * (BER) form OpenSSL would read but san_next would skip. */
static bool san_strict(struct san_iter it)
{
	const unsigned char *v;
	unsigned tag;
	size_t n;

	while (it.p < it.end) {
		if (!der_next(&it.p, it.end, &tag, &v, &n))
			return false;
		if (tag == (SAN_EMAIL | 0x20) || tag == (SAN_DNS | 0x20) || tag == (SAN_URI | 0x20))
			return false;
	}
	return true;
}

/* The next name tagged want; names with a NUL inside are skipped (an attack,
 * not a name). */
static bool san_next(struct san_iter *it, unsigned want, const char **name, size_t *len)
{
	const unsigned char *v;
	unsigned tag;
	size_t n;

	while (it->p < it->end && der_next(&it->p, it->end, &tag, &v, &n)) {
		if (tag != want || n == 0 || memchr(v, '\0', n))
			continue;
		*name = (const char *)v;
		*len = n;
		return true;
	}
	return false;
}

/* ---- SHA-256 of the DER ---- */

static EVP_MD *sha256;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

/* EVP_sha256() makes OpenSSL 3 look the implementation up on every digest;
 * fetched once it is kept for the life of the process. */
static void sha256_fetch(void)
{
	sha256 = EVP_MD_fetch(NULL, "SHA2-256", NULL);
}

static bool cert_sha256(X509 *x, unsigned char md[FP_LEN])
{
	unsigned char *der = NULL;
	unsigned int n = 0;
	int len;
	bool ok;

	pthread_once(&sha256_once, sha256_fetch);
	if (!x || !sha256 || (len = i2d_X509(x, &der)) <= 0)
		return false;
	ok = EVP_Digest(der, (size_t)len, md, &n, sha256, NULL) == 1 && n == FP_LEN;
	OPENSSL_free(der);
	return ok;
}

/* ---- facts about the certificate, each extracted at most once per check ---- */

enum {
	HAVE_SUBJECT = 1 << 0,
	HAVE_SUBJECT_CANON = 1 << 1,
	HAVE_ISSUER = 1 << 2,
	HAVE_SAN = 1 << 3,
	HAVE_SERIAL = 1 << 4,
	HAVE_FP = 1 << 5,
};

struct facts {
	X509 *x;
	unsigned have;
	BIO *subject_bio;
	const char *subject;  /* RFC 2253 text, owned by subject_bio */
	char *subject_canon;
	char *issuer_canon;
	const char *serial;   /* NULL: negative or oversized, matches no rule */
	char serial_buf[2 * SERIAL_MAX + 1];
	bool fp_ok;
	unsigned char fp[FP_LEN];
	int san;              /* san_begin's answer */
	struct san_iter san_names;
	bool unreadable;      /* a fact a rule needed could not be read safely */
};

/* Prints a name as RFC 2253 text into a memory BIO (NUL-terminated). */
static BIO *name_text(const X509_NAME *n, const char **text)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data;

	*text = NULL;
	if (!b)
		return NULL;
	if (!n || X509_NAME_print_ex(b, n, 0, XN_FLAG_RFC2253) < 0 || BIO_write(b, "", 1) != 1) {
		BIO_free(b);
		return NULL;
	}
	BIO_get_mem_data(b, &data);
	*text = data;
	return b;
}

static const char *fact_subject(struct facts *f)
{
	if (!(f->have & HAVE_SUBJECT)) {
		f->have |= HAVE_SUBJECT;
		if (f->x)
			f->subject_bio = name_text(X509_get_subject_name(f->x), &f->subject);
	}
	return f->subject;
}

static char *canon_copy(const char *text)
{
	char *c = text ? strdup(text) : NULL;

	if (c && dn_canon(c) < 0) {
		free(c);
		c = NULL;
	}
	return c;
}

static const char *fact_subject_canon(struct facts *f)
{
	if (!(f->have & HAVE_SUBJECT_CANON)) {
		f->have |= HAVE_SUBJECT_CANON;
		f->subject_canon = canon_copy(fact_subject(f));
	}
	return f->subject_canon;
}

static const char *fact_issuer_canon(struct facts *f)
{
	if (!(f->have & HAVE_ISSUER)) {
		const char *text;
		BIO *b;

		f->have |= HAVE_ISSUER;
		if (f->x && (b = name_text(X509_get_issuer_name(f->x), &text))) {
			f->issuer_canon = canon_copy(text);
			BIO_free(b);
		}
	}
	return f->issuer_canon;
}

/* The SAN names, or NULL. A SAN that is there but not strictly readable
 * marks the facts unreadable: the check then refuses, since a deny rule
 * could have matched a name we could not see. */
static const struct san_iter *fact_san(struct facts *f)
{
	if (!(f->have & HAVE_SAN)) {
		f->have |= HAVE_SAN;
		f->san = san_begin(f->x, &f->san_names);
		if (f->san < 0 || (f->san > 0 && !san_strict(f->san_names)))
			f->unreadable = true;
	}
	return f->san > 0 && !f->unreadable ? &f->san_names : NULL;
}

static const char *fact_serial(struct facts *f)
{
	if (!(f->have & HAVE_SERIAL)) {
		const ASN1_INTEGER *sn;
		const unsigned char *d;
		size_t w = 0;
		int n;

		f->have |= HAVE_SERIAL;
		if (!f->x || !(sn = X509_get0_serialNumber(f->x)))
			return NULL;
		n = ASN1_STRING_length(sn);
		d = ASN1_STRING_get0_data(sn);
		if (ASN1_STRING_type(sn) != V_ASN1_INTEGER || n < 0 || n > SERIAL_MAX)
			return NULL;
		for (int i = 0; i < n; i++) {
			static const char hex[] = "0123456789ABCDEF";
			if (w || d[i] >> 4)
				f->serial_buf[w++] = hex[d[i] >> 4];
			if (w || d[i] & 0xf)
				f->serial_buf[w++] = hex[d[i] & 0xf];
		}
		if (w == 0)
			f->serial_buf[w++] = '0';
		f->serial_buf[w] = '\0';
		f->serial = f->serial_buf;
	}
	return f->serial;
}

static const unsigned char *fact_fp(struct facts *f)
{
	if (!(f->have & HAVE_FP)) {
		f->have |= HAVE_FP;
		f->fp_ok = cert_sha256(f->x, f->fp);
	}
	return f->fp_ok ? f->fp : NULL;
}

static void facts_free(struct facts *f)
{
	BIO_free(f->subject_bio);
	free(f->subject_canon);
	free(f->issuer_canon);
}

/* ---- matching ---- */

static bool dns_match(const struct pval *v, const char *n, size_t len)
{
	size_t slen, head;

	/* A wildcard SAN stands only for itself: never widen it by a rule. */
	if (memchr(n, '*', len) || !v->wild)
		return len == v->len && ascii_caseeq(n, v->s, len);
	slen = v->len - 1; /* ".example.com" */
	if (len <= slen)
		return false;
	head = len - slen;
	return ascii_caseeq(n + head, v->s + 1, slen) && !memchr(n, '.', head);
}

static bool uri_match(const struct pval *v, const char *n, size_t len)
{
	if (v->prefix ? len < v->len : len != v->len)
		return false;
	return ascii_caseeq(n, v->s, v->fold) &&
	       memcmp(n + v->fold, v->s + v->fold, v->len - v->fold) == 0;
}

static bool email_match(const struct pval *v, const char *n, size_t len)
{
	if (len != v->len || n[v->at] != '@')
		return false;
	return memcmp(n, v->s, v->at) == 0 && ascii_caseeq(n + v->at, v->s + v->at, len - v->at);
}

static bool san_value_match(const struct pval *v, enum kg_match what, const char *n, size_t len)
{
	switch (what) {
	case KG_MATCH_DNS:
		return dns_match(v, n, len);
	case KG_MATCH_URI:
		return uri_match(v, n, len);
	case KG_MATCH_EMAIL:
		return email_match(v, n, len);
	default:
		return false;
	}
}

static unsigned san_tag(enum kg_match what)
{
	return what == KG_MATCH_DNS ? SAN_DNS : what == KG_MATCH_URI ? SAN_URI : SAN_EMAIL;
}

static bool san_match(const struct pcond *c, struct facts *f)
{
	const struct san_iter *names = fact_san(f);
	struct san_iter it;
	const char *name;
	size_t len;

	if (!names)
		return false;
	it = *names;
	while (san_next(&it, san_tag(c->what), &name, &len))
		for (size_t j = 0; j < c->nvals; j++)
			if (san_value_match(&c->vals[j], c->what, name, len))
				return true;
	return false;
}

static bool cn_entry_match(const struct pcond *c, const ASN1_STRING *s)
{
	unsigned char *utf8 = NULL;
	const unsigned char *d;
	int len, t = ASN1_STRING_type(s);
	bool hit = false;

	if (t == V_ASN1_UTF8STRING || t == V_ASN1_PRINTABLESTRING || t == V_ASN1_IA5STRING) {
		d = ASN1_STRING_get0_data(s);
		len = ASN1_STRING_length(s);
	} else {
		len = ASN1_STRING_to_UTF8(&utf8, s);
		d = utf8;
	}
	for (size_t j = 0; len >= 0 && j < c->nvals && !hit; j++)
		hit = c->vals[j].len == (size_t)len && memcmp(c->vals[j].s, d, (size_t)len) == 0;
	OPENSSL_free(utf8);
	return hit;
}

static bool cn_match(const struct pcond *c, struct facts *f)
{
	const X509_NAME *n = f->x ? X509_get_subject_name(f->x) : NULL;

	for (int i = -1; n && (i = X509_NAME_get_index_by_NID(n, NID_commonName, i)) >= 0;)
		if (cn_entry_match(c, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(n, i))))
			return true;
	return false;
}

static bool str_match(const struct pcond *c, const char *s)
{
	for (size_t j = 0; s && j < c->nvals; j++)
		if (strcmp(c->vals[j].s, s) == 0)
			return true;
	return false;
}

static bool regex_match(const struct pcond *c, struct facts *f)
{
	const char *s = fact_subject(f);

	for (size_t j = 0; s && j < c->nvals; j++)
		if (regexec(&c->vals[j].re, s, 0, NULL, 0) == 0)
			return true;
	return false;
}

static bool fp_match(const struct pcond *c, struct facts *f)
{
	const unsigned char *fp = fact_fp(f);

	for (size_t j = 0; fp && j < c->nvals; j++)
		if (memcmp(c->vals[j].fp, fp, FP_LEN) == 0)
			return true;
	return false;
}

static bool cond_match(const struct pcond *c, struct facts *f)
{
	switch (c->what) {
	case KG_MATCH_SUBJECT:
		return str_match(c, fact_subject_canon(f));
	case KG_MATCH_SUBJECT_REGEX:
		return regex_match(c, f);
	case KG_MATCH_CN:
		return cn_match(c, f);
	case KG_MATCH_DNS:
	case KG_MATCH_URI:
	case KG_MATCH_EMAIL:
		return san_match(c, f);
	case KG_MATCH_ISSUER:
		return str_match(c, fact_issuer_canon(f));
	case KG_MATCH_SERIAL:
		return str_match(c, fact_serial(f));
	case KG_MATCH_FINGERPRINT:
		return fp_match(c, f);
	default:
		return false;
	}
}

static bool rule_match(const struct prule *r, struct facts *f)
{
	for (size_t i = 0; i < r->nconds; i++)
		if (!cond_match(&r->conds[i], f))
			return false;
	return true;
}

static bool decide(const struct kg_policy *p, struct facts *f, const char **rule)
{
	for (size_t i = 0; i < p->ndeny; i++)
		if (rule_match(&p->deny[i], f)) {
			*rule = p->deny[i].name;
			return false;
		}
	if (p->nallow == 0)
		return true;
	for (size_t i = 0; i < p->nallow; i++)
		if (rule_match(&p->allow[i], f)) {
			*rule = p->allow[i].name;
			return true;
		}
	*rule = "no allow rule matched";
	return false;
}

bool kg_policy_check(const struct kg_policy *p, X509 *leaf, const char **rule)
{
	struct facts f = { .x = leaf };
	const char *name = NULL;
	bool ok;

	if (kg_policy_empty(p)) {
		if (rule)
			*rule = NULL;
		return true;
	}
	/* Extensions OpenSSL could not decode consistently (a second SAN, say)
	 * would hide names from deny rules: refuse rather than guess. */
	if (leaf && (X509_get_extension_flags(leaf) & EXFLAG_INVALID)) {
		if (rule)
			*rule = "invalid certificate extensions";
		return false;
	}
	ok = decide(p, &f, &name);
	if (f.unreadable) {
		ok = false;
		name = "invalid certificate extensions";
	}
	facts_free(&f);
	if (rule)
		*rule = name;
	return ok;
}

/* ---- facts shared with the log and PROXY v2 ---- */

bool kg_cert_spiffe_id(X509 *x, char *buf, size_t cap)
{
	struct san_iter it;
	const char *name;
	size_t len;

	if (cap)
		buf[0] = '\0';
	if (san_begin(x, &it) <= 0)
		return false;
	while (san_next(&it, SAN_URI, &name, &len)) {
		if (len < 9 || !ascii_caseeq(name, "spiffe://", 9))
			continue;
		if (len >= cap)
			return false; /* never hand out a truncated identity */
		memcpy(buf, name, len);
		buf[len] = '\0';
		return true;
	}
	return false;
}

void kg_cert_fingerprint_hex(X509 *x, char *buf, size_t cap)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[FP_LEN];
	size_t w = 0;

	if (!cap)
		return;
	if (cert_sha256(x, md))
		for (unsigned i = 0; i < FP_LEN && w + 2 < cap; i++) {
			buf[w++] = hex[md[i] >> 4];
			buf[w++] = hex[md[i] & 0xf];
		}
	buf[w] = '\0';
}
