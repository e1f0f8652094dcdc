#include "tlsctx.h"

#include "certtext.h"
#include "log.h"
#include "overlay.h"

#include <errno.h>
#include <openssl/pkcs12.h>
#include <stdarg.h>
#include <stdlib.h>
#include <openssl/decoder.h>
#include <openssl/encoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define KG_TLS12_CIPHERS                                                   \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"       \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"       \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define KG_TLS13_SUITES \
	"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#define KG_GROUPS "X25519:P-256:P-384"

static const unsigned char session_id_context[] = "ktlsgate";

/* The last OpenSSL error as text, or the errno text when OpenSSL had none. */
static const char *ossl_reason(void)
{
	static __thread char buf[256];
	unsigned long e = ERR_peek_last_error();

	if (!e)
		return errno ? strerror(errno) : "unknown error";
	if (ERR_GET_LIB(e) == ERR_LIB_SYS)
		return strerror(ERR_GET_REASON(e));
	ERR_error_string_n(e, buf, sizeof(buf));
	const char *r = ERR_reason_error_string(e);
	return r ? r : buf;
}

static BIO *open_file(const struct kg_file *f, char *err, size_t errlen)
{
	char where[600];
	BIO *bio;

	ERR_clear_error();
	errno = 0;
	bio = kg_overlay_open(f->path);
	if (bio)
		return bio;
	bio = BIO_new_file(f->path, "r");
	if (!bio) { /* fopen's errno says it best: "No such file or directory" */
		kg_file_format(f, where, sizeof(where));
		snprintf(err, errlen, "%s: %s", where, errno ? strerror(errno) : ossl_reason());
	}
	return bio;
}

/* "WHERE PATH: reason" (command line) or "FILE:L:C: key: PATH: reason" (YAML). */
static void file_error(const struct kg_file *f, char *err, size_t errlen, const char *fmt, ...)
{
	char where[600], why[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	kg_file_format(f, where, sizeof(where));
	snprintf(err, errlen, "%s: %s", where, why);
}

static void format_time(const ASN1_TIME *t, char *buf, size_t cap)
{
	BIO *mem = BIO_new(BIO_s_mem());
	int n;

	ASN1_TIME_print(mem, t);
	n = BIO_read(mem, buf, (int)cap - 1);
	buf[n > 0 ? n : 0] = '\0';
	BIO_free(mem);
}

static int check_validity(const struct kg_file *f, X509 *x, char *err, size_t errlen)
{
	char when[64];

	if (X509_cmp_current_time(X509_get0_notAfter(x)) <= 0) {
		format_time(X509_get0_notAfter(x), when, sizeof(when));
		file_error(f, err, errlen, "certificate expired (notAfter=%s)", when);
		return -1;
	}
	if (X509_cmp_current_time(X509_get0_notBefore(x)) >= 0) {
		format_time(X509_get0_notBefore(x), when, sizeof(when));
		file_error(f, err, errlen, "certificate not yet valid (notBefore=%s)", when);
		return -1;
	}
	return 0;
}

/* Reads every certificate of a PEM file; fails when there is none. */
static STACK_OF(X509) *read_certs(const struct kg_file *f, char *err, size_t errlen)
{
	STACK_OF(X509) *certs = NULL;
	BIO *bio = open_file(f, err, errlen);
	X509 *x;

	if (!bio)
		return NULL;
	certs = sk_X509_new_null();
	if (!certs)
		goto oom;
	while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
		if (!sk_X509_push(certs, x)) {
			X509_free(x);
			goto oom;
		}
	}
	if (sk_X509_num(certs) == 0) {
		file_error(f, err, errlen, "no certificate found (%s)", ossl_reason());
		goto fail;
	}
	/* EOF after the last PEM block is expected; anything else is garbage. */
	unsigned long e = ERR_peek_last_error();
	if (e && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)) {
		file_error(f, err, errlen, "certificate %d unreadable: %s", sk_X509_num(certs) + 1,
			   ossl_reason());
		goto fail;
	}
	ERR_clear_error();
	BIO_free(bio);
	return certs;
oom:
	file_error(f, err, errlen, "out of memory");
fail:
	sk_X509_pop_free(certs, X509_free);
	BIO_free(bio);
	return NULL;
}

