#include "alert.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <string.h>

#include "conn.h"

#define RT_ALERT 21
#define RT_APPDATA 23
#define TAG_LEN 16
#define SEALED_ALERT_LEN (2 + 1 + TAG_LEN) /* level, desc, inner type, tag */

/* Offset of the last complete record in buf, or -1. */
static long last_record(const uint8_t *buf, size_t len)
{
	size_t off = 0;
	long last = -1;

	while (len - off >= KG_TLS_HEADER_LEN) {
		size_t rlen = (size_t)buf[off + 3] << 8 | buf[off + 4];
		if (len - off - KG_TLS_HEADER_LEN < rlen)
			return -1;
		last = (long)off;
		off += KG_TLS_HEADER_LEN + rlen;
	}
	return off == len ? last : -1;
}

static const char *aead_name(int cipher)
{
	switch (cipher) {
	case TLS_CIPHER_AES_GCM_128: return "AES-128-GCM";
	case TLS_CIPHER_AES_GCM_256: return "AES-256-GCM";
	case TLS_CIPHER_CHACHA20_POLY1305: return "ChaCha20-Poly1305";
	default: return NULL;
	}
}

/* RFC 8446 §5.2: AEAD over the inner plaintext with the record header as AAD. */
static int seal(int cipher, const uint8_t *key, const uint8_t iv[12], uint64_t seq,
		const uint8_t hdr[KG_TLS_HEADER_LEN], const uint8_t *pt, int ptlen, uint8_t *out)
{
	EVP_CIPHER *alg = aead_name(cipher) ? EVP_CIPHER_fetch(NULL, aead_name(cipher), NULL) : NULL;
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	uint8_t nonce[12];
	int n, rc = -1;

	memcpy(nonce, iv, 12);
	for (int i = 0; i < 8; i++)
		nonce[11 - i] ^= (uint8_t)(seq >> (8 * i));
	if (!alg || !ctx || EVP_EncryptInit_ex2(ctx, alg, key, nonce, NULL) != 1 ||
	    EVP_EncryptUpdate(ctx, NULL, &n, hdr, KG_TLS_HEADER_LEN) != 1 ||
	    EVP_EncryptUpdate(ctx, out, &n, pt, ptlen) != 1 ||
	    EVP_EncryptFinal_ex(ctx, out + n, &n) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, TAG_LEN, out + ptlen) != 1)
		goto out;
	rc = 0;
out:
	EVP_CIPHER_CTX_free(ctx);
	EVP_CIPHER_free(alg);
	return rc;
}

static int reseal_tls13_alert(struct kg_conn *c, uint8_t *rec, uint8_t desc)
{
	const struct kg_ktls_secrets *s = c->kt ? &c->kt->secrets : NULL;
	int cipher = kg_ktls_cipher_of(c->ssl);
	uint8_t key[32], iv[12], inner[3] = { 2 /* fatal */, desc, RT_ALERT };
	int rc = -1;

	/* The alert was the latest record under our application key. */
	if (!s || !s->have_server || s->tx_records == 0 || cipher < 0)
		return -1;
	if (kg_tls13_key_iv(c->ssl, s->server, s->secret_len, key, kg_ktls_key_len(cipher), iv) == 0)
		rc = seal(cipher, key, iv, s->tx_records - 1, rec, inner, 3, rec + KG_TLS_HEADER_LEN);
	OPENSSL_cleanse(key, sizeof(key));
	OPENSSL_cleanse(iv, sizeof(iv));
	return rc;
}

int kg_alert_rewrite(struct kg_conn *c, uint8_t desc)
{
	char *data;
	long len = BIO_get_mem_data(c->wbio, &data);
	long at = len > 0 ? last_record((uint8_t *)data, (size_t)len) : -1;
	uint8_t *rec = at >= 0 ? (uint8_t *)data + at : NULL;
	size_t rlen = rec ? (size_t)rec[3] << 8 | rec[4] : 0;

	if (!rec)
		return -1;
	if (rec[0] == RT_ALERT && rlen == 2) { /* plaintext (TLS 1.2 handshake) */
		rec[KG_TLS_HEADER_LEN + 1] = desc;
		return 0;
	}
	if (rec[0] == RT_APPDATA && rlen == SEALED_ALERT_LEN && SSL_version(c->ssl) == TLS1_3_VERSION)
		return reseal_tls13_alert(c, rec, desc);
	return -1;
}
