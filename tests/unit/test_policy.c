/* Policy rules against certificates built in memory: every match kind, both
 * ways, the case rules, and every compile error with its exact text. */
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdlib.h>

#include "policy.h"
#include "test.h"

static EVP_PKEY *key;

struct rdn {
	const char *type, *value;
	bool same_rdn; /* joins the previous RDN (multi-valued) */
};

struct certspec {
	const struct rdn *subject, *issuer;
	const char *san;    /* X509v3 config syntax, NULL for none */
	const char *serial; /* hex */
};

static void add_rdns(X509_NAME *n, const struct rdn *r)
{
	for (; r->type; r++)
		if (!X509_NAME_add_entry_by_txt(n, r->type, MBSTRING_UTF8,
						(const unsigned char *)r->value, -1, -1,
						r->same_rdn ? -1 : 0))
			abort();
}

static X509 *make_cert(const struct certspec *s)
{
	X509 *x = X509_new();
	BIGNUM *bn = NULL;
	X509_EXTENSION *ext;

	if (!x || !X509_set_version(x, X509_VERSION_3) || !BN_hex2bn(&bn, s->serial) ||
	    !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)))
		abort();
	BN_free(bn);
	add_rdns(X509_get_subject_name(x), s->subject);
	add_rdns(X509_get_issuer_name(x), s->issuer);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, key);
	if (s->san) {
		ext = X509V3_EXT_nconf_nid(NULL, NULL, NID_subject_alt_name, s->san);
		if (!ext || !X509_add_ext(x, ext, -1))
			abort();
		X509_EXTENSION_free(ext);
	}
	if (!X509_sign(x, key, EVP_sha256()))
		abort();
	return x;
}

static const char *const keys[KG_MATCH_COUNT] = {
	[KG_MATCH_SUBJECT] = "subject",	      [KG_MATCH_SUBJECT_REGEX] = "subject_regex",
	[KG_MATCH_CN] = "cn",		      [KG_MATCH_DNS] = "dns",
	[KG_MATCH_URI] = "uri",		      [KG_MATCH_EMAIL] = "email",
	[KG_MATCH_ISSUER] = "issuer",	      [KG_MATCH_SERIAL] = "serial",
	[KG_MATCH_FINGERPRINT] = "fingerprint",
};

static struct kg_cond cond(enum kg_match what, char **values, size_t n, unsigned line)
{
	return (struct kg_cond){ .what = what, .values = values, .nvalues = n,
				 .at = { .file = "policy.yaml", .line = line, .col = 9,
					 .key = keys[what] } };
}

#define VALS(...) (char *[]){ __VA_ARGS__ }, sizeof((char *[]){ __VA_ARGS__ }) / sizeof(char *)

/* One allow rule with one condition: does the certificate pass? */
static bool allowed_by(X509 *x, enum kg_match what, char **values, size_t n)
{
	struct kg_cond c = cond(what, values, n, 3);
	struct kg_rule_spec r = { .conds = &c, .nconds = 1 };
	struct kg_rules rules = { .allow = &r, .nallow = 1 };
	char err[512] = "";
	struct kg_policy *p = kg_policy_compile(&rules, err, sizeof(err));
	const char *rule = NULL;
	bool ok;

	if (!p) {
		fprintf(stderr, "unexpected compile error: %s\n", err);
		t_failures++;
		return false;
	}
	ok = kg_policy_check(p, x, &rule);
	if (!ok && strcmp(rule, "no allow rule matched") != 0) {
		fprintf(stderr, "refused with rule '%s'\n", rule);
		t_failures++;
	}
	kg_policy_free(p);
	return ok;
}

#define PASS(x, what, ...) CHECK(allowed_by(x, what, VALS(__VA_ARGS__)))
#define REFUSE(x, what, ...) CHECK(!allowed_by(x, what, VALS(__VA_ARGS__)))

/* The compile error for one value (must fail), in a static buffer. */
static const char *compile_error(enum kg_match what, const char *value)
{
	static char err[512];
	char *v[] = { (char *)value };
	struct kg_cond c = cond(what, v, 1, 7);
	struct kg_rule_spec r = { .conds = &c, .nconds = 1 };
	struct kg_rules rules = { .deny = &r, .ndeny = 1 };
	struct kg_policy *p;

	strcpy(err, "(compiled)");
	p = kg_policy_compile(&rules, err, sizeof(err));
	if (p) {
		kg_policy_free(p);
		return "(compiled)";
	}
	return err;
}

static const struct rdn alice_subject[] = {
	{ "C", "US", false },
	{ "O", "Example, Inc", false },
	{ "OU", "eng", false },
	{ "OU", "platform", false },
	{ "CN", "alice", false },
	{ "CN", "alice-alt", false },
	{ "UID", "42", true },
	{ NULL, NULL, false },
};
static const struct rdn ca_name[] = {
	{ "C", "US", false }, { "O", "Example Inc", false }, { "CN", "Example Issuing CA", false }, { NULL, NULL, false },
};

