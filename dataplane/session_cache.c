#include "session_cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One lock for the whole cache: it is held for a hash lookup or an insert
 * (well under a microsecond) once per handshake, against ~300 us of
 * handshake work; sessions are freed after it is released. */
struct entry {
	struct entry *hnext;       /* bucket chain */
	struct entry *prev, *next; /* recency: cache.lru.next is the newest */
	SSL_SESSION *sess;
	int64_t expires;           /* Unix seconds */
	unsigned idlen;
	unsigned char id[SSL_MAX_SSL_SESSION_ID_LENGTH];
	struct kg_sess_tag tag;
};

static struct {
	pthread_mutex_t lock;
	struct entry **buckets;
	size_t nbuckets; /* a power of two, or 0 before the first insert */
	size_t count;
	struct entry lru; /* sentinel of the recency list */
} cache = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.lru = { .prev = &cache.lru, .next = &cache.lru },
};

/* Session ids are 32 random bytes of OpenSSL's making: any 8 of them hash. */
static size_t hash_of(const unsigned char *id, unsigned idlen)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (unsigned i = 0; i < idlen && i < 8; i++)
		h = (h ^ id[i]) * 0x100000001b3ull;
	return (size_t)(h ^ (h >> 29));
}

static struct entry **slot_of(const unsigned char *id, unsigned idlen)
{
	struct entry **p = &cache.buckets[hash_of(id, idlen) & (cache.nbuckets - 1)];

	while (*p && ((*p)->idlen != idlen || memcmp((*p)->id, id, idlen) != 0))
		p = &(*p)->hnext;
	return p;
}

static void lru_unlink(struct entry *e)
{
	e->prev->next = e->next;
	e->next->prev = e->prev;
}

static void lru_push(struct entry *e)
{
	e->next = cache.lru.next;
	e->prev = &cache.lru;
	cache.lru.next->prev = e;
	cache.lru.next = e;
}

/* Takes e out of the table; the caller frees it (after the lock). */
static void detach(struct entry *e)
{
	struct entry **p = slot_of(e->id, e->idlen);

	*p = e->hnext;
	lru_unlink(e);
	cache.count--;
}

static void entry_free(struct entry *e)
{
	SSL_SESSION_free(e->sess);
	free(e);
}

/* Frees a chain of detached entries linked through hnext. */
static void free_chain(struct entry *e)
{
	while (e) {
		struct entry *next = e->hnext;
		entry_free(e);
		e = next;
	}
}

/* One bucket per entry at most: doubles the table as the cache grows. */
static bool grow(void)
{
	size_t n = cache.nbuckets ? cache.nbuckets * 2 : 64;
	struct entry **b = calloc(n, sizeof(*b));

	if (!b)
		return cache.nbuckets != 0; /* a full table still works, slower */
	for (struct entry *e = cache.lru.next; e != &cache.lru; e = e->next) {
		size_t i = hash_of(e->id, e->idlen) & (n - 1);
		e->hnext = b[i];
		b[i] = e;
	}
	free(cache.buckets);
	cache.buckets = b;
	cache.nbuckets = n;
	return true;
}

/* Detaches the oldest entries until fewer than keep remain; returns them
 * chained through hnext. */
static struct entry *evict_to(size_t keep, unsigned *n)
{
	struct entry *out = NULL;

	while (cache.count > keep) {
		struct entry *e = cache.lru.prev;
		detach(e);
		e->hnext = out;
		out = e;
		(*n)++;
	}
	return out;
}

