/* libFuzzer harness for the policy: rule values and a client certificate both
 * come from the input, so the compiler (regexes, hex, DN canonical form,
 * wildcards) and the matchers meet hostile text on both sides.
 *
 * The input is lines, the first byte of each saying what the rest is:
 *   'a'..'i'  a value for the current allow rule's condition of that kind
 *             (enum kg_match order: subject, subject_regex, cn, dns, uri,
 *             email, issuer, serial, fingerprint); 'A'..'I' the same for deny
 *   '|' '!'   start the next allow / deny rule
 *   '0' subject CN   '1' subject O   '2' joins the previous subject RDN (UID)
 *   '3' SAN dNSName  '4' SAN URI     '5' SAN rfc822Name
 *   '6' issuer CN    '7' serial (raw big-endian bytes)
 *   '#'       the rest of the input (newlines too) is a DER certificate used
 *             instead of the one the lines above describe
 *   '$'       the rest of the input is the raw subjectAltName extension value
 *
 * policy.c is included, not linked, so the harness can also check that its
 * in-place SAN walk reads exactly the names OpenSSL's decoder reads. */
#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../control/policy.c"

#define MAX_RULES 4
#define MAX_VALUES 8

struct fz_cond {
	char *values[MAX_VALUES];
	size_t n;
};

struct fz_rules {
	struct kg_rule_spec specs[MAX_RULES];
	struct kg_cond conds[MAX_RULES][KG_MATCH_COUNT];
	struct fz_cond vals[MAX_RULES][KG_MATCH_COUNT];
	size_t n;
};

static EVP_PKEY *key;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	key = EVP_EC_gen("P-256");
	return key ? 0 : -1;
}

static void add_value(struct fz_rules *r, enum kg_match what, const uint8_t *p, size_t len)
{
	struct fz_cond *c;

	if (r->n == 0)
		r->n = 1;
	c = &r->vals[r->n - 1][what];
	if (c->n < MAX_VALUES)
		c->values[c->n++] = strndup((const char *)p, len);
}

/* Conditions with values, packed in kind order, as the parser would build them. */
static void pack(struct fz_rules *r, struct kg_rule_spec **out, size_t *nout)
{
	for (size_t i = 0; i < r->n; i++) {
		struct kg_rule_spec *s = &r->specs[i];

		memset(s, 0, sizeof(*s));
		s->at = (struct kg_where){ .file = "fuzz.yaml", .line = 1, .col = 1, .key = "fuzz" };
		s->conds = r->conds[i];
		for (int k = 0; k < KG_MATCH_COUNT; k++) {
			if (!r->vals[i][k].n)
				continue;
			r->conds[i][s->nconds++] = (struct kg_cond){
				.what = (enum kg_match)k, .values = r->vals[i][k].values,
				.nvalues = r->vals[i][k].n,
				.at = { .file = "fuzz.yaml", .line = 1, .col = 1, .key = "fuzz" } };
		}
	}
	*out = r->specs;
	*nout = r->n;
}

static void fz_free_rules(struct fz_rules *r)
{
	for (size_t i = 0; i < MAX_RULES; i++)
		for (int k = 0; k < KG_MATCH_COUNT; k++)
			for (size_t j = 0; j < r->vals[i][k].n; j++)
				free(r->vals[i][k].values[j]);
}

static void add_name(X509_NAME *n, const char *type, const uint8_t *p, size_t len, int set)
{
	if (len && len < 256)
		X509_NAME_add_entry_by_txt(n, type, MBSTRING_ASC, p, (int)len, -1, set);
}

static void add_san(GENERAL_NAMES *san, int type, const uint8_t *p, size_t len)
{
	GENERAL_NAME *g = GENERAL_NAME_new();
	ASN1_IA5STRING *s = ASN1_IA5STRING_new();

	if (!g || !s || !ASN1_STRING_set(s, p, (int)len)) {
		GENERAL_NAME_free(g);
		ASN1_IA5STRING_free(s);
		return;
	}
	GENERAL_NAME_set0_value(g, type, s);
	if (!sk_GENERAL_NAME_push(san, g))
		GENERAL_NAME_free(g);
}

static void cert_fact(X509 *x, GENERAL_NAMES *san, uint8_t tag, const uint8_t *p, size_t len)
{
	ASN1_INTEGER *sn;

	switch (tag) {
	case '0': add_name(X509_get_subject_name(x), "CN", p, len, 0); break;
	case '1': add_name(X509_get_subject_name(x), "O", p, len, 0); break;
	case '2': add_name(X509_get_subject_name(x), "UID", p, len, -1); break;
	case '3': add_san(san, GEN_DNS, p, len); break;
	case '4': add_san(san, GEN_URI, p, len); break;
	case '5': add_san(san, GEN_EMAIL, p, len); break;
	case '6': add_name(X509_get_issuer_name(x), "CN", p, len, 0); break;
	case '7':
		sn = X509_get_serialNumber(x);
		if (len && len <= 80)
			ASN1_STRING_set(sn, p, (int)len);
		break;
	}
}