static X509 *alice, *deep, *bare, *zero, *dup_san;

static void make_certs(void)
{
	static const struct rdn deep_subject[] = {
		{ "O", "J\xc3\xbcrgen GmbH", false }, { "CN", "Bob", false }, { NULL, NULL, false } };
	static const struct rdn bare_subject[] = { { "CN", "bare", false }, { NULL, NULL, false } };

	key = EVP_EC_gen("P-256");
	if (!key)
		abort();
	alice = make_cert(&(struct certspec){
		.subject = alice_subject, .issuer = ca_name, .serial = "00ABCDEF01",
		.san = "DNS:api.example.com, DNS:*.wild.example.org, "
		       "URI:spiffe://Prod.Example.org/ns/web/sa/frontend, "
		       "URI:https://svc.example.com/path, email:Alice.Smith@Example.COM" });
	deep = make_cert(&(struct certspec){
		.subject = deep_subject, .issuer = ca_name, .serial = "01",
		.san = "DNS:a.b.example.com, URI:https://other.example.com/" });
	bare = make_cert(&(struct certspec){
		.subject = bare_subject, .issuer = ca_name, .serial = "7F" });
	zero = make_cert(&(struct certspec){
		.subject = bare_subject, .issuer = ca_name, .serial = "0" });
	/* a second SAN extension that no decoder agrees about */
	dup_san = make_cert(&(struct certspec){
		.subject = bare_subject, .issuer = ca_name, .serial = "2", .san = "DNS:ok.example.com" });
	X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, NULL, NID_subject_alt_name,
						   "DNS:evil.example.com");
	if (!ext || !X509_add_ext(dup_san, ext, -1) || !X509_sign(dup_san, key, EVP_sha256()))
		abort();
	X509_EXTENSION_free(ext);
}

static void test_subject(void)
{
	static const char rfc2253[] =
		"UID=42+CN=alice-alt,CN=alice,OU=platform,OU=eng,O=Example\\, Inc,C=US";
	BIO *b = BIO_new(BIO_s_mem());
	char *data;
	long n;

	/* the format the documentation promises: what OpenSSL prints */
	X509_NAME_print_ex(b, X509_get_subject_name(alice), 0, XN_FLAG_RFC2253);
	n = BIO_get_mem_data(b, &data);
	CHECK(n == (long)strlen(rfc2253) && memcmp(data, rfc2253, (size_t)n) == 0);
	BIO_free(b);

	PASS(alice, KG_MATCH_SUBJECT, (char *)rfc2253);
	PASS(alice, KG_MATCH_SUBJECT, "CN=bob", (char *)rfc2253); /* any value */
	PASS(alice, KG_MATCH_SUBJECT,
	     " uid=42 + cn = alice-alt , CN=alice;OU=platform, ou =eng,O=Example\\, Inc, c=US ");
	PASS(alice, KG_MATCH_SUBJECT,
	     "UID=42+CN=alice-alt,CN=alice,OU=platform,OU=eng,O=Example\\2c Inc,C=US");
	REFUSE(alice, KG_MATCH_SUBJECT, "CN=alice,OU=platform,OU=eng,O=Example\\, Inc,C=US");
	REFUSE(alice, KG_MATCH_SUBJECT,
	       "UID=42+CN=alice-alt,CN=alice,OU=eng,OU=platform,O=Example\\, Inc,C=US");
	REFUSE(alice, KG_MATCH_SUBJECT,
	       "UID=42+CN=Alice-alt,CN=alice,OU=platform,OU=eng,O=Example\\, Inc,C=US");
	REFUSE(alice, KG_MATCH_SUBJECT, "C=US,O=Example\\, Inc,OU=eng,OU=platform,CN=alice");
	PASS(bare, KG_MATCH_SUBJECT, "CN=bare");
	/* non-ASCII: OpenSSL prints \XX; raw UTF-8 or either hex case also match */
	PASS(deep, KG_MATCH_SUBJECT, "CN=Bob,O=J\\C3\\BCrgen GmbH");
	PASS(deep, KG_MATCH_SUBJECT, "CN=Bob,O=J\\c3\\bcrgen GmbH");
	PASS(deep, KG_MATCH_SUBJECT, "CN=Bob,O=J\xc3\xbcrgen GmbH");
	PASS(deep, KG_MATCH_SUBJECT, "CN=\\42ob,O=J\xc3\xbcrgen GmbH");
	REFUSE(deep, KG_MATCH_SUBJECT, "CN=Bob,O=Jurgen GmbH");
	PASS(deep, KG_MATCH_SUBJECT_REGEX, "^CN=Bob,O=J\\\\C3\\\\BCrgen GmbH$");

	PASS(alice, KG_MATCH_SUBJECT_REGEX, "^UID=42\\+CN=alice-alt,");
	PASS(alice, KG_MATCH_SUBJECT_REGEX, "(^|,)OU=(eng|ops)(,|$)");
	PASS(alice, KG_MATCH_SUBJECT_REGEX, "nomatch", "O=Example\\\\, Inc");
	REFUSE(alice, KG_MATCH_SUBJECT_REGEX, "^CN=alice,");
	REFUSE(alice, KG_MATCH_SUBJECT_REGEX, "OU=ops");
	REFUSE(bare, KG_MATCH_SUBJECT_REGEX, "OU=");
}

