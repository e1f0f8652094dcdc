#include "tlsctx.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

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

static BIO *open_file(const char *flag, const char *path, char *err, size_t errlen)
{
	BIO *bio;

	ERR_clear_error();
	errno = 0;
	bio = BIO_new_file(path, "r");
	if (!bio) /* fopen's errno says it best: "No such file or directory" */
		snprintf(err, errlen, "%s %s: %s", flag, path, errno ? strerror(errno) : ossl_reason());
	return bio;
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

static int check_validity(const char *flag, const char *path, X509 *x, char *err, size_t errlen)
{
	char when[64];

	if (X509_cmp_current_time(X509_get0_notAfter(x)) <= 0) {
		format_time(X509_get0_notAfter(x), when, sizeof(when));
		snprintf(err, errlen, "%s %s: certificate expired (notAfter=%s)", flag, path, when);
		return -1;
	}
	if (X509_cmp_current_time(X509_get0_notBefore(x)) >= 0) {
		format_time(X509_get0_notBefore(x), when, sizeof(when));
		snprintf(err, errlen, "%s %s: certificate not yet valid (notBefore=%s)", flag, path, when);
		return -1;
	}
	return 0;
}

/* Reads every certificate of a PEM file; fails when there is none. */
static STACK_OF(X509) *read_certs(const char *flag, const char *path, char *err, size_t errlen)
{
	STACK_OF(X509) *certs = NULL;
	BIO *bio = open_file(flag, path, err, errlen);
	X509 *x;

	if (!bio)
		return NULL;
	certs = sk_X509_new_null();
	while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
		sk_X509_push(certs, x);
	if (sk_X509_num(certs) == 0) {
		snprintf(err, errlen, "%s %s: no certificate found (%s)", flag, path, ossl_reason());
		goto fail;
	}
	/* EOF after the last PEM block is expected; anything else is garbage. */
	unsigned long e = ERR_peek_last_error();
	if (e && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)) {
		snprintf(err, errlen, "%s %s: certificate %d unreadable: %s", flag, path,
			 sk_X509_num(certs) + 1, ossl_reason());
		goto fail;
	}
	ERR_clear_error();
	BIO_free(bio);
	return certs;
fail:
	sk_X509_pop_free(certs, X509_free);
	BIO_free(bio);
	return NULL;
}

static EVP_PKEY *read_key(const char *path, char *err, size_t errlen)
{
	BIO *bio = open_file("--key", path, err, errlen);
	EVP_PKEY *key;

	if (!bio)
		return NULL;
	key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
	if (!key)
		snprintf(err, errlen, "--key %s: no private key found (%s)", path, ossl_reason());
	BIO_free(bio);
	return key;
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

static int add_identity(SSL_CTX *ctx, const struct kg_identity_files *id, unsigned *types_seen,
			char *err, size_t errlen)
{
	STACK_OF(X509) *chain = read_certs("--cert", id->cert_file, err, errlen);
	EVP_PKEY *key = NULL;
	X509 *leaf;
	int rc = -1;

	if (!chain)
		return -1;
	leaf = sk_X509_value(chain, 0);
	if (check_validity("--cert", id->cert_file, leaf, err, errlen) < 0)
		goto out;
	key = read_key(id->key_file, err, errlen);
	if (!key)
		goto out;
	if (!X509_check_private_key(leaf, key)) {
		ERR_clear_error();
		snprintf(err, errlen, "--key %s: key does not match certificate %s",
			 id->key_file, id->cert_file);
		goto out;
	}
	const char *type = key_type_name(key);
	if (!type) {
		snprintf(err, errlen, "--key %s: unsupported key type (use ECDSA or RSA)", id->key_file);
		goto out;
	}
	unsigned bit = type[0] == 'R' ? 1u : type[0] == 'E' && type[1] == 'C' ? 2u : 4u;
	if (*types_seen & bit) {
		snprintf(err, errlen, "--cert %s: a second %s identity; give at most one per key type",
			 id->cert_file, type);
		goto out;
	}
	*types_seen |= bit;
	/* use_certificate selects the slot for this key type; chain and key follow it. */
	if (SSL_CTX_use_certificate(ctx, leaf) != 1 || SSL_CTX_use_PrivateKey(ctx, key) != 1) {
		snprintf(err, errlen, "--cert %s: rejected by OpenSSL: %s", id->cert_file, ossl_reason());
		goto out;
	}
	for (int i = 1; i < sk_X509_num(chain); i++) {
		if (SSL_CTX_add1_chain_cert(ctx, sk_X509_value(chain, i)) != 1) {
			snprintf(err, errlen, "--cert %s: chain certificate %d rejected: %s",
				 id->cert_file, i + 1, ossl_reason());
			goto out;
		}
	}
	rc = 0;
out:
	EVP_PKEY_free(key);
	sk_X509_pop_free(chain, X509_free);
	return rc;
}

static int load_client_cas(SSL_CTX *ctx, const char *path, char *err, size_t errlen)
{
	X509_STORE *store = SSL_CTX_get_cert_store(ctx);
	STACK_OF(X509_NAME) *names = sk_X509_NAME_new_null();
	STACK_OF(X509) *cas;
	int rc = -1;

	cas = read_certs("--client-ca", path, err, errlen);
	if (!cas) {
		if (strstr(err, "no certificate found"))
			snprintf(err, errlen, "--client-ca %s: no certificates found", path);
		goto out;
	}
	for (int i = 0; i < sk_X509_num(cas); i++) {
		X509 *ca = sk_X509_value(cas, i);
		if (!X509_check_ca(ca)) {
			snprintf(err, errlen, "--client-ca %s: certificate %d is not a CA", path, i + 1);
			goto out;
		}
		X509_STORE_add_cert(store, ca);
		sk_X509_NAME_push(names, X509_NAME_dup(X509_get_subject_name(ca)));
	}
	/* Advertised in CertificateRequest so clients with several certs pick ours. */
	SSL_CTX_set_client_CA_list(ctx, names);
	names = NULL;
	rc = 0;
out:
	sk_X509_NAME_pop_free(names, X509_NAME_free);
	sk_X509_pop_free(cas, X509_free);
	return rc;
}

static int load_crl_file(X509_STORE *store, const char *path, char *err, size_t errlen)
{
	BIO *bio = open_file("--crl", path, err, errlen);
	X509_CRL *crl;
	int n = 0;

	if (!bio)
		return -1;
	while ((crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL)) != NULL) {
		const ASN1_TIME *next = X509_CRL_get0_nextUpdate(crl);
		if (next && X509_cmp_current_time(next) <= 0) {
			char when[64];
			format_time(next, when, sizeof(when));
			snprintf(err, errlen, "--crl %s: CRL %d is stale (nextUpdate=%s)", path, n + 1, when);
			X509_CRL_free(crl);
			BIO_free(bio);
			return -1;
		}
		X509_STORE_add_crl(store, crl);
		X509_CRL_free(crl);
		n++;
	}
	BIO_free(bio);
	if (n == 0) {
		snprintf(err, errlen, "--crl %s: no CRL found (%s)", path, ossl_reason());
		return -1;
	}
	ERR_clear_error();
	return 0;
}

