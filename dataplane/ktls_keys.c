#include "ktls_keys.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/kdf.h>
#include <openssl/tls1.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static int secrets_index = -1;
static pthread_once_t index_once = PTHREAD_ONCE_INIT;

static void make_index(void)
{
	secrets_index = SSL_get_ex_new_index(0, "kg_ktls_secrets", NULL, NULL, NULL);
}

static struct kg_ktls_secrets *secrets_of(const SSL *ssl)
{
	return secrets_index < 0 ? NULL : SSL_get_ex_data(ssl, secrets_index);
}

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9') return ch - '0';
	if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
	return -1;
}

static size_t parse_hex(const char *hex, uint8_t *out, size_t cap)
{
	size_t n = 0;

	while (hex[0] && hex[1] && n < cap) {
		int hi = hexval(hex[0]), lo = hexval(hex[1]);
		if (hi < 0 || lo < 0)
			break;
		out[n++] = (uint8_t)(hi << 4 | lo);
		hex += 2;
	}
	return n;
}

/* "LABEL <client_random> <secret>": keep only the application traffic secrets,
 * in memory, per connection; they are never written anywhere. */
static void keylog_cb(const SSL *ssl, const char *line)
{
	struct kg_ktls_secrets *s = secrets_of(ssl);
	const char *secret;
	bool server;

	if (!s)
		return;
	if (strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24) == 0)
		server = true;
	else if (strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24) == 0)
		server = false;
	else
		return;
	secret = strchr(line + 24, ' ');
	if (!secret)
		return;
	uint8_t *dst = server ? s->server : s->client;
	s->secret_len = (uint8_t)parse_hex(secret + 1, dst, EVP_MAX_MD_SIZE);
	if (server) {
		s->have_server = true;
		s->tx_records = 0; /* our writes switch to this key now */
	} else {
		s->have_client = true;
	}
}

/* Every record header in each direction: after the handshake, how many
 * records OpenSSL read or wrote under the application keys. */
static void msg_cb(int write_p, int version, int content_type, const void *buf, size_t len,
		   SSL *ssl, void *arg)
{
	kg_ktls_count_record(ssl, write_p, content_type);
}

void kg_ktls_count_record(SSL *ssl, int write_p, int content_type)
{
	struct kg_ktls_secrets *s = secrets_of(ssl);

	if (!s || content_type != SSL3_RT_HEADER)
		return;
	if (write_p)
		s->tx_records++;
	else
		s->rx_records++;
}

void kg_ktls_prepare_ctx(SSL_CTX *ctx)
{
	pthread_once(&index_once, make_index);
	SSL_CTX_set_keylog_callback(ctx, keylog_cb);
}

void kg_ktls_watch(SSL *ssl, struct kg_ktls_secrets *s)
{
	pthread_once(&index_once, make_index);
	SSL_set_ex_data(ssl, secrets_index, s);
	SSL_set_msg_callback(ssl, msg_cb);
}

void kg_ktls_unwatch(SSL *ssl)
{
	if (!ssl || secrets_index < 0)
		return;
	SSL_set_msg_callback(ssl, NULL);
	SSL_set_ex_data(ssl, secrets_index, NULL);
}

void kg_ktls_handshake_done(SSL *ssl)
{
	struct kg_ktls_secrets *s = secrets_of(ssl);

	if (!s)
		return;
	/* The client's Finished was the last record read (read-ahead is off).
	 * TLS 1.3: it was under the handshake keys, so no application record yet;
	 * our tickets were counted from SERVER_TRAFFIC_SECRET_0 on.
	 * TLS 1.2: Finished is record 0 under the new keys in each direction, and
	 * nothing follows it in either a full or an abbreviated handshake. */
	if (SSL_version(ssl) == TLS1_3_VERSION) {
		s->rx_records = 0;
		/* A client (towards a backend) wrote its Finished under the
		 * handshake keys, after logging the traffic secrets. */
		if (!SSL_is_server(ssl))
			s->tx_records = 0;
	} else {
		s->rx_records = 1;
		s->tx_records = 1;
	}
}

int kg_ktls_cipher_of(const SSL *ssl)
{
	const SSL_CIPHER *c = SSL_get_current_cipher(ssl);

	switch (c ? SSL_CIPHER_get_cipher_nid(c) : NID_undef) {
	case NID_aes_128_gcm:
		return TLS_CIPHER_AES_GCM_128;
	case NID_aes_256_gcm:
		return TLS_CIPHER_AES_GCM_256;
	case NID_chacha20_poly1305:
		return TLS_CIPHER_CHACHA20_POLY1305;
	default:
		return -1;
	}
}