static void test_issuer(void)
{
	PASS(alice, KG_MATCH_ISSUER, "CN=Example Issuing CA,O=Example Inc,C=US");
	PASS(alice, KG_MATCH_ISSUER, "cn=Example Issuing CA, o = Example Inc ,C=US");
	REFUSE(alice, KG_MATCH_ISSUER, "CN=Example Issuing CA");
	REFUSE(alice, KG_MATCH_ISSUER, "CN=example issuing ca,O=Example Inc,C=US");
	REFUSE(alice, KG_MATCH_ISSUER, "C=US,O=Example Inc,CN=Example Issuing CA");
}

static void test_cn(void)
{
	PASS(alice, KG_MATCH_CN, "alice");
	PASS(alice, KG_MATCH_CN, "alice-alt"); /* any commonName entry */
	PASS(alice, KG_MATCH_CN, "bob", "alice");
	REFUSE(alice, KG_MATCH_CN, "Alice");
	REFUSE(alice, KG_MATCH_CN, "ali");
	REFUSE(alice, KG_MATCH_CN, "42");
	REFUSE(deep, KG_MATCH_CN, "bob");
	PASS(deep, KG_MATCH_CN, "Bob");
}

static void test_dns(void)
{
	PASS(alice, KG_MATCH_DNS, "api.example.com");
	PASS(alice, KG_MATCH_DNS, "API.Example.COM");
	PASS(alice, KG_MATCH_DNS, "*.example.com");
	PASS(alice, KG_MATCH_DNS, "*.EXAMPLE.com");
	REFUSE(alice, KG_MATCH_DNS, "*.com"); /* one label only */
	REFUSE(alice, KG_MATCH_DNS, "example.com");
	REFUSE(alice, KG_MATCH_DNS, "pi.example.com");
	REFUSE(alice, KG_MATCH_DNS, "*.api.example.com");
	/* a wildcard SAN matches only the identical rule string */
	PASS(alice, KG_MATCH_DNS, "*.wild.example.org");
	PASS(alice, KG_MATCH_DNS, "*.WILD.example.org");
	REFUSE(alice, KG_MATCH_DNS, "x.wild.example.org");
	REFUSE(alice, KG_MATCH_DNS, "*.example.org");
	REFUSE(deep, KG_MATCH_DNS, "*.example.com"); /* a.b.example.com: two labels */
	PASS(deep, KG_MATCH_DNS, "*.b.example.com");
	REFUSE(bare, KG_MATCH_DNS, "*.example.com"); /* no SAN at all */
	REFUSE(bare, KG_MATCH_DNS, "bare");          /* the CN is not a dNSName */
}

static void test_uri(void)
{
	PASS(alice, KG_MATCH_URI, "https://svc.example.com/path");
	PASS(alice, KG_MATCH_URI, "HTTPS://SVC.Example.com/path");
	REFUSE(alice, KG_MATCH_URI, "https://svc.example.com/PATH");
	REFUSE(alice, KG_MATCH_URI, "https://svc.example.com/pat");
	REFUSE(alice, KG_MATCH_URI, "https://svc.example.com/path/");
	PASS(alice, KG_MATCH_URI, "https://svc.example.com/*");
	PASS(alice, KG_MATCH_URI, "https://svc.example.com/path*"); /* prefix may be all of it */
	/* SPIFFE: scheme and trust domain case-insensitive, path exact */
	PASS(alice, KG_MATCH_URI, "spiffe://prod.example.org/ns/web/sa/frontend");
	PASS(alice, KG_MATCH_URI, "SPIFFE://PROD.EXAMPLE.ORG/ns/web/sa/frontend");
	REFUSE(alice, KG_MATCH_URI, "spiffe://prod.example.org/ns/web/sa/Frontend");
	REFUSE(alice, KG_MATCH_URI, "spiffe://prod.example.org/ns/web");
	PASS(alice, KG_MATCH_URI, "spiffe://prod.example.org/ns/web/*");
	PASS(alice, KG_MATCH_URI, "spiffe://PROD.example.org/*");
	PASS(alice, KG_MATCH_URI, "spiffe://prod.*");
	PASS(alice, KG_MATCH_URI, "SPIF*"); /* a prefix inside the scheme */
	PASS(alice, KG_MATCH_URI, "Spiffe:*");
	REFUSE(alice, KG_MATCH_URI, "spiffe:x*");
	PASS(alice, KG_MATCH_URI, "spiffe:/*");
	REFUSE(alice, KG_MATCH_URI, "/ns/web/*"); /* no scheme: not a suffix match */
	REFUSE(alice, KG_MATCH_URI, "spiffe://prod.example.org/ns/WEB/*");
	REFUSE(alice, KG_MATCH_URI, "spiffe://prod.example.org/ns/api/*");
	REFUSE(alice, KG_MATCH_URI, "spiffe://prod.example.org/ns/web/sa/frontend/x*");
	REFUSE(alice, KG_MATCH_URI, "spiffe://staging.example.org/*");
	REFUSE(alice, KG_MATCH_URI, "api.example.com"); /* a dNSName is not a URI */
	PASS(deep, KG_MATCH_URI, "https://other.example.com/");
	REFUSE(bare, KG_MATCH_URI, "*");
	PASS(alice, KG_MATCH_URI, "*"); /* has any URI SAN */
}