static int load_crls(SSL_CTX *ctx, const struct kg_options *o, char *err, size_t errlen)
{
	X509_STORE *store = SSL_CTX_get_cert_store(ctx);

	for (size_t i = 0; i < o->ncrls; i++)
		if (load_crl_file(store, o->crl_files[i], err, errlen) < 0)
			return -1;
	if (o->ncrls)
		X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
	return 0;
}

static int set_protocol_policy(SSL_CTX *ctx, const struct kg_options *o, char *err, size_t errlen)
{
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
				 SSL_OP_CIPHER_SERVER_PREFERENCE);
	if (SSL_CTX_set_cipher_list(ctx, KG_TLS12_CIPHERS) != 1 ||
	    SSL_CTX_set_ciphersuites(ctx, KG_TLS13_SUITES) != 1 ||
	    SSL_CTX_set1_groups_list(ctx, KG_GROUPS) != 1) {
		snprintf(err, errlen, "TLS policy rejected by OpenSSL: %s", ossl_reason());
		return -1;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	SSL_CTX_set_verify_depth(ctx, (int)o->verify_depth);
	SSL_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
	/* Stateless tickets, one per handshake: a second ticket costs CPU and bytes
	 * that almost no client uses (DESIGN §6). The id context binds tickets to us. */
	SSL_CTX_set_num_tickets(ctx, 1);
	SSL_CTX_set_session_id_context(ctx, session_id_context, sizeof(session_id_context) - 1);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_max_early_data(ctx, 0);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	return 0;
}

SSL_CTX *kg_tlsctx_new(const struct kg_options *o, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	unsigned types_seen = 0;

	if (!ctx) {
		snprintf(err, errlen, "cannot create TLS context: %s", ossl_reason());
		return NULL;
	}
	if (set_protocol_policy(ctx, o, err, errlen) < 0)
		goto fail;
	for (size_t i = 0; i < o->ncerts; i++)
		if (add_identity(ctx, &o->ids[i], &types_seen, err, errlen) < 0)
			goto fail;
	if (load_client_cas(ctx, o->client_ca_file, err, errlen) < 0)
		goto fail;
	if (load_crls(ctx, o, err, errlen) < 0)
		goto fail;
	ERR_clear_error();
	return ctx;
fail:
	SSL_CTX_free(ctx);
	ERR_clear_error();
	return NULL;
}