static const char *digest_name(const SSL *ssl)
{
	const EVP_MD *md = SSL_CIPHER_get_handshake_digest(SSL_get_current_cipher(ssl));
	return md ? EVP_MD_get0_name(md) : NULL;
}

/* HKDF-Expand-Label(secret, label, "", len) from RFC 8446 §7.1. */
int kg_tls13_expand_label(const char *md, const uint8_t *secret, size_t secret_len,
			  const char *label, uint8_t *out, size_t len)
{
	EVP_KDF *kdf = md ? EVP_KDF_fetch(NULL, OSSL_KDF_NAME_TLS1_3_KDF, NULL) : NULL;
	EVP_KDF_CTX *kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY, rc = -1;
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
		OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)md, 0),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret, secret_len),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PREFIX, "tls13 ", 6),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_LABEL, (void *)label, strlen(label)),
		OSSL_PARAM_construct_end(),
	};

	if (kctx && EVP_KDF_derive(kctx, out, len, params) == 1)
		rc = 0;
	EVP_KDF_CTX_free(kctx);
	EVP_KDF_free(kdf);
	return rc;
}

static int tls13_expand(const SSL *ssl, const uint8_t *secret, size_t secret_len,
			const char *label, uint8_t *out, size_t len)
{
	return kg_tls13_expand_label(digest_name(ssl), secret, secret_len, label, out, len);
}

const char *kg_tls13_digest_name(const SSL *ssl)
{
	return digest_name(ssl);
}

int kg_tls13_key_iv_md(const char *md, const uint8_t *secret, size_t secret_len, uint8_t *key,
		       size_t key_len, uint8_t iv[12])
{
	if (kg_tls13_expand_label(md, secret, secret_len, "key", key, key_len) < 0 ||
	    kg_tls13_expand_label(md, secret, secret_len, "iv", iv, 12) < 0)
		return -1;
	return 0;
}

int kg_tls13_step_secret(const char *md, uint8_t *secret, size_t secret_len)
{
	uint8_t next[EVP_MAX_MD_SIZE];
	int rc = kg_tls13_expand_label(md, secret, secret_len, "traffic upd", next, secret_len);

	if (rc == 0)
		memcpy(secret, next, secret_len);
	OPENSSL_cleanse(next, sizeof(next));
	return rc;
}

/* TLS 1.2 key block: PRF(master, "key expansion", server_random + client_random). */
static int tls12_key_block(SSL *ssl, uint8_t *out, size_t len)
{
	uint8_t master[SSL_MAX_MASTER_KEY_LENGTH], seed[2 * SSL3_RANDOM_SIZE];
	size_t mlen = SSL_SESSION_get_master_key(SSL_get_session(ssl), master, sizeof(master));
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, OSSL_KDF_NAME_TLS1_PRF, NULL);
	EVP_KDF_CTX *kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	int rc = -1;

	SSL_get_server_random(ssl, seed, SSL3_RANDOM_SIZE);
	SSL_get_client_random(ssl, seed + SSL3_RANDOM_SIZE, SSL3_RANDOM_SIZE);
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)digest_name(ssl), 0),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SECRET, master, mlen),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED, "key expansion", 13),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED, seed, sizeof(seed)),
		OSSL_PARAM_construct_end(),
	};
	if (kctx && mlen && digest_name(ssl) && EVP_KDF_derive(kctx, out, len, params) == 1)
		rc = 0;
	EVP_KDF_CTX_free(kctx);
	EVP_KDF_free(kdf);
	OPENSSL_cleanse(master, sizeof(master));
	return rc;
}

static void put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

/* key, and iv = the 12-byte static nonce (TLS 1.3, ChaCha) or 4-byte salt (1.2 GCM). */
socklen_t kg_ktls_fill_info(union kg_crypto_info *ci, int cipher, bool tls13,
			    const uint8_t *key, const uint8_t *iv, uint64_t seq)
{
	uint16_t version = tls13 ? TLS_1_3_VERSION : TLS_1_2_VERSION;
	uint8_t seq_be[8];

	put_be64(seq_be, seq);
	memset(ci, 0, sizeof(*ci));
	ci->info.version = version;
	ci->info.cipher_type = (uint16_t)cipher;
#define KG_FILL_GCM(f, keylen)                                                    \
	do {                                                                      \
		memcpy(ci->f.key, key, keylen);                                   \
		memcpy(ci->f.salt, iv, 4);                                        \
		/* 1.3: rest of the static nonce; 1.2: explicit nonce = seq */   \
		memcpy(ci->f.iv, tls13 ? iv + 4 : seq_be, 8);                     \
		memcpy(ci->f.rec_seq, seq_be, 8);                                 \
		return sizeof(ci->f);                                             \
	} while (0)
	switch (cipher) {
	case TLS_CIPHER_AES_GCM_128:
		KG_FILL_GCM(aes128, 16);
	case TLS_CIPHER_AES_GCM_256:
		KG_FILL_GCM(aes256, 32);
	default:
		memcpy(ci->chacha.key, key, 32);
		memcpy(ci->chacha.iv, iv, 12);
		memcpy(ci->chacha.rec_seq, seq_be, 8);
		return sizeof(ci->chacha);
	}
#undef KG_FILL_GCM
}