static void test_email(void)
{
	PASS(alice, KG_MATCH_EMAIL, "Alice.Smith@Example.COM");
	PASS(alice, KG_MATCH_EMAIL, "Alice.Smith@example.com");
	PASS(alice, KG_MATCH_EMAIL, "Alice.Smith@EXAMPLE.COM");
	REFUSE(alice, KG_MATCH_EMAIL, "alice.smith@example.com"); /* local part is exact */
	REFUSE(alice, KG_MATCH_EMAIL, "Smith@example.com");
	REFUSE(alice, KG_MATCH_EMAIL, "Alice.Smith@example.co");
	REFUSE(alice, KG_MATCH_EMAIL, "Alice.Smith@mail.example.com");
	REFUSE(bare, KG_MATCH_EMAIL, "Alice.Smith@example.com");
}

static void test_serial(void)
{
	PASS(alice, KG_MATCH_SERIAL, "ABCDEF01");
	PASS(alice, KG_MATCH_SERIAL, "abcdef01");
	PASS(alice, KG_MATCH_SERIAL, "00:ab:CD:ef:01");
	PASS(alice, KG_MATCH_SERIAL, "0000abcdef01");
	REFUSE(alice, KG_MATCH_SERIAL, "ABCDEF02");
	REFUSE(alice, KG_MATCH_SERIAL, "ABCDEF0");
	REFUSE(alice, KG_MATCH_SERIAL, "ABCDEF010");
	PASS(deep, KG_MATCH_SERIAL, "1");
	PASS(deep, KG_MATCH_SERIAL, "01");
	PASS(bare, KG_MATCH_SERIAL, "7f");
	PASS(zero, KG_MATCH_SERIAL, "0");
	PASS(zero, KG_MATCH_SERIAL, "00:00");
	REFUSE(zero, KG_MATCH_SERIAL, "1");
}

static void test_fingerprint(void)
{
	unsigned char md[32];
	unsigned int n = 0;
	char hex[65], want[65], colons[96], small[9];
	size_t w = 0;

	X509_digest(alice, EVP_sha256(), md, &n);
	CHECK(n == 32);
	for (unsigned i = 0; i < 32; i++)
		snprintf(want + 2 * i, 3, "%02x", md[i]);
	kg_cert_fingerprint_hex(alice, hex, sizeof(hex));
	CHECK_STR(hex, want);
	kg_cert_fingerprint_hex(alice, small, sizeof(small));
	CHECK(strncmp(small, want, 8) == 0 && strlen(small) == 8);

	for (unsigned i = 0; i < 32; i++)
		w += (size_t)snprintf(colons + w, sizeof(colons) - w, i ? ":%02X" : "%02X", md[i]);
	PASS(alice, KG_MATCH_FINGERPRINT, hex);
	PASS(alice, KG_MATCH_FINGERPRINT, colons);
	REFUSE(deep, KG_MATCH_FINGERPRINT, hex);
	hex[63] = hex[63] == '0' ? '1' : '0';
	REFUSE(alice, KG_MATCH_FINGERPRINT, hex);
}

/* A certificate whose SAN extension holds exactly der. */
static X509 *raw_san_cert(const unsigned char *der, int len)
{
	static const struct rdn subject[] = { { "CN", "raw", false }, { NULL, NULL, false } };
	X509 *x = make_cert(&(struct certspec){ .subject = subject, .issuer = ca_name,
						 .serial = "3" });
	ASN1_OCTET_STRING *o = ASN1_OCTET_STRING_new();
	X509_EXTENSION *e;

	if (!o || !ASN1_OCTET_STRING_set(o, der, len) ||
	    !(e = X509_EXTENSION_create_by_NID(NULL, NID_subject_alt_name, 0, o)) ||
	    !X509_add_ext(x, e, -1) || !X509_sign(x, key, EVP_sha256()))
		abort();
	X509_EXTENSION_free(e);
	ASN1_OCTET_STRING_free(o);
	return x;
}

