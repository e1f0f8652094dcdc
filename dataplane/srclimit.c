/* Per-source connection counts: a chained hash table under one mutex. It is
 * taken once per accept and once per close, next to a ~1.5 ms handshake, so
 * contention is not where the time goes; entries exist only while a source
 * has live connections, so memory is bounded by the connection limit. */
#include "srclimit.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define KG_SRC_BUCKETS 4096

struct src_entry {
	struct kg_src_key key;
	unsigned count;
	struct src_entry *next;
};

static struct {
	pthread_mutex_t lock;
	unsigned max;
	unsigned nsources;
	uint64_t seed;
	struct src_entry *buckets[KG_SRC_BUCKETS];
} tbl = { .lock = PTHREAD_MUTEX_INITIALIZER };

void kg_srclimit_configure(unsigned max_per_source)
{
	pthread_mutex_lock(&tbl.lock);
	tbl.max = max_per_source;
	/* Per-process seed: a client cannot aim its addresses at one bucket. */
	if (!tbl.seed && getrandom(&tbl.seed, sizeof(tbl.seed), 0) != sizeof(tbl.seed))
		tbl.seed = (uint64_t)(uintptr_t)&tbl; /* ASLR at least */
	tbl.seed |= 1;
	pthread_mutex_unlock(&tbl.lock);
}

bool kg_srclimit_enabled(void)
{
	return tbl.max != 0;
}

static void key_from_sockaddr(const struct sockaddr *sa, struct kg_src_key *key)
{
	memset(key, 0, sizeof(*key));
	if (sa->sa_family == AF_INET) {
		key->family = AF_INET;
		memcpy(key->addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED(a)) {
			key->family = AF_INET;
			memcpy(key->addr, &a->s6_addr[12], 4);
		} else {
			key->family = AF_INET6;
			memcpy(key->addr, a, 16);
		}
	}
}

static unsigned bucket_of(const struct kg_src_key *key)
{
	uint64_t h = tbl.seed ^ key->family;

	for (size_t i = 0; i < sizeof(key->addr); i++)
		h = (h ^ key->addr[i]) * 0x100000001b3ULL; /* FNV-1a step, seeded */
	return (unsigned)(h ^ (h >> 32)) % KG_SRC_BUCKETS;
}

static struct src_entry **find(const struct kg_src_key *key)
{
	struct src_entry **pp = &tbl.buckets[bucket_of(key)];

	while (*pp && memcmp(&(*pp)->key, key, sizeof(*key)) != 0)
		pp = &(*pp)->next;
	return pp;
}

bool kg_srclimit_acquire(const struct sockaddr *sa, struct kg_src_key *key)
{
	struct src_entry **pp, *e;
	bool ok = true;

	key_from_sockaddr(sa, key);
	if (!key->family || !tbl.max) {
		key->family = 0;
		return true; /* not an IP source (or no cap): not counted */
	}
	pthread_mutex_lock(&tbl.lock);
	pp = find(key);
	e = *pp;
	if (!e) {
		e = calloc(1, sizeof(*e));
		if (e) {
			e->key = *key;
			*pp = e;
			tbl.nsources++;
		}
	}
	if (!e || e->count >= tbl.max)
		ok = false; /* out of memory counts as over the cap: fail closed */
	else
		e->count++;
	pthread_mutex_unlock(&tbl.lock);
	if (!ok)
		key->family = 0;
	return ok;
}

void kg_srclimit_release(struct kg_src_key *key)
{
	struct src_entry **pp, *e;

	if (!key->family)
		return;
	pthread_mutex_lock(&tbl.lock);
	pp = find(key);
	e = *pp;
	if (e && --e->count == 0) {
		*pp = e->next;
		free(e);
		tbl.nsources--;
	}
	pthread_mutex_unlock(&tbl.lock);
	key->family = 0;
}

unsigned kg_srclimit_sources(void)
{
	unsigned n;

	pthread_mutex_lock(&tbl.lock);
	n = tbl.nsources;
	pthread_mutex_unlock(&tbl.lock);
	return n;
}
