/* Verdicts of client chains that verified, so that a returning client skips
 * chain building and CRL lookups (DESIGN §6). A cache belongs to one worker
 * (no locks) and to one site of one generation: a reload, a CA/CRL commit or
 * a policy change makes a new generation and so an empty cache. An entry
 * lives until the earliest notAfter of the chain (or the earliest CRL
 * nextUpdate of the site): after that the client is verified in full again.
 * Only successes are stored: a refusal always goes through OpenSSL, so it
 * keeps its exact alert and log reason. The policy is not cached. */
#ifndef KG_VERIFY_CACHE_H
#define KG_VERIFY_CACHE_H
#include <openssl/x509.h>
#include <stdbool.h>
#include <stdint.h>

#define KG_VCACHE_ENTRIES 4096 /* per site, per worker; about 230 KiB when full */
#define KG_VCACHE_KEY_LEN 32   /* SHA-256 */

struct kg_vcache;

/* capacity is rounded up to a multiple of the associativity (4). */
struct kg_vcache *kg_vcache_new(unsigned capacity);
void kg_vcache_free(struct kg_vcache *v);

/* Whether key verified and now is inside its [not_before, not_after) window.
 * An entry found outside its window is dropped. */
bool kg_vcache_lookup(struct kg_vcache *v, const uint8_t key[KG_VCACHE_KEY_LEN], int64_t now);
/* Remembers a verified chain; evicts the least recently used entry of the
 * key's set when it is full. */
void kg_vcache_insert(struct kg_vcache *v, const uint8_t key[KG_VCACHE_KEY_LEN],
		      int64_t not_before, int64_t not_after);
unsigned kg_vcache_count(const struct kg_vcache *v);

/* The key of a presented chain: SHA-256 over the SHA-256 of each
 * certificate's DER, the leaf first, then the others in the order sent.
 * -1 when a digest fails (then the chain is simply not cached). */
int kg_vcache_chain_key(X509 *leaf, STACK_OF(X509) *sent, uint8_t out[KG_VCACHE_KEY_LEN]);
/* The window in which every certificate of chain is valid: the latest
 * notBefore and the earliest notAfter (Unix seconds). false if a time can't
 * be read. */
bool kg_vcache_chain_window(STACK_OF(X509) *chain, int64_t *not_before, int64_t *not_after);
/* The earliest nextUpdate of crls, or INT64_MAX when none has one. */
int64_t kg_vcache_crls_limit(STACK_OF(X509_CRL) *crls);
#endif