/* The first line of the passphrase file, without its newline. */
static int read_passphrase(const struct kg_file *f, char *buf, size_t cap, char *err,
			   size_t errlen)
{
	BIO *bio = open_file(f, err, errlen);
	int n;

	if (!bio)
		return -1;
	n = BIO_gets(bio, buf, (int)cap);
	BIO_free(bio);
	if (n <= 0) {
		file_error(f, err, errlen, "empty passphrase file");
		return -1;
	}
	buf[strcspn(buf, "\r\n")] = '\0';
	return 0;
}

static int pem_pass_cb(char *buf, int size, int rwflag, void *u)
{
	size_t n = strlen(u);

	if (n >= (size_t)size)
		return -1;
	memcpy(buf, u, n);
	return (int)n;
}

/* Whether a PEM key file is encrypted (PKCS#8 or the legacy Proc-Type form):
 * OpenSSL's error for a wrong passphrase is a cipher error, not a hint. */
static bool pem_is_encrypted(const struct kg_file *f)
{
	char line[256];
	bool found = false;
	BIO *bio = kg_overlay_open(f->path);

	if (!bio)
		bio = BIO_new_file(f->path, "r");
	while (bio && !found && BIO_gets(bio, line, sizeof(line)) > 0)
		found = strstr(line, "BEGIN ENCRYPTED PRIVATE KEY") || strstr(line, "Proc-Type: 4,ENCRYPTED");
	BIO_free(bio);
	return found;
}

static EVP_PKEY *read_key(const struct kg_identity_spec *s, const char *pass, char *err,
			  size_t errlen)
{
	BIO *bio = open_file(&s->key, err, errlen);
	EVP_PKEY *key;

	if (!bio)
		return NULL;
	/* Without a passphrase file an encrypted key must fail, not prompt. */
	key = PEM_read_bio_PrivateKey(bio, NULL, pem_pass_cb, (void *)(pass ? pass : ""));
	if (!key) {
		if (pem_is_encrypted(&s->key))
			file_error(&s->key, err, errlen, pass ? "wrong passphrase (from %s)" :
				   "key is encrypted: give passphrase_file%s", pass ? s->passphrase_file.path : "");
		else
			file_error(&s->key, err, errlen, "no private key found (%s)", ossl_reason());
	}
	BIO_free(bio);
	return key;
}

static int load_pkcs12(const struct kg_identity_spec *s, const char *pass,
		       struct kg_server_id *out, char *err, size_t errlen)
{
	BIO *bio = open_file(&s->pkcs12, err, errlen);
	PKCS12 *p12 = bio ? d2i_PKCS12_bio(bio, NULL) : NULL;
	STACK_OF(X509) *cas = NULL;

	BIO_free(bio);
	if (!bio)
		return -1;
	if (!p12) {
		file_error(&s->pkcs12, err, errlen, "not a PKCS#12 file (%s)", ossl_reason());
		return -1;
	}
	if (!PKCS12_parse(p12, pass ? pass : "", &out->key, &out->leaf, &cas)) {
		file_error(&s->pkcs12, err, errlen, "cannot open: %s", pass ? "wrong passphrase" :
			   "encrypted: give passphrase_file");
		PKCS12_free(p12);
		return -1;
	}
	PKCS12_free(p12);
	out->chain = cas ? cas : sk_X509_new_null();
	if (!out->chain) {
		file_error(&s->pkcs12, err, errlen, "out of memory");
		return -1;
	}
	if (!out->leaf || !out->key) {
		file_error(&s->pkcs12, err, errlen, "bundle lacks a certificate or a private key");
		return -1;
	}
	return 0;
}

static int load_pem_identity(const struct kg_identity_spec *s, const char *pass,
			     struct kg_server_id *out, char *err, size_t errlen)
{
	STACK_OF(X509) *chain = read_certs(&s->cert, err, errlen);

	if (!chain)
		return -1;
	out->leaf = sk_X509_shift(chain);
	out->chain = chain;
	out->key = read_key(s, pass, err, errlen);
	return out->key ? 0 : -1;
}

static const char *key_type_name(const EVP_PKEY *key)
{
	if (EVP_PKEY_is_a(key, "RSA") || EVP_PKEY_is_a(key, "RSA-PSS"))
		return "RSA";
	if (EVP_PKEY_is_a(key, "EC"))
		return "ECDSA";
	if (EVP_PKEY_is_a(key, "ED25519"))
		return "Ed25519";
	return NULL;
}

/* The chain must climb: each certificate signs the one before it. A chain
 * in the wrong order, or with a stranger in it, fails clients in ways that
 * are hard to read on their side. */