/* OpenSSL reads BER in a SAN (a dNSName split in constructed pieces,
 * indefinite lengths, bytes after the names) without flagging anything.
 * The matcher walks the DER itself, so whatever it cannot read strictly
 * refuses the client: a deny rule might have matched the hidden name. */
static void test_san_encoding(void)
{
	static const unsigned char split[] = { 0x30, 0x0c, 0xa2, 0x0a, 0x16, 0x03, 'a', '.', 'b',
					       0x16, 0x03, '.', 'c', 'o' };
	static const unsigned char trailing[] = { 0x30, 0x05, 0x82, 0x03, 'a', '.', 'b', 0xff };
	static const unsigned char indefinite[] = { 0x30, 0x80, 0x82, 0x03, 'a', '.', 'b', 0, 0 };
	static const unsigned char long_len[] = { 0x30, 0x81, 0x05, 0x82, 0x03, 'a', '.', 'b' };
	static const unsigned char nul[] = { 0x30, 0x0c, 0x82, 0x05, 'a', '.', 'b', 0, 'x',
					     0x82, 0x03, 'c', '.', 'd' };
	struct { const unsigned char *der; int len; bool readable; } cases[] = {
		{ split, sizeof(split), false },
		{ trailing, sizeof(trailing), false },
		{ indefinite, sizeof(indefinite), false },
		{ long_len, sizeof(long_len), true }, /* not minimal, still one reading */
		{ nul, sizeof(nul), true },
	};
	struct kg_cond d0 = cond(KG_MATCH_DNS, VALS("a.b.co", "a.b"), 40);
	struct kg_cond a0 = cond(KG_MATCH_DNS, VALS("a.b", "c.d"), 41);
	struct kg_cond cn = cond(KG_MATCH_CN, VALS("raw"), 42);
	struct kg_rule_spec deny = { .conds = &d0, .nconds = 1 };
	struct kg_rule_spec allow = { .conds = &a0, .nconds = 1 };
	struct kg_rule_spec by_cn = { .conds = &cn, .nconds = 1 };
	struct kg_rules deny_only = { .deny = &deny, .ndeny = 1 };
	struct kg_rules allow_dns = { .allow = &allow, .nallow = 1 };
	struct kg_rules allow_cn = { .allow = &by_cn, .nallow = 1 };
	char err[256], buf[64];
	struct kg_policy *pd = kg_policy_compile(&deny_only, err, sizeof(err));
	struct kg_policy *pa = kg_policy_compile(&allow_dns, err, sizeof(err));
	struct kg_policy *pc = kg_policy_compile(&allow_cn, err, sizeof(err));
	const char *rule;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		X509 *x = raw_san_cert(cases[i].der, cases[i].len);
		bool pass_deny = kg_policy_check(pd, x, &rule);

		if (!cases[i].readable) {
			CHECK(!pass_deny);
			CHECK_STR(rule, "invalid certificate extensions");
			CHECK(!kg_policy_check(pa, x, &rule));
			CHECK_STR(rule, "invalid certificate extensions");
		}
		/* rules that never look at the SAN do not care how it is written */
		CHECK(kg_policy_check(pc, x, &rule));
		CHECK(!kg_cert_spiffe_id(x, buf, sizeof(buf)));
		X509_free(x);
	}
	/* long form length: read, matched, denied by name */
	X509 *x = raw_san_cert(long_len, sizeof(long_len));
	CHECK(!kg_policy_check(pd, x, &rule));
	CHECK_STR(rule, "deny[0]");
	CHECK(kg_policy_check(pa, x, &rule));
	X509_free(x);
	/* a name cut by a NUL is no name; the next one still counts */
	x = raw_san_cert(nul, sizeof(nul));
	CHECK(kg_policy_check(pd, x, &rule));
	CHECK(kg_policy_check(pa, x, &rule)); /* c.d */
	X509_free(x);
	kg_policy_free(pd);
	kg_policy_free(pa);
	kg_policy_free(pc);
}

static void test_spiffe_id(void)
{
	char buf[128], tiny[10];

	CHECK(kg_cert_spiffe_id(alice, buf, sizeof(buf)));
	CHECK_STR(buf, "spiffe://Prod.Example.org/ns/web/sa/frontend");
	CHECK(!kg_cert_spiffe_id(alice, tiny, sizeof(tiny))); /* never truncated */
	CHECK_STR(tiny, "");
	CHECK(!kg_cert_spiffe_id(deep, buf, sizeof(buf)));
	CHECK(!kg_cert_spiffe_id(bare, buf, sizeof(buf)));
}