bool kg_scache_put(SSL_SESSION *sess, const struct kg_sess_tag *tag, unsigned capacity,
		   unsigned *evicted)
{
	unsigned idlen;
	const unsigned char *id = SSL_SESSION_get_id(sess, &idlen);
	struct entry *e, *gone = NULL, *old;

	*evicted = 0;
	if (!capacity || !idlen || idlen > sizeof(e->id) || !(e = malloc(sizeof(*e))))
		return false;
	e->sess = sess;
	e->expires = (int64_t)SSL_SESSION_get_time(sess) + SSL_SESSION_get_timeout(sess);
	e->idlen = idlen;
	memcpy(e->id, id, idlen);
	e->tag = *tag;
	pthread_mutex_lock(&cache.lock);
	if ((cache.count >= cache.nbuckets && !grow()) || !cache.nbuckets) {
		pthread_mutex_unlock(&cache.lock);
		free(e);
		return false;
	}
	old = *slot_of(id, idlen);
	if (old) /* the same id again (a session stored twice): the newer wins */
		detach(old);
	gone = evict_to(capacity - 1, evicted);
	struct entry **p = slot_of(id, idlen);
	e->hnext = *p;
	*p = e;
	lru_push(e);
	cache.count++;
	pthread_mutex_unlock(&cache.lock);
	if (old)
		entry_free(old);
	free_chain(gone);
	return true;
}

SSL_SESSION *kg_scache_get(const unsigned char *id, unsigned idlen, struct kg_sess_tag *tag)
{
	struct entry *e = NULL, *expired = NULL;
	SSL_SESSION *sess = NULL;

	pthread_mutex_lock(&cache.lock);
	if (cache.nbuckets && idlen && idlen <= sizeof(e->id))
		e = *slot_of(id, idlen);
	if (e && e->expires <= (int64_t)time(NULL)) {
		detach(e);
		expired = e;
	} else if (e) {
		lru_unlink(e);
		lru_push(e);
		SSL_SESSION_up_ref(e->sess);
		sess = e->sess;
		*tag = e->tag;
	}
	pthread_mutex_unlock(&cache.lock);
	if (expired)
		entry_free(expired);
	return sess;
}

void kg_scache_remove(SSL_SESSION *sess)
{
	unsigned idlen;
	const unsigned char *id = SSL_SESSION_get_id(sess, &idlen);
	struct entry *e = NULL;

	pthread_mutex_lock(&cache.lock);
	if (cache.nbuckets && idlen && idlen <= sizeof(e->id))
		e = *slot_of(id, idlen);
	if (e)
		detach(e);
	pthread_mutex_unlock(&cache.lock);
	if (e)
		entry_free(e);
}

unsigned kg_scache_trim(unsigned capacity)
{
	unsigned n = 0;
	struct entry *gone;

	pthread_mutex_lock(&cache.lock);
	gone = evict_to(capacity, &n);
	pthread_mutex_unlock(&cache.lock);
	free_chain(gone);
	return n;
}

unsigned kg_scache_count(void)
{
	size_t n;

	pthread_mutex_lock(&cache.lock);
	n = cache.count;
	pthread_mutex_unlock(&cache.lock);
	return (unsigned)n;
}

void kg_scache_free(void)
{
	kg_scache_trim(0);
	pthread_mutex_lock(&cache.lock);
	free(cache.buckets);
	cache.buckets = NULL;
	cache.nbuckets = 0;
	pthread_mutex_unlock(&cache.lock);
}

/* Ticket appdata: listener (4 bytes, big-endian), trust digest, SNI. */
#define TAG_HEAD (4 + KG_SESS_TRUST_LEN)

size_t kg_sess_tag_encode(const struct kg_sess_tag *tag, unsigned char *out, size_t cap)
{
	size_t n = strnlen(tag->sni, sizeof(tag->sni) - 1);

	if (cap < TAG_HEAD + n)
		return 0;
	for (int i = 0; i < 4; i++)
		out[i] = (unsigned char)(tag->listener >> (24 - 8 * i));
	memcpy(out + 4, tag->trust, KG_SESS_TRUST_LEN);
	memcpy(out + TAG_HEAD, tag->sni, n);
	return TAG_HEAD + n;
}

bool kg_sess_tag_decode(const void *data, size_t len, struct kg_sess_tag *tag)
{
	const unsigned char *p = data;

	if (!p || len < TAG_HEAD || len - TAG_HEAD >= sizeof(tag->sni) ||
	    memchr(p + TAG_HEAD, '\0', len - TAG_HEAD))
		return false;
	tag->listener = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	memcpy(tag->trust, p + 4, KG_SESS_TRUST_LEN);
	memcpy(tag->sni, p + TAG_HEAD, len - TAG_HEAD);
	tag->sni[len - TAG_HEAD] = '\0';
	return true;
}