static int check_chain_order(const struct kg_file *where, const struct kg_server_id *id,
			     char *err, size_t errlen)
{
	X509 *below = id->leaf;

	for (int i = 0; i < sk_X509_num(id->chain); i++) {
		X509 *x = sk_X509_value(id->chain, i);
		if (X509_check_issued(x, below) != X509_V_OK) {
			file_error(where, err, errlen,
				   "chain certificate %d did not issue certificate %d (wrong order, or not part of this chain)",
				   i + 2, i + 1);
			return -1;
		}
		below = x;
	}
	return 0;
}

/* A secret that other users can read is a mistake worth one line, not a
 * refusal: the operator may have reasons (a read-only image, a test box). */
static void warn_if_world_readable(const struct kg_file *f)
{
	struct stat st;

	if (!f->path || kg_overlay_get(f->path, NULL) || stat(f->path, &st) < 0 ||
	    !S_ISREG(st.st_mode) || !(st.st_mode & S_IROTH))
		return;
	kg_log_msg(KG_LOG_WARN, "secret_readable",
		   "file=%s mode=%04o: a private key or passphrase readable by every user (chmod o-r)",
		   f->path, (unsigned)(st.st_mode & 07777));
}

int kg_tls_load_identity(const struct kg_identity_spec *s, struct kg_server_id *out, char *err,
			 size_t errlen)
{
	const struct kg_file *where = s->pkcs12.path ? &s->pkcs12 : &s->cert;
	char pass[1024] = "";
	int rc = -1;

	memset(out, 0, sizeof(*out));
	warn_if_world_readable(s->pkcs12.path ? &s->pkcs12 : &s->key);
	warn_if_world_readable(&s->passphrase_file);
	if (s->passphrase_file.path &&
	    read_passphrase(&s->passphrase_file, pass, sizeof(pass), err, errlen) < 0)
		return -1;
	rc = s->pkcs12.path ? load_pkcs12(s, s->passphrase_file.path ? pass : NULL, out, err, errlen)
			    : load_pem_identity(s, s->passphrase_file.path ? pass : NULL, out, err, errlen);
	OPENSSL_cleanse(pass, sizeof(pass));
	if (rc < 0)
		goto fail;
	rc = -1;
	if (check_validity(where, out->leaf, err, errlen) < 0)
		goto fail;
	if (!X509_check_private_key(out->leaf, out->key)) {
		ERR_clear_error();
		file_error(s->pkcs12.path ? &s->pkcs12 : &s->key, err, errlen,
			   "key does not match certificate %s", where->path);
		goto fail;
	}
	if (check_chain_order(where, out, err, errlen) < 0)
		goto fail;
	out->type = key_type_name(out->key);
	if (!out->type) {
		file_error(s->pkcs12.path ? &s->pkcs12 : &s->key, err, errlen,
			   "unsupported key type (use ECDSA or RSA)");
		goto fail;
	}
	out->spec = s;
	ERR_clear_error();
	return 0;
fail:
	kg_tls_identity_free(out);
	ERR_clear_error();
	return -1;
}

void kg_tls_identity_free(struct kg_server_id *id)
{
	X509_free(id->leaf);
	EVP_PKEY_free(id->key);
	sk_X509_pop_free(id->chain, X509_free);
	memset(id, 0, sizeof(*id));
}

/* use_certificate selects the slot for the key type; chain and key follow it. */
static int add_identity(SSL_CTX *ctx, const struct kg_server_id *id, char *err, size_t errlen)
{
	const struct kg_file *where = id->spec->pkcs12.path ? &id->spec->pkcs12 : &id->spec->cert;

	if (SSL_CTX_use_certificate(ctx, id->leaf) != 1 ||
	    SSL_CTX_use_PrivateKey(ctx, id->key) != 1) {
		file_error(where, err, errlen, "rejected by OpenSSL: %s", ossl_reason());
		return -1;
	}
	for (int i = 0; i < sk_X509_num(id->chain); i++) {
		if (SSL_CTX_add1_chain_cert(ctx, sk_X509_value(id->chain, i)) != 1) {
			file_error(where, err, errlen, "chain certificate %d rejected: %s", i + 2,
				   ossl_reason());
			return -1;
		}
	}
	return 0;
}