static X509 *finish_cert(X509 *x, GENERAL_NAMES *san)
{
	if (sk_GENERAL_NAME_num(san) > 0)
		X509_add1_ext_i2d(x, NID_subject_alt_name, san, 0, X509V3_ADD_DEFAULT);
	X509_set_pubkey(x, key);
	X509_sign(x, key, EVP_sha256());
	return x;
}

/* Where the strict walk reads the SAN at all, it reads what OpenSSL reads. */
static void check_san_walk(X509 *x)
{
	static const struct { int gen; unsigned tag; } kinds[] = {
		{ GEN_DNS, SAN_DNS }, { GEN_URI, SAN_URI }, { GEN_EMAIL, SAN_EMAIL } };
	struct san_iter all, it;
	GENERAL_NAMES *gn;

	if (san_begin(x, &all) <= 0 || !san_strict(all))
		return;
	if (!(gn = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL)))
		return; /* OpenSSL refuses it (or sees two): the check refuses too */
	for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
		const char *name;
		size_t len;

		it = all;
		for (int i = 0; i < sk_GENERAL_NAME_num(gn); i++) {
			const GENERAL_NAME *g = sk_GENERAL_NAME_value(gn, i);
			int n;

			if (g->type != kinds[k].gen)
				continue;
			n = ASN1_STRING_length(g->d.ia5);
			if (n <= 0 || memchr(ASN1_STRING_get0_data(g->d.ia5), '\0', (size_t)n))
				continue;
			if (!san_next(&it, kinds[k].tag, &name, &len) || len != (size_t)n ||
			    memcmp(name, ASN1_STRING_get0_data(g->d.ia5), len) != 0)
				abort();
		}
		if (san_next(&it, kinds[k].tag, &name, &len))
			abort(); /* a name OpenSSL does not have */
	}
	GENERAL_NAMES_free(gn);
}

static void set_raw_san(X509 *x, const uint8_t *p, size_t len)
{
	ASN1_OCTET_STRING *o = ASN1_OCTET_STRING_new();
	X509_EXTENSION *e = NULL;

	if (o && len < 4096 && ASN1_OCTET_STRING_set(o, p, (int)len) &&
	    (e = X509_EXTENSION_create_by_NID(NULL, NID_subject_alt_name, 0, o)))
		X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	ASN1_OCTET_STRING_free(o);
}

static void exercise(X509 *x, struct fz_rules *allow, struct fz_rules *deny)
{
	struct kg_rules rules = { 0 };
	struct kg_policy *p;
	const char *rule, *again;
	char err[512], buf[256];
	bool ok;

	pack(allow, &rules.allow, &rules.nallow);
	pack(deny, &rules.deny, &rules.ndeny);
	p = kg_policy_compile(&rules, err, sizeof(err));
	if (!p) {
		if (strncmp(err, "fuzz.yaml:1:1: fuzz: ", 21) != 0)
			abort(); /* every compile error names where */
		return;
	}
	ok = kg_policy_check(p, x, &rule);
	if (ok != kg_policy_check(p, x, &again) || (!ok && (!rule || rule != again)))
		abort(); /* deterministic, and a refusal always names a rule */
	kg_policy_free(p);
	kg_cert_spiffe_id(x, buf, sizeof(buf));
	kg_cert_fingerprint_hex(x, buf, sizeof(buf));
	check_san_walk(x);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fz_rules allow, deny;
	GENERAL_NAMES *san = sk_GENERAL_NAME_new_null();
	X509 *x = X509_new();
	const uint8_t *p = data, *end = data + size;

	memset(&allow, 0, sizeof(allow));
	memset(&deny, 0, sizeof(deny));
	X509_set_version(x, X509_VERSION_3);
	while (p < end) {
		const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
		const uint8_t *eol = nl ? nl : end;
		uint8_t tag = *p++;
		size_t len = (size_t)(eol - p);

		if (tag == '$') {
			set_raw_san(x, p, (size_t)(end - p));
			sk_GENERAL_NAME_pop_free(san, GENERAL_NAME_free);
			san = sk_GENERAL_NAME_new_null();
			break;
		}
		if (tag == '#') {
			const unsigned char *der = p;
			X509 *d = d2i_X509(NULL, &der, (long)(end - p));
			if (d) {
				X509_free(x);
				x = d;
				sk_GENERAL_NAME_pop_free(san, GENERAL_NAME_free);
				san = NULL;
			}
			break;
		}
		if (tag >= 'a' && tag < 'a' + KG_MATCH_COUNT)
			add_value(&allow, (enum kg_match)(tag - 'a'), p, len);
		else if (tag >= 'A' && tag < 'A' + KG_MATCH_COUNT)
			add_value(&deny, (enum kg_match)(tag - 'A'), p, len);
		else if (tag == '|' && allow.n < MAX_RULES)
			allow.n++;
		else if (tag == '!' && deny.n < MAX_RULES)
			deny.n++;
		else
			cert_fact(x, san, tag, p, len);
		p = nl ? nl + 1 : end;
	}
	if (san)
		finish_cert(x, san);
	exercise(x, &allow, &deny);
	fz_free_rules(&allow);
	fz_free_rules(&deny);
	sk_GENERAL_NAME_pop_free(san, GENERAL_NAME_free);
	X509_free(x);
	return 0;
}
