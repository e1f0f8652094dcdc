/* Session keys for kernel TLS: captured from OpenSSL (TLS 1.3 traffic secrets
 * via the keylog callback, TLS 1.2 key block from the master secret), with the
 * record sequence numbers OpenSSL already used in each direction. */
#ifndef KG_KTLS_KEYS_H
#define KG_KTLS_KEYS_H
#include <linux/tls.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct kg_ktls_secrets {
	uint8_t server[EVP_MAX_MD_SIZE], client[EVP_MAX_MD_SIZE];
	uint8_t secret_len;
	bool have_server, have_client;
	uint64_t tx_records, rx_records; /* records under the current keys */
};

union kg_crypto_info {
	struct tls_crypto_info info;
	struct tls12_crypto_info_aes_gcm_128 aes128;
	struct tls12_crypto_info_aes_gcm_256 aes256;
	struct tls12_crypto_info_chacha20_poly1305 chacha;
};

struct kg_ktls_params {
	union kg_crypto_info tx, rx;
	socklen_t len;
	bool tls13;
};

/* Installs the keylog callback on a context whose connections may hand off. */
void kg_ktls_prepare_ctx(SSL_CTX *ctx);
/* Starts counting records on one connection (msg callback). */
void kg_ktls_watch(SSL *ssl, struct kg_ktls_secrets *s);
/* The counting itself, for a connection that has its own msg callback. */
void kg_ktls_count_record(SSL *ssl, int write_p, int content_type);
/* Stops it: the secrets struct is about to be freed while the SSL lives on. */
void kg_ktls_unwatch(SSL *ssl);
/* The handshake is done: later client records use the application keys. */
void kg_ktls_handshake_done(SSL *ssl);

/* The kernel cipher for the negotiated suite, or -1 (not offloadable). */
int kg_ktls_cipher_of(const SSL *ssl);
/* Fills tx/rx; 0 or -1 with a reason. Zeroize params with OPENSSL_cleanse. */
int kg_ktls_derive(SSL *ssl, const struct kg_ktls_secrets *s, struct kg_ktls_params *out,
		   char *why, size_t whylen);
/* Traffic key and static IV of a TLS 1.3 traffic secret (RFC 8446 §7.3). */
int kg_tls13_key_iv(SSL *ssl, const uint8_t *secret, size_t secret_len, uint8_t *key,
		    size_t key_len, uint8_t iv[12]);
size_t kg_ktls_key_len(int cipher);
/* HKDF-Expand-Label(secret, label, "", len) with digest md ("SHA256", ...). */
int kg_tls13_expand_label(const char *md, const uint8_t *secret, size_t secret_len,
			  const char *label, uint8_t *out, size_t len);
/* The kernel's crypto_info for one direction; returns its size. */
socklen_t kg_ktls_fill_info(union kg_crypto_info *ci, int cipher, bool tls13,
			    const uint8_t *key, const uint8_t *iv, uint64_t seq);
/* The same without an SSL object (after the handoff): md is the suite's hash. */
int kg_tls13_key_iv_md(const char *md, const uint8_t *secret, size_t secret_len, uint8_t *key,
		       size_t key_len, uint8_t iv[12]);
/* KeyUpdate: secret = HKDF-Expand-Label(secret, "traffic upd", "", len), in place
 * (kg_tls13_next_secret in ktls_rekey.h is the same into a separate buffer). */
int kg_tls13_step_secret(const char *md, uint8_t *secret, size_t secret_len);
const char *kg_tls13_digest_name(const SSL *ssl);
#endif