/* One identity per key type: the client's signature algorithms pick. */
static int add_identities(SSL_CTX *ctx, const struct kg_server_id *const *ids, size_t n,
			  char *err, size_t errlen)
{
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < i; j++) {
			if (strcmp(ids[i]->type, ids[j]->type) != 0)
				continue;
			file_error(ids[i]->spec->pkcs12.path ? &ids[i]->spec->pkcs12 : &ids[i]->spec->cert,
				   err, errlen, "a second %s identity for the same names; give at most one per key type",
				   ids[i]->type);
			return -1;
		}
		if (add_identity(ctx, ids[i], err, errlen) < 0)
			return -1;
	}
	return 0;
}

/* Remembers that item n came from path (the config's string, which lives as
 * long as the generation). */
static bool record_file(const char ***files, int n, const char *path)
{
	const char **grown = realloc(*files, sizeof(**files) * (size_t)(n + 1));

	if (!grown)
		return false;
	grown[n] = path;
	*files = grown;
	return true;
}

/* The trust keeps its own reference in cas and a copy of the name. */
static bool push_ca(struct kg_client_trust *t, X509 *ca)
{
	X509_NAME *name = X509_NAME_dup(X509_get_subject_name(ca));

	if (!name || !sk_X509_NAME_push(t->names, name)) {
		X509_NAME_free(name);
		return false;
	}
	if (!sk_X509_push(t->cas, ca))
		return false;
	X509_up_ref(ca);
	return true;
}

static int add_client_cas(struct kg_client_trust *t, const struct kg_file *f, char *err,
			  size_t errlen)
{
	STACK_OF(X509) *cas = read_certs(f, err, errlen);
	int rc = -1;

	if (!cas) {
		if (strstr(err, "no certificate found"))
			file_error(f, err, errlen, "no certificates found");
		return -1;
	}
	for (int i = 0; i < sk_X509_num(cas); i++) {
		X509 *ca = sk_X509_value(cas, i);
		if (!X509_check_ca(ca)) {
			file_error(f, err, errlen, "certificate %d is not a CA", i + 1);
			goto out;
		}
		/* A CA silently missing would refuse its clients as unknown_ca. */
		if (!record_file(&t->ca_files, sk_X509_num(t->cas), f->path) ||
		    !X509_STORE_add_cert(t->store, ca) || !push_ca(t, ca)) {
			file_error(f, err, errlen, "out of memory");
			goto out;
		}
	}
	rc = 0;
out:
	sk_X509_pop_free(cas, X509_free);
	return rc;
}

/* The CA among ours that issued crl, checked by signature; NULL if none. */
static X509 *crl_issuer(const struct kg_client_trust *t, X509_CRL *crl)
{
	for (int i = 0; i < sk_X509_num(t->cas); i++) {
		X509 *ca = sk_X509_value(t->cas, i);
		if (X509_NAME_cmp(X509_get_subject_name(ca), X509_CRL_get_issuer(crl)) == 0 &&
		    X509_CRL_verify(crl, X509_get0_pubkey(ca)) == 1)
			return ca;
	}
	ERR_clear_error();
	return NULL;
}

static bool issuer_is_ours(const struct kg_client_trust *t, X509_CRL *crl)
{
	for (int i = 0; i < sk_X509_num(t->cas); i++)
		if (X509_NAME_cmp(X509_get_subject_name(sk_X509_value(t->cas, i)),
				  X509_CRL_get_issuer(crl)) == 0)
			return true;
	return false;
}

/* A CRL whose issuer is one of our CAs must carry that CA's signature; one
 * for an intermediate that clients send is checked by OpenSSL per handshake. */
static int check_crl(const struct kg_client_trust *t, const struct kg_file *f, int n,
		     X509_CRL *crl, char *err, size_t errlen)
{
	const ASN1_TIME *next = X509_CRL_get0_nextUpdate(crl);
	char when[64];

	if (next && X509_cmp_current_time(next) <= 0) {
		format_time(next, when, sizeof(when));
		file_error(f, err, errlen, "CRL %d is stale (nextUpdate=%s)", n, when);
		return -1;
	}
	if (issuer_is_ours(t, crl) && !crl_issuer(t, crl)) {
		file_error(f, err, errlen, "CRL %d is not signed by its CA (bad signature)", n);
		return -1;
	}
	return 0;
}

/* CRL files parsed during one generation build, by path: sites that share
 * a CRL (as per-SNI sites inheriting the listener's do) parse it once. */
struct crl_cache_entry {
	char *path;
	STACK_OF(X509_CRL) *crls;
	struct crl_cache_entry *next;
};