size_t kg_ktls_key_len(int cipher)
{
	return cipher == TLS_CIPHER_AES_GCM_128 ? 16 : 32;
}

int kg_tls13_key_iv(SSL *ssl, const uint8_t *secret, size_t secret_len, uint8_t *key,
		    size_t key_len, uint8_t iv[12])
{
	if (tls13_expand(ssl, secret, secret_len, "key", key, key_len) < 0 ||
	    tls13_expand(ssl, secret, secret_len, "iv", iv, 12) < 0)
		return -1;
	return 0;
}

static int derive_tls13(SSL *ssl, int cipher, const struct kg_ktls_secrets *s,
			struct kg_ktls_params *out, char *why, size_t whylen)
{
	uint8_t key[32], iv[12];
	size_t klen = kg_ktls_key_len(cipher);
	int rc = -1;

	if (!s->have_server || !s->have_client) {
		snprintf(why, whylen, "traffic secrets not captured");
		return -1;
	}
	/* We write with our own side's secret: server towards clients, client
	 * towards backends. */
	const uint8_t *ours = SSL_is_server(ssl) ? s->server : s->client;
	const uint8_t *theirs = SSL_is_server(ssl) ? s->client : s->server;

	if (kg_tls13_key_iv(ssl, ours, s->secret_len, key, klen, iv) < 0)
		goto fail;
	out->len = kg_ktls_fill_info(&out->tx, cipher, true, key, iv, s->tx_records);
	if (kg_tls13_key_iv(ssl, theirs, s->secret_len, key, klen, iv) < 0)
		goto fail;
	kg_ktls_fill_info(&out->rx, cipher, true, key, iv, s->rx_records);
	rc = 0;
fail:
	if (rc < 0)
		snprintf(why, whylen, "TLS 1.3 key derivation failed");
	OPENSSL_cleanse(key, sizeof(key));
	OPENSSL_cleanse(iv, sizeof(iv));
	return rc;
}

static int derive_tls12(SSL *ssl, int cipher, const struct kg_ktls_secrets *s,
			struct kg_ktls_params *out, char *why, size_t whylen)
{
	size_t klen = kg_ktls_key_len(cipher), ivlen = cipher == TLS_CIPHER_CHACHA20_POLY1305 ? 12 : 4;
	uint8_t block[2 * 32 + 2 * 12];

	/* AEAD suites have no MAC keys: client key, server key, client iv, server iv. */
	if (tls12_key_block(ssl, block, 2 * klen + 2 * ivlen) < 0) {
		snprintf(why, whylen, "TLS 1.2 key block derivation failed");
		return -1;
	}
	bool srv = SSL_is_server(ssl);
	size_t tx = srv ? 1 : 0, rx = srv ? 0 : 1; /* 0: client's key/iv, 1: server's */

	out->len = kg_ktls_fill_info(&out->tx, cipher, false, block + tx * klen,
				     block + 2 * klen + tx * ivlen, s->tx_records);
	kg_ktls_fill_info(&out->rx, cipher, false, block + rx * klen,
			  block + 2 * klen + rx * ivlen, s->rx_records);
	OPENSSL_cleanse(block, sizeof(block));
	return 0;
}

int kg_ktls_derive(SSL *ssl, const struct kg_ktls_secrets *s, struct kg_ktls_params *out,
		   char *why, size_t whylen)
{
	int cipher = kg_ktls_cipher_of(ssl);

	memset(out, 0, sizeof(*out));
	if (cipher < 0) {
		snprintf(why, whylen, "cipher %s has no kernel TLS support",
			 SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)));
		return -1;
	}
	out->tls13 = SSL_version(ssl) == TLS1_3_VERSION;
	if (out->tls13)
		return derive_tls13(ssl, cipher, s, out, why, whylen);
	if (SSL_version(ssl) == TLS1_2_VERSION)
		return derive_tls12(ssl, cipher, s, out, why, whylen);
	snprintf(why, whylen, "protocol %s has no kernel TLS support", SSL_get_version(ssl));
	return -1;
}