/* A policy over alice and the other certificates: ordering and combination. */
static void test_semantics(void)
{
	struct kg_rules none = { 0 };
	struct kg_cond a0[] = { cond(KG_MATCH_CN, VALS("alice"), 10),
				cond(KG_MATCH_DNS, VALS("nothing.example.com", "*.example.com"), 11) };
	struct kg_cond a1[] = { cond(KG_MATCH_CN, VALS("bare"), 12) };
	struct kg_cond d0[] = { cond(KG_MATCH_SERIAL, VALS("7F"), 13),
				cond(KG_MATCH_CN, VALS("nobody"), 14) };
	struct kg_cond d1[] = { cond(KG_MATCH_URI, VALS("https://other.example.com/*"), 15) };
	struct kg_cond d2[] = { cond(KG_MATCH_EMAIL, VALS("Alice.Smith@example.com"), 16) };
	struct kg_rule_spec allow[] = { { .conds = a0, .nconds = 2 },
					{ .name = "bare-ok", .conds = a1, .nconds = 1 } };
	struct kg_rule_spec deny[] = { { .conds = d0, .nconds = 2 },
				       { .conds = d1, .nconds = 1 },
				       { .name = "no-alice-mail", .conds = d2, .nconds = 1 } };
	struct kg_rules rules = { .allow = allow, .nallow = 2, .deny = deny, .ndeny = 2 };
	char err[256] = "";
	const char *rule = "unset";
	struct kg_policy *p;

	p = kg_policy_compile(&none, err, sizeof(err));
	CHECK(p && kg_policy_empty(p));
	CHECK(kg_policy_check(p, alice, &rule));
	CHECK(rule == NULL);
	CHECK(kg_policy_check(p, NULL, NULL));
	CHECK(kg_policy_check(p, dup_san, NULL)); /* no rule: nothing to look at */
	kg_policy_free(p);

	p = kg_policy_compile(&rules, err, sizeof(err));
	CHECK(p && !kg_policy_empty(p));
	if (!p)
		return;
	/* AND within a rule (cn and dns), OR across a condition's values */
	CHECK(kg_policy_check(p, alice, &rule));
	CHECK_STR(rule, "allow[0]");
	CHECK(kg_policy_check(p, bare, &rule));
	CHECK_STR(rule, "bare-ok");
	/* deny[0] needs serial 7F AND cn nobody: bare has only the serial */
	CHECK(!kg_policy_check(p, deep, &rule));
	CHECK_STR(rule, "deny[1]");
	CHECK(kg_policy_check(p, zero, &rule)); /* cn bare, serial 0: deny[0] needs 7F */
	CHECK_STR(rule, "bare-ok");
	kg_policy_free(p);

	/* deny before allow: alice passes allow[0] yet is refused by name */
	rules.ndeny = 3;
	p = kg_policy_compile(&rules, err, sizeof(err));
	CHECK(p != NULL);
	CHECK(!kg_policy_check(p, alice, &rule));
	CHECK_STR(rule, "no-alice-mail");
	CHECK(kg_policy_check(p, bare, &rule));
	kg_policy_free(p);

	/* allow[0] alone: one condition failing fails the rule */
	rules = (struct kg_rules){ .allow = allow, .nallow = 1 };
	p = kg_policy_compile(&rules, err, sizeof(err));
	CHECK(!kg_policy_check(p, deep, &rule)); /* cn Bob */
	CHECK_STR(rule, "no allow rule matched");
	CHECK(!kg_policy_check(p, NULL, &rule)); /* no certificate at all */
	CHECK_STR(rule, "no allow rule matched");
	kg_policy_free(p);

	/* deny rules only: whatever is not denied passes */
	rules = (struct kg_rules){ .deny = deny, .ndeny = 3 };
	p = kg_policy_compile(&rules, err, sizeof(err));
	CHECK(kg_policy_check(p, bare, &rule));
	CHECK(rule == NULL); /* no allow rule to name */
	CHECK(kg_policy_check(p, NULL, &rule));
	CHECK(!kg_policy_check(p, alice, &rule));
	CHECK_STR(rule, "no-alice-mail");
	/* names a deny rule cannot see are not a way past it */
	CHECK(!kg_policy_check(p, dup_san, &rule));
	CHECK_STR(rule, "invalid certificate extensions");
	kg_policy_free(p);
}