static struct crl_cache_entry *crl_cache;

void kg_tls_build_cache_clear(void)
{
	while (crl_cache) {
		struct crl_cache_entry *e = crl_cache;
		crl_cache = e->next;
		sk_X509_CRL_pop_free(e->crls, X509_CRL_free);
		free(e->path);
		free(e);
	}
}

static STACK_OF(X509_CRL) *parse_crl_file(const struct kg_file *f, char *err, size_t errlen)
{
	BIO *bio = open_file(f, err, errlen);
	STACK_OF(X509_CRL) *crls;
	X509_CRL *crl;

	if (!bio)
		return NULL;
	crls = sk_X509_CRL_new_null();
	while (crls && (crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL)) != NULL) {
		if (!sk_X509_CRL_push(crls, crl)) {
			X509_CRL_free(crl);
			break;
		}
	}
	BIO_free(bio);
	if (crls && sk_X509_CRL_num(crls) == 0) {
		file_error(f, err, errlen, "no CRL found (%s)", ossl_reason());
		sk_X509_CRL_free(crls);
		return NULL;
	}
	/* As for certificates: only the end of the file may stop the loop. A
	 * CRL lost to a failed allocation would let its revoked clients in. */
	unsigned long e = ERR_peek_last_error();
	if (!crls || (e && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE))) {
		file_error(f, err, errlen, "CRL %d unreadable: %s", crls ? sk_X509_CRL_num(crls) + 1 : 1,
			   crls ? ossl_reason() : "out of memory");
		sk_X509_CRL_pop_free(crls, X509_CRL_free);
		return NULL;
	}
	ERR_clear_error();
	return crls;
}

static STACK_OF(X509_CRL) *cached_crls(const struct kg_file *f, char *err, size_t errlen)
{
	struct crl_cache_entry *e;

	for (e = crl_cache; e; e = e->next)
		if (strcmp(e->path, f->path) == 0)
			return e->crls;
	e = calloc(1, sizeof(*e));
	if (!e || !(e->path = strdup(f->path)) || !(e->crls = parse_crl_file(f, err, errlen))) {
		if (e)
			free(e->path);
		free(e);
		if (!err[0])
			snprintf(err, errlen, "out of memory");
		return NULL;
	}
	e->next = crl_cache;
	crl_cache = e;
	return e->crls;
}

static int add_crl_file(struct kg_client_trust *t, const struct kg_file *f, char *err,
			size_t errlen)
{
	STACK_OF(X509_CRL) *crls;

	err[0] = '\0';
	crls = cached_crls(f, err, errlen);
	if (!crls)
		return -1;
	for (int i = 0; i < sk_X509_CRL_num(crls); i++) {
		X509_CRL *crl = sk_X509_CRL_value(crls, i);
		if (check_crl(t, f, i + 1, crl, err, errlen) < 0 ||
		    !record_file(&t->crl_files, sk_X509_CRL_num(t->crls), f->path))
			return -1;
		/* The store indexes CRLs by issuer and sorts revoked serials once,
		 * so a lookup is a binary search, not a scan of the list. */
		if (!X509_STORE_add_crl(t->store, crl) || !sk_X509_CRL_push(t->crls, crl)) {
			file_error(f, err, errlen, "out of memory");
			return -1;
		}
		X509_CRL_up_ref(crl);
	}
	return 0;
}

static bool ca_has_crl(const struct kg_client_trust *t, X509 *ca)
{
	for (int i = 0; i < sk_X509_CRL_num(t->crls); i++)
		if (X509_NAME_cmp(X509_CRL_get_issuer(sk_X509_CRL_value(t->crls, i)),
				  X509_get_subject_name(ca)) == 0)
			return true;
	return false;
}

/* chain mode: every CA we trust must come with its CRL, or the operator says
 * that a missing one is acceptable. */
static int check_crl_coverage(const struct kg_client_trust *t, const struct kg_auth_spec *a,
			      char *err, size_t errlen)
{
	char subject[256];

	if (!a->ncrls || a->crl_check != KG_CRL_CHAIN || a->crl_missing_allow)
		return 0;
	for (int i = 0; i < sk_X509_num(t->cas); i++) {
		X509 *ca = sk_X509_value(t->cas, i);
		if (ca_has_crl(t, ca))
			continue;
		kg_name_text(X509_get_subject_name(ca), subject, sizeof(subject));
		file_error(&a->crls[0], err, errlen,
			   "no CRL for client CA \"%s\" (crl_check: chain); add its CRL or set crl_missing: allow",
			   subject);
		return -1;
	}
	return 0;
}

