/* A 4-way set-associative table: bounded, no deletion chains, and a hit or a
 * miss touches one cache line's worth of entries. The keys are SHA-256
 * values, so their first bytes pick the set well enough. */
#include "verify_cache.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WAYS 4

struct entry {
	uint8_t key[KG_VCACHE_KEY_LEN];
	int64_t not_before, not_after;
	uint64_t used; /* 0: empty; else the cache's clock at the last hit */
};

struct kg_vcache {
	unsigned nsets;
	unsigned count;
	uint64_t clock;
	struct entry e[]; /* nsets * WAYS */
};

struct kg_vcache *kg_vcache_new(unsigned capacity)
{
	unsigned nsets = capacity < WAYS ? 1 : (capacity + WAYS - 1) / WAYS;
	/* calloc: untouched pages of an idle cache cost no memory. */
	struct kg_vcache *v = calloc(1, sizeof(*v) + (size_t)nsets * WAYS * sizeof(struct entry));

	if (v)
		v->nsets = nsets;
	return v;
}

void kg_vcache_free(struct kg_vcache *v)
{
	free(v);
}

static struct entry *set_of(struct kg_vcache *v, const uint8_t *key)
{
	uint64_t h;

	memcpy(&h, key, sizeof(h));
	return &v->e[(h % v->nsets) * WAYS];
}

bool kg_vcache_lookup(struct kg_vcache *v, const uint8_t key[KG_VCACHE_KEY_LEN], int64_t now)
{
	struct entry *s = set_of(v, key);

	for (int i = 0; i < WAYS; i++) {
		if (!s[i].used || memcmp(s[i].key, key, KG_VCACHE_KEY_LEN) != 0)
			continue;
		if (now < s[i].not_before || now >= s[i].not_after) {
			s[i].used = 0;
			v->count--;
			return false;
		}
		s[i].used = ++v->clock;
		return true;
	}
	return false;
}

void kg_vcache_insert(struct kg_vcache *v, const uint8_t key[KG_VCACHE_KEY_LEN],
		      int64_t not_before, int64_t not_after)
{
	struct entry *s = set_of(v, key), *slot = NULL;

	for (int i = 0; i < WAYS && !slot; i++)
		if (s[i].used && memcmp(s[i].key, key, KG_VCACHE_KEY_LEN) == 0)
			slot = &s[i];
	for (int i = 0; i < WAYS && !slot; i++)
		if (!s[i].used)
			slot = &s[i];
	if (!slot) {
		slot = &s[0];
		for (int i = 1; i < WAYS; i++)
			if (s[i].used < slot->used)
				slot = &s[i];
	}
	if (!slot->used)
		v->count++;
	memcpy(slot->key, key, KG_VCACHE_KEY_LEN);
	slot->not_before = not_before;
	slot->not_after = not_after;
	slot->used = ++v->clock;
}

unsigned kg_vcache_count(const struct kg_vcache *v)
{
	return v->count;
}

static int add_cert(EVP_MD_CTX *md, X509 *x)
{
	unsigned char d[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	if (!X509_digest(x, EVP_sha256(), d, &n))
		return -1;
	return EVP_DigestUpdate(md, d, n) ? 0 : -1;
}

int kg_vcache_chain_key(X509 *leaf, STACK_OF(X509) *sent, uint8_t out[KG_VCACHE_KEY_LEN])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned int n = 0;
	int rc = -1;

	if (!md || !leaf || !EVP_DigestInit_ex(md, EVP_sha256(), NULL) || add_cert(md, leaf) < 0)
		goto out;
	/* OpenSSL passes the whole Certificate message, leaf included. */
	for (int i = 0; i < sk_X509_num(sent); i++) {
		X509 *x = sk_X509_value(sent, i);
		if (x != leaf && add_cert(md, x) < 0)
			goto out;
	}
	if (EVP_DigestFinal_ex(md, out, &n) && n == KG_VCACHE_KEY_LEN)
		rc = 0;
out:
	EVP_MD_CTX_free(md);
	return rc;
}

static bool to_unix(const ASN1_TIME *t, int64_t *out)
{
	struct tm tm;

	if (!t || !ASN1_TIME_to_tm(t, &tm))
		return false;
	*out = (int64_t)timegm(&tm);
	return true;
}

bool kg_vcache_chain_window(STACK_OF(X509) *chain, int64_t *not_before, int64_t *not_after)
{
	int64_t nb = INT64_MIN, na = INT64_MAX, t;

	if (sk_X509_num(chain) <= 0)
		return false;
	for (int i = 0; i < sk_X509_num(chain); i++) {
		X509 *x = sk_X509_value(chain, i);
		if (!to_unix(X509_get0_notBefore(x), &t))
			return false;
		nb = t > nb ? t : nb;
		if (!to_unix(X509_get0_notAfter(x), &t))
			return false;
		na = t < na ? t : na;
	}
	*not_before = nb;
	*not_after = na;
	return true;
}

int64_t kg_vcache_crls_limit(STACK_OF(X509_CRL) *crls)
{
	int64_t limit = INT64_MAX, t;

	for (int i = 0; i < sk_X509_CRL_num(crls); i++) {
		const ASN1_TIME *next = X509_CRL_get0_nextUpdate(sk_X509_CRL_value(crls, i));
		if (next && to_unix(next, &t) && t < limit)
			limit = t;
	}
	return limit;
}
