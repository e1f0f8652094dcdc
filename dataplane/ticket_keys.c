#include "ticket_keys.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

/* Key epochs are slots of CLOCK_MONOTONIC, interval long: every rotation
 * happens at a multiple of the interval whoever asks first. */
struct ticket_key {
	bool valid;
	unsigned char name[16];
	unsigned char aes[32];  /* AES-256-CBC */
	unsigned char hmac[32]; /* HMAC-SHA256 */
};

static struct {
	pthread_mutex_t lock;
	unsigned interval_ms;
	unsigned long long epoch;      /* of cur */
	struct ticket_key cur, prev;
} keys = { .lock = PTHREAD_MUTEX_INITIALIZER };

static unsigned long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000 + (unsigned long long)ts.tv_nsec / 1000000;
}

static void retire(struct ticket_key *k)
{
	OPENSSL_cleanse(k, sizeof(*k));
}

static int fresh(struct ticket_key *k)
{
	if (RAND_priv_bytes(k->name, sizeof(k->name)) != 1 ||
	    RAND_priv_bytes(k->aes, sizeof(k->aes)) != 1 ||
	    RAND_priv_bytes(k->hmac, sizeof(k->hmac)) != 1) {
		retire(k);
		return -1;
	}
	k->valid = true;
	return 0;
}

/* Brings the keys to the current epoch; called with the lock held. */
static int rotate(unsigned interval_ms)
{
	unsigned long long e;

	if (!interval_ms)
		interval_ms = 3600 * 1000;
	e = now_ms() / interval_ms;
	if (interval_ms != keys.interval_ms) { /* a reload changed it: keep the keys */
		keys.interval_ms = interval_ms;
		keys.epoch = e;
	}
	if (keys.cur.valid && e == keys.epoch)
		return 0;
	retire(&keys.prev);
	if (keys.cur.valid && e == keys.epoch + 1)
		keys.prev = keys.cur;
	retire(&keys.cur);
	keys.epoch = e;
	return fresh(&keys.cur);
}

static int use_key(const struct ticket_key *k, unsigned char *iv, EVP_CIPHER_CTX *cctx,
		   EVP_MAC_CTX *hctx, int enc)
{
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->hmac, sizeof(k->hmac)),
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
		OSSL_PARAM_construct_end(),
	};

	if (EVP_MAC_CTX_set_params(hctx, params) != 1)
		return -1;
	return (enc ? EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv)
		    : EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv)) == 1 ? 0 : -1;
}

int kg_ticket_key_cb(SSL *ssl, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
		     EVP_MAC_CTX *hctx, int enc, unsigned interval_ms)
{
	struct ticket_key k = { 0 };
	int rc = 0;

	pthread_mutex_lock(&keys.lock);
	if (rotate(interval_ms) == 0) {
		if (enc || memcmp(name, keys.cur.name, sizeof(keys.cur.name)) == 0) {
			k = keys.cur;
			rc = 1;
		} else if (keys.prev.valid && memcmp(name, keys.prev.name, sizeof(keys.prev.name)) == 0) {
			k = keys.prev;
			rc = 2; /* good, but renew it under the current key */
		}
	}
	pthread_mutex_unlock(&keys.lock);
	if (!rc)
		return enc ? -1 : 0; /* unknown key: a full handshake */
	if (enc) {
		memcpy(name, k.name, sizeof(k.name));
		if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(EVP_aes_256_cbc())) != 1)
			rc = -1;
	}
	if (rc > 0 && use_key(&k, iv, cctx, hctx, enc) < 0)
		rc = -1;
	OPENSSL_cleanse(&k, sizeof(k));
	return rc;
}

void kg_ticket_keys_free(void)
{
	pthread_mutex_lock(&keys.lock);
	retire(&keys.cur);
	retire(&keys.prev);
	pthread_mutex_unlock(&keys.lock);
}
