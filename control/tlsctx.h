/* TLS building blocks for one configuration generation: server identities
 * (PEM, encrypted PEM, PKCS#12), client trust (CAs + CRLs) and the server
 * SSL_CTX of a listener for one identity set and one auth block. Errors are
 * one line that names where the value was written (flag or FILE:LINE:COL). */
#ifndef KG_TLSCTX_H
#define KG_TLSCTX_H
#include <openssl/ssl.h>
#include <stdbool.h>

#include "config.h"

struct kg_server_id {
	X509 *leaf;
	STACK_OF(X509) *chain; /* intermediates, leaf excluded */
	EVP_PKEY *key;
	const char *type;      /* "ECDSA", "RSA", "Ed25519" */
	const struct kg_identity_spec *spec;
};

/* Loads and checks (validity, key match, key type) one identity. */
int kg_tls_load_identity(const struct kg_identity_spec *s, struct kg_server_id *out, char *err,
			 size_t errlen);
void kg_tls_identity_free(struct kg_server_id *id);

/* Who a site trusts: its client CAs and CRLs, parsed once per generation. */
struct kg_client_trust {
	X509_STORE *store;          /* CAs + CRLs + CRL flags; shared by the site's contexts */
	STACK_OF(X509) *cas;
	STACK_OF(X509_NAME) *names; /* for CertificateRequest */
	STACK_OF(X509_CRL) *crls;
	const char **ca_files, **crl_files; /* which file each CA / CRL came from */
	unsigned char digest[32]; /* SHA-256 over the CAs' and CRLs' SHA-256s: a
				   * resumed session must find the same trust */
};
int kg_tls_trust_new(const struct kg_auth_spec *a, struct kg_client_trust *t, char *err,
		     size_t errlen);
void kg_tls_trust_free(struct kg_client_trust *t);
/* Forgets files parsed during the last build (call when a build ends). */
void kg_tls_build_cache_clear(void);
/* Once at start-up: every provider algorithm into OpenSSL's method store. */
void kg_tls_load_algorithms(void);
/* Whether one of the trust's CRLs revokes x (a binary search per CRL). */
bool kg_tls_trust_revokes(const struct kg_client_trust *t, X509 *x);

/* A server context: the listener's protocol settings, these identities (at
 * most one per key type), this auth block's client verification. */
SSL_CTX *kg_tls_ctx_new(const struct kg_listener_spec *l, const struct kg_auth_spec *a,
			const struct kg_client_trust *t, const struct kg_server_id *const *ids,
			size_t nids, char *err, size_t errlen);

/* TLS towards a site's backends (backend_tls): one client context per site
 * and generation, with our client identity and the backends' trust. */
struct kg_upstream {
	SSL_CTX *ctx;
	const struct kg_backend_tls *spec;
	struct kg_server_id id;       /* our client certificate; id.leaf NULL: none */
	struct kg_client_trust trust; /* ca + crl for the backend's chain */
};
int kg_tls_upstream_new(const struct kg_backend_tls *b, struct kg_upstream *u, char *err,
			size_t errlen);
void kg_tls_upstream_free(struct kg_upstream *u);
#endif