bool kg_tls_trust_revokes(const struct kg_client_trust *t, X509 *x)
{
	X509_REVOKED *rev;

	for (int i = 0; i < sk_X509_CRL_num(t->crls); i++) {
		X509_CRL *crl = sk_X509_CRL_value(t->crls, i);
		if (X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_issuer_name(x)) == 0 &&
		    X509_CRL_get0_by_cert(crl, &rev, x) == 1)
			return true;
	}
	return false;
}

/* The trust's fingerprint: any change to its CAs, its CRLs or how a chain
 * is verified makes the site's sessions from before it unresumable. A
 * session keeps only the client's leaf, so a new CRL that revokes an
 * intermediate (or a stricter crl_check, purpose or depth) could not be
 * checked against it: such clients go through a full handshake once. */
static int digest_trust(struct kg_client_trust *t, const struct kg_auth_spec *a)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char one[EVP_MAX_MD_SIZE];
	unsigned char how[] = { a->crl_check, a->crl_missing_allow, a->require_client_eku,
				(unsigned char)a->verify_depth };
	unsigned n;
	int ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) &&
		 EVP_DigestUpdate(md, how, sizeof(how));

	for (int i = 0; ok && i < sk_X509_num(t->cas); i++)
		ok = X509_digest(sk_X509_value(t->cas, i), EVP_sha256(), one, &n) &&
		     EVP_DigestUpdate(md, one, n);
	for (int i = 0; ok && i < sk_X509_CRL_num(t->crls); i++)
		ok = X509_CRL_digest(sk_X509_CRL_value(t->crls, i), EVP_sha256(), one, &n) &&
		     EVP_DigestUpdate(md, one, n);
	ok = ok && EVP_DigestFinal_ex(md, t->digest, NULL);
	EVP_MD_CTX_free(md);
	return ok ? 0 : -1;
}

void kg_tls_trust_free(struct kg_client_trust *t)
{
	X509_STORE_free(t->store);
	sk_X509_pop_free(t->cas, X509_free);
	sk_X509_NAME_pop_free(t->names, X509_NAME_free);
	sk_X509_CRL_pop_free(t->crls, X509_CRL_free);
	free(t->ca_files);
	free(t->crl_files);
	memset(t, 0, sizeof(*t));
}

int kg_tls_trust_new(const struct kg_auth_spec *a, struct kg_client_trust *t, char *err,
		     size_t errlen)
{
	memset(t, 0, sizeof(*t));
	t->store = X509_STORE_new();
	t->cas = sk_X509_new_null();
	t->names = sk_X509_NAME_new_null();
	t->crls = sk_X509_CRL_new_null();
	if (!t->store || !t->cas || !t->names || !t->crls) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < a->nclient_cas; i++)
		if (add_client_cas(t, &a->client_cas[i], err, errlen) < 0)
			goto fail;
	for (size_t i = 0; i < a->ncrls; i++)
		if (add_crl_file(t, &a->crls[i], err, errlen) < 0)
			goto fail;
	if (check_crl_coverage(t, a, err, errlen) < 0)
		goto fail;
	if (digest_trust(t, a) < 0) {
		snprintf(err, errlen, "cannot digest the client CAs and CRLs: %s", ossl_reason());
		goto fail;
	}
	if (a->ncrls)
		X509_STORE_set_flags(t->store, X509_V_FLAG_CRL_CHECK |
				     (a->crl_check == KG_CRL_CHAIN ? X509_V_FLAG_CRL_CHECK_ALL : 0));
	return 0;
fail:
	kg_tls_trust_free(t);
	return -1;
}