static void test_errors(void)
{
	CHECK_STR(compile_error(KG_MATCH_SUBJECT_REGEX, "a(b"),
		  "policy.yaml:7:9: subject_regex: not a POSIX extended regex "
		  "(Unmatched ( or \\(): \"a(b\"");
	CHECK_STR(compile_error(KG_MATCH_SUBJECT_REGEX, "x{2,1}"),
		  "policy.yaml:7:9: subject_regex: not a POSIX extended regex "
		  "(Invalid content of \\{\\}): \"x{2,1}\"");
	CHECK_STR(compile_error(KG_MATCH_FINGERPRINT, "ab:cd"),
		  "policy.yaml:7:9: fingerprint: not a SHA-256 fingerprint (64 hex digits): \"ab:cd\"");
	CHECK_STR(compile_error(KG_MATCH_FINGERPRINT,
				"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0"),
		  "policy.yaml:7:9: fingerprint: not a SHA-256 fingerprint (64 hex digits): "
		  "\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0\"");
	CHECK_STR(compile_error(KG_MATCH_FINGERPRINT,
				"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg"),
		  "policy.yaml:7:9: fingerprint: not a SHA-256 fingerprint (64 hex digits): "
		  "\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg\"");
	CHECK_STR(compile_error(KG_MATCH_FINGERPRINT, "ab\ncd"),
		  "policy.yaml:7:9: fingerprint: not a SHA-256 fingerprint (64 hex digits): "
		  "\"ab\\x0acd\"");
	char long_fp[201], want[300];
	memset(long_fp, 'a', 200);
	long_fp[200] = '\0';
	snprintf(want, sizeof(want), "policy.yaml:7:9: fingerprint: not a SHA-256 fingerprint "
		 "(64 hex digits): \"%.150s...\"", long_fp);
	CHECK_STR(compile_error(KG_MATCH_FINGERPRINT, long_fp), want); /* cut, not overflowed */
	CHECK_STR(compile_error(KG_MATCH_SERIAL, "12G4"),
		  "policy.yaml:7:9: serial: not a serial number (hex digits, ':' allowed): \"12G4\"");
	CHECK_STR(compile_error(KG_MATCH_SERIAL, "0x1F"),
		  "policy.yaml:7:9: serial: not a serial number (hex digits, ':' allowed): \"0x1F\"");
	CHECK_STR(compile_error(KG_MATCH_SERIAL, "::"),
		  "policy.yaml:7:9: serial: not a serial number (hex digits, ':' allowed): \"::\"");
	CHECK_STR(compile_error(KG_MATCH_DNS, "a.*.com"),
		  "policy.yaml:7:9: dns: wildcard only as a leading \"*.\" label: \"a.*.com\"");
	CHECK_STR(compile_error(KG_MATCH_DNS, "foo*.example.com"),
		  "policy.yaml:7:9: dns: wildcard only as a leading \"*.\" label: \"foo*.example.com\"");
	CHECK_STR(compile_error(KG_MATCH_DNS, "*.*.example.com"),
		  "policy.yaml:7:9: dns: wildcard only as a leading \"*.\" label: \"*.*.example.com\"");
	CHECK_STR(compile_error(KG_MATCH_DNS, "*"),
		  "policy.yaml:7:9: dns: wildcard only as a leading \"*.\" label: \"*\"");
	CHECK_STR(compile_error(KG_MATCH_DNS, "*."),
		  "policy.yaml:7:9: dns: not a DNS name (empty label): \"*.\"");
	CHECK_STR(compile_error(KG_MATCH_DNS, "a..example.com"),
		  "policy.yaml:7:9: dns: not a DNS name (empty label): \"a..example.com\"");
	CHECK_STR(compile_error(KG_MATCH_EMAIL, "alice"),
		  "policy.yaml:7:9: email: not an email address (local@domain): \"alice\"");
	CHECK_STR(compile_error(KG_MATCH_EMAIL, "alice@"),
		  "policy.yaml:7:9: email: not an email address (local@domain): \"alice@\"");
	CHECK_STR(compile_error(KG_MATCH_SUBJECT, "alice"),
		  "policy.yaml:7:9: subject: not a distinguished name (TYPE=value,...): \"alice\"");
	CHECK_STR(compile_error(KG_MATCH_SUBJECT, "CN=alice,"),
		  "policy.yaml:7:9: subject: not a distinguished name (TYPE=value,...): \"CN=alice,\"");
	CHECK_STR(compile_error(KG_MATCH_ISSUER, "CN=a,=b"),
		  "policy.yaml:7:9: issuer: not a distinguished name (TYPE=value,...): \"CN=a,=b\"");
	CHECK_STR(compile_error(KG_MATCH_ISSUER, "CN=a\\"),
		  "policy.yaml:7:9: issuer: not a distinguished name (TYPE=value,...): \"CN=a\\\"");
	CHECK_STR(compile_error(KG_MATCH_CN, ""), "policy.yaml:7:9: cn: empty value");
	CHECK_STR(compile_error(KG_MATCH_URI, ""), "policy.yaml:7:9: uri: empty value");
	CHECK_STR(compile_error(KG_MATCH_URI, "spiffe://a/*"), "(compiled)");
	CHECK_STR(compile_error(KG_MATCH_DNS, "*.example.com"), "(compiled)");
}

