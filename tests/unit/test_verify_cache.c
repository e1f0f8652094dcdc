/* The verification cache: windows (a chain that expired since it was
 * verified is not served), bounds and eviction, and the chain key. */
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdint.h>

#include "test.h"
#include "verify_cache.h"

static void key_of(uint8_t *k, unsigned n)
{
	memset(k, 0, KG_VCACHE_KEY_LEN);
	memcpy(k + 8, &n, sizeof(n)); /* first 8 bytes 0: all in set 0 */
}

static void spread_key(uint8_t *k, unsigned n)
{
	memset(k, 0xab, KG_VCACHE_KEY_LEN);
	memcpy(k, &n, sizeof(n));
}

static void test_window(void)
{
	struct kg_vcache *v = kg_vcache_new(KG_VCACHE_ENTRIES);
	uint8_t k[KG_VCACHE_KEY_LEN], other[KG_VCACHE_KEY_LEN];

	spread_key(k, 1);
	spread_key(other, 2);
	CHECK(!kg_vcache_lookup(v, k, 1000));
	kg_vcache_insert(v, k, 100, 2000);
	CHECK(kg_vcache_lookup(v, k, 1000));
	CHECK(kg_vcache_lookup(v, k, 1999));
	CHECK(!kg_vcache_lookup(v, other, 1000));
	CHECK(!kg_vcache_lookup(v, k, 99)); /* clock went back before notBefore */
	CHECK(kg_vcache_count(v) == 0);     /* and the entry is gone */
	kg_vcache_insert(v, k, 100, 2000);
	/* Expired in between: the first notAfter (or CRL nextUpdate) passed. */
	CHECK(!kg_vcache_lookup(v, k, 2000));
	CHECK(kg_vcache_count(v) == 0);
	CHECK(!kg_vcache_lookup(v, k, 1000)); /* dropped, not just hidden */
	kg_vcache_free(v);
}

static void test_bounded_lru(void)
{
	struct kg_vcache *v = kg_vcache_new(4); /* one set of four */
	uint8_t k[6][KG_VCACHE_KEY_LEN];

	for (unsigned i = 0; i < 6; i++)
		key_of(k[i], i);
	for (unsigned i = 0; i < 4; i++)
		kg_vcache_insert(v, k[i], 0, 100);
	CHECK(kg_vcache_count(v) == 4);
	CHECK(kg_vcache_lookup(v, k[0], 1)); /* k[1] is now the least recently used */
	kg_vcache_insert(v, k[4], 0, 100);
	CHECK(kg_vcache_count(v) == 4);
	CHECK(kg_vcache_lookup(v, k[0], 1));
	CHECK(!kg_vcache_lookup(v, k[1], 1));
	CHECK(kg_vcache_lookup(v, k[4], 1));
	kg_vcache_insert(v, k[4], 0, 200); /* re-insert updates, no duplicate */
	CHECK(kg_vcache_count(v) == 4);
	CHECK(kg_vcache_lookup(v, k[4], 150));
	kg_vcache_free(v);

	v = kg_vcache_new(KG_VCACHE_ENTRIES);
	uint8_t s[KG_VCACHE_KEY_LEN];
	for (unsigned i = 0; i < 3 * KG_VCACHE_ENTRIES; i++) {
		spread_key(s, i);
		kg_vcache_insert(v, s, 0, 100);
	}
	CHECK(kg_vcache_count(v) <= KG_VCACHE_ENTRIES);
	CHECK(kg_vcache_count(v) > KG_VCACHE_ENTRIES / 2);
	CHECK(kg_vcache_lookup(v, s, 1)); /* the newest stays */
	kg_vcache_free(v);
}

static X509 *cert(EVP_PKEY *key, const char *cn, int64_t nb, int64_t na)
{
	X509 *x = X509_new();
	X509_NAME *name = X509_NAME_new();

	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_set_subject_name(x, name);
	X509_set_issuer_name(x, name);
	ASN1_TIME_set(X509_getm_notBefore(x), (time_t)nb);
	ASN1_TIME_set(X509_getm_notAfter(x), (time_t)na);
	X509_set_pubkey(x, key);
	X509_sign(x, key, EVP_sha256());
	X509_NAME_free(name);
	return x;
}

static void test_chain(void)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *leaf = cert(key, "leaf", 1700000000, 1800000000);
	X509 *inter = cert(key, "inter", 1600000000, 1750000000);
	X509 *root = cert(key, "root", 1500000000, 1900000000);
	STACK_OF(X509) *sent = sk_X509_new_null(), *only_inter = sk_X509_new_null();
	STACK_OF(X509) *chain = sk_X509_new_null();
	uint8_t a[KG_VCACHE_KEY_LEN], b[KG_VCACHE_KEY_LEN], c[KG_VCACHE_KEY_LEN];
	int64_t nb, na;

	sk_X509_push(sent, leaf);
	sk_X509_push(sent, inter);
	sk_X509_push(only_inter, inter);
	CHECK(kg_vcache_chain_key(leaf, sent, a) == 0);
	CHECK(kg_vcache_chain_key(leaf, only_inter, b) == 0);
	CHECK(memcmp(a, b, sizeof(a)) == 0); /* the leaf counts once */
	CHECK(kg_vcache_chain_key(leaf, NULL, c) == 0);
	CHECK(memcmp(a, c, sizeof(a)) != 0); /* another intermediate, another key */
	CHECK(kg_vcache_chain_key(inter, NULL, c) == 0);
	CHECK(memcmp(b, c, sizeof(a)) != 0);

	sk_X509_push(chain, leaf);
	sk_X509_push(chain, inter);
	sk_X509_push(chain, root);
	CHECK(kg_vcache_chain_window(chain, &nb, &na));
	CHECK(nb == 1700000000 && na == 1750000000); /* the intermediate expires first */
	CHECK(!kg_vcache_chain_window(NULL, &nb, &na));

	STACK_OF(X509_CRL) *crls = sk_X509_CRL_new_null();
	CHECK(kg_vcache_crls_limit(crls) == INT64_MAX);
	X509_CRL *crl = X509_CRL_new();
	ASN1_TIME *t = ASN1_TIME_set(NULL, 1740000000);
	X509_CRL_set1_nextUpdate(crl, t);
	sk_X509_CRL_push(crls, crl);
	sk_X509_CRL_push(crls, X509_CRL_new()); /* no nextUpdate: no limit */
	CHECK(kg_vcache_crls_limit(crls) == 1740000000);
	ASN1_TIME_free(t);
	sk_X509_CRL_pop_free(crls, X509_CRL_free);

	sk_X509_free(sent);
	sk_X509_free(only_inter);
	sk_X509_free(chain);
	X509_free(leaf);
	X509_free(inter);
	X509_free(root);
	EVP_PKEY_free(key);
}

int main(void)
{
	test_window();
	test_bounded_lru();
	test_chain();
	return T_DONE();
}