static int set_protocol_policy(SSL_CTX *ctx, const struct kg_listener_spec *l, char *err,
			       size_t errlen)
{
	char where[512];

	SSL_CTX_set_min_proto_version(ctx, l->min_version ? l->min_version : TLS1_2_VERSION);
	SSL_CTX_set_max_proto_version(ctx, l->max_version ? l->max_version : TLS1_3_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
				 SSL_OP_CIPHER_SERVER_PREFERENCE);
	kg_where_format(&l->at, where, sizeof(where));
	if (SSL_CTX_set_cipher_list(ctx, l->ciphers ? l->ciphers : KG_TLS12_CIPHERS) != 1) {
		snprintf(err, errlen, "%s: ciphers: no usable TLS 1.2 cipher (%s)", where, ossl_reason());
		return -1;
	}
	if (SSL_CTX_set_ciphersuites(ctx, l->ciphersuites ? l->ciphersuites : KG_TLS13_SUITES) != 1) {
		snprintf(err, errlen, "%s: ciphersuites: not a TLS 1.3 suite list (%s)", where, ossl_reason());
		return -1;
	}
	if (SSL_CTX_set1_groups_list(ctx, l->groups ? l->groups : KG_GROUPS) != 1) {
		snprintf(err, errlen, "%s: groups: unknown group in \"%s\"", where, l->groups);
		return -1;
	}
	/* One ticket per handshake: a second costs CPU and bytes that almost no
	 * client uses (DESIGN §6). The id context binds sessions to us. How they
	 * resume (the session cache or stateless tickets) is the dataplane's
	 * choice (kg_hs_prepare_ctx); without it, no cache. */
	SSL_CTX_set_num_tickets(ctx, 1);
	SSL_CTX_set_session_id_context(ctx, session_id_context, sizeof(session_id_context) - 1);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_max_early_data(ctx, 0);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	return 0;
}

static int verify_mode(enum kg_client_auth a)
{
	switch (a) {
	case KG_AUTH_NONE:
		return SSL_VERIFY_NONE;
	case KG_AUTH_OPTIONAL:
		return SSL_VERIFY_PEER; /* a certificate, when sent, must verify */
	case KG_AUTH_REQUIRED:
		break;
	}
	return SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
}

static void set_client_auth(SSL_CTX *ctx, const struct kg_auth_spec *a,
			    const struct kg_client_trust *t)
{
	SSL_CTX_set_verify(ctx, verify_mode(a->client_auth), NULL);
	SSL_CTX_set_verify_depth(ctx, (int)a->verify_depth);
	/* OpenSSL checks purpose sslclient on client chains unless told otherwise. */
	SSL_CTX_set_purpose(ctx, a->require_client_eku ? X509_PURPOSE_SSL_CLIENT : X509_PURPOSE_ANY);
	SSL_CTX_set1_cert_store(ctx, t->store);
	/* Advertised in CertificateRequest so clients with several certs pick ours. */
	SSL_CTX_set_client_CA_list(ctx, SSL_dup_CA_list(t->names));
}

SSL_CTX *kg_tls_ctx_new(const struct kg_listener_spec *l, const struct kg_auth_spec *a,
			const struct kg_client_trust *t, const struct kg_server_id *const *ids,
			size_t nids, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (!ctx) {
		snprintf(err, errlen, "cannot create TLS context: %s", ossl_reason());
		return NULL;
	}
	if (set_protocol_policy(ctx, l, err, errlen) < 0 ||
	    add_identities(ctx, ids, nids, err, errlen) < 0)
		goto fail;
	set_client_auth(ctx, a, t);
	ERR_clear_error();
	return ctx;
fail:
	SSL_CTX_free(ctx);
	ERR_clear_error();
	return NULL;
}

/* The backend's certificate must chain to ca, carry verify_name (checked per
 * connection, SSL_set1_host) and, with crl, not be revoked (leaf only: a
 * backend PKI seldom publishes CRLs for its intermediates). */
static int upstream_trust(const struct kg_backend_tls *b, struct kg_client_trust *t, char *err,
			  size_t errlen)
{
	struct kg_auth_spec a;

	kg_auth_defaults(&a);
	a.client_cas = b->cas;
	a.nclient_cas = b->ncas;
	a.crls = b->crls;
	a.ncrls = b->ncrls;
	a.crl_check = KG_CRL_LEAF;
	return kg_tls_trust_new(&a, t, err, errlen);
}