/* The error names the condition that failed, even late in a list, and a
 * partly compiled policy is released (ASan's leak check watches this). */
static void test_error_position(void)
{
	struct kg_cond a0[] = { cond(KG_MATCH_SUBJECT_REGEX, VALS("^CN=", "OU=x"), 20),
				cond(KG_MATCH_DNS, VALS("ok.example.com"), 21) };
	struct kg_cond a1[] = { cond(KG_MATCH_URI, VALS("spiffe://td/*"), 22),
				cond(KG_MATCH_FINGERPRINT, VALS("00"), 23) };
	struct kg_cond cli = { .what = KG_MATCH_CN, .values = VALS(""),
			       .at = { .file = NULL, .key = "--allow-cn" } };
	struct kg_cond nov = cond(KG_MATCH_CN, NULL, 0, 30);
	struct kg_rule_spec allow[] = { { .conds = a0, .nconds = 2 },
					{ .conds = a1, .nconds = 2 } };
	struct kg_rules rules = { .allow = allow, .nallow = 2 };
	char err[256] = "";

	CHECK(kg_policy_compile(&rules, err, sizeof(err)) == NULL);
	CHECK_STR(err, "policy.yaml:23:9: fingerprint: not a SHA-256 fingerprint (64 hex digits): \"00\"");

	allow[0] = (struct kg_rule_spec){ .conds = &cli, .nconds = 1 };
	CHECK(kg_policy_compile(&rules, err, sizeof(err)) == NULL);
	CHECK_STR(err, "--allow-cn: empty value");

	allow[0] = (struct kg_rule_spec){ .conds = &nov, .nconds = 1 };
	CHECK(kg_policy_compile(&rules, err, sizeof(err)) == NULL);
	CHECK_STR(err, "policy.yaml:30:9: cn: no values");

	/* an empty rule would match everyone: refused, named, where it was written */
	allow[0] = (struct kg_rule_spec){ .at = { "policy.yaml", 31, 5, "allow" } };
	CHECK(kg_policy_compile(&rules, err, sizeof(err)) == NULL);
	CHECK_STR(err, "policy.yaml:31:5: allow: rule allow[0] has no conditions");
	allow[0].name = "ops";
	CHECK(kg_policy_compile(&rules, err, sizeof(err)) == NULL);
	CHECK_STR(err, "policy.yaml:31:5: allow: rule ops has no conditions");
}

/* One compiled policy shared by several workers, as the daemon does. */
struct shared {
	struct kg_policy *p;
	int bad;
};

static void *worker(void *arg)
{
	struct shared *sh = arg;
	const char *rule;

	for (int i = 0; i < 500; i++) {
		if (!kg_policy_check(sh->p, alice, &rule) || kg_policy_check(sh->p, deep, &rule) ||
		    strcmp(rule, "no allow rule matched") != 0)
			__atomic_add_fetch(&sh->bad, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

static void test_threads(void)
{
	char fp[65];
	kg_cert_fingerprint_hex(alice, fp, sizeof(fp));
	struct kg_cond c[] = { cond(KG_MATCH_SUBJECT_REGEX, VALS("^UID=42\\+CN=alice-alt,"), 50),
			       cond(KG_MATCH_URI, VALS("spiffe://prod.example.org/*"), 51),
			       cond(KG_MATCH_FINGERPRINT, VALS(fp), 52),
			       cond(KG_MATCH_ISSUER, VALS("CN=Example Issuing CA,O=Example Inc,C=US"), 53) };
	struct kg_rule_spec r = { .conds = c, .nconds = 4 };
	struct kg_rules rules = { .allow = &r, .nallow = 1 };
	char err[256];
	struct shared sh = { .p = kg_policy_compile(&rules, err, sizeof(err)) };
	pthread_t t[4];

	CHECK(sh.p != NULL);
	if (!sh.p)
		return;
	for (int i = 0; i < 4; i++)
		CHECK(pthread_create(&t[i], NULL, worker, &sh) == 0);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	CHECK(sh.bad == 0);
	kg_policy_free(sh.p);
}

int main(void)
{
	make_certs();
	test_subject();
	test_issuer();
	test_cn();
	test_dns();
	test_uri();
	test_email();
	test_serial();
	test_fingerprint();
	test_spiffe_id();
	test_san_encoding();
	test_threads();
	test_semantics();
	test_errors();
	test_error_position();
	X509_free(alice);
	X509_free(deep);
	X509_free(bare);
	X509_free(zero);
	X509_free(dup_san);
	EVP_PKEY_free(key);
	return T_DONE();
}