static int upstream_policy(SSL_CTX *ctx, const struct kg_backend_tls *b, char *err, size_t errlen)
{
	char where[512];

	kg_where_format(&b->at, where, sizeof(where));
	SSL_CTX_set_min_proto_version(ctx, b->min_version ? b->min_version : TLS1_2_VERSION);
	SSL_CTX_set_max_proto_version(ctx, b->max_version ? b->max_version : TLS1_3_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	if (SSL_CTX_set_cipher_list(ctx, b->ciphers ? b->ciphers : KG_TLS12_CIPHERS) != 1) {
		snprintf(err, errlen, "%s: ciphers: no usable TLS 1.2 cipher (%s)", where, ossl_reason());
		return -1;
	}
	if (SSL_CTX_set_ciphersuites(ctx, b->ciphersuites ? b->ciphersuites : KG_TLS13_SUITES) != 1) {
		snprintf(err, errlen, "%s: ciphersuites: not a TLS 1.3 suite list (%s)", where,
			 ossl_reason());
		return -1;
	}
	SSL_CTX_set1_groups_list(ctx, KG_GROUPS);
	/* Sessions are kept by the dataplane (per worker and backend), not here. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	return 0;
}

int kg_tls_upstream_new(const struct kg_backend_tls *b, struct kg_upstream *u, char *err,
			size_t errlen)
{
	memset(u, 0, sizeof(*u));
	u->spec = b;
	if ((b->id.cert.path || b->id.pkcs12.path) &&
	    kg_tls_load_identity(&b->id, &u->id, err, errlen) < 0)
		return -1;
	if (upstream_trust(b, &u->trust, err, errlen) < 0)
		goto fail;
	u->ctx = SSL_CTX_new(TLS_client_method());
	if (!u->ctx) {
		snprintf(err, errlen, "cannot create TLS context: %s", ossl_reason());
		goto fail;
	}
	if (upstream_policy(u->ctx, b, err, errlen) < 0 ||
	    (u->id.leaf && add_identity(u->ctx, &u->id, err, errlen) < 0))
		goto fail;
	SSL_CTX_set_verify(u->ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_verify_depth(u->ctx, 4);
	SSL_CTX_set_purpose(u->ctx, X509_PURPOSE_SSL_SERVER);
	SSL_CTX_set1_cert_store(u->ctx, u->trust.store);
	ERR_clear_error();
	return 0;
fail:
	kg_tls_upstream_free(u);
	ERR_clear_error();
	return -1;
}

void kg_tls_upstream_free(struct kg_upstream *u)
{
	SSL_CTX_free(u->ctx);
	kg_tls_trust_free(&u->trust);
	kg_tls_identity_free(&u->id);
	memset(u, 0, sizeof(*u));
}

/* OpenSSL 3.0 asks a provider for an operation's algorithms once: if an
 * allocation fails while it builds them, the missing ones stay missing (a
 * later fetch of TLS13-KDF fails "unsupported" forever, and so does every
 * handshake). Building every operation's whole table here, while memory is
 * plentiful, leaves nothing for a later failure to lose. */
#define KG_NOOP_FOR(type) \
	static void load_##type(type *method, void *arg) \
	{ \
		(void)method; \
		(void)arg; \
	}
KG_NOOP_FOR(EVP_MD)
KG_NOOP_FOR(EVP_CIPHER)
KG_NOOP_FOR(EVP_KDF)
KG_NOOP_FOR(EVP_MAC)
KG_NOOP_FOR(EVP_RAND)
KG_NOOP_FOR(EVP_KEYMGMT)
KG_NOOP_FOR(EVP_KEYEXCH)
KG_NOOP_FOR(EVP_SIGNATURE)
KG_NOOP_FOR(EVP_ASYM_CIPHER)
KG_NOOP_FOR(EVP_KEM)
KG_NOOP_FOR(OSSL_DECODER)
KG_NOOP_FOR(OSSL_ENCODER)

void kg_tls_load_algorithms(void)
{
	EVP_MD_do_all_provided(NULL, load_EVP_MD, NULL);
	EVP_CIPHER_do_all_provided(NULL, load_EVP_CIPHER, NULL);
	EVP_KDF_do_all_provided(NULL, load_EVP_KDF, NULL);
	EVP_MAC_do_all_provided(NULL, load_EVP_MAC, NULL);
	EVP_RAND_do_all_provided(NULL, load_EVP_RAND, NULL);
	EVP_KEYMGMT_do_all_provided(NULL, load_EVP_KEYMGMT, NULL);
	EVP_KEYEXCH_do_all_provided(NULL, load_EVP_KEYEXCH, NULL);
	EVP_SIGNATURE_do_all_provided(NULL, load_EVP_SIGNATURE, NULL);
	EVP_ASYM_CIPHER_do_all_provided(NULL, load_EVP_ASYM_CIPHER, NULL);
	EVP_KEM_do_all_provided(NULL, load_EVP_KEM, NULL);
	OSSL_DECODER_do_all_provided(NULL, load_OSSL_DECODER, NULL);
	OSSL_ENCODER_do_all_provided(NULL, load_OSSL_ENCODER, NULL);
}
