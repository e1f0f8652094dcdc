/* The session cache: lookups by id, least-recently-used eviction (a hit
 * counts as use), expiry, removal, growth past the first table, and the
 * tag's ticket encoding. Run under ASan it also proves every session is
 * freed (evicted, expired, replaced, trimmed, at exit). */
#include <openssl/ssl.h>
#include <time.h>

#include "session_cache.h"
#include "test.h"

static SSL_SESSION *session(unsigned n, long timeout)
{
	SSL_SESSION *s = SSL_SESSION_new();
	unsigned char id[SSL_MAX_SSL_SESSION_ID_LENGTH];

	memset(id, 0x5a, sizeof(id));
	memcpy(id, &n, sizeof(n));
	SSL_SESSION_set1_id(s, id, sizeof(id));
	SSL_SESSION_set_time(s, (long)time(NULL));
	SSL_SESSION_set_timeout(s, timeout);
	return s;
}

static struct kg_sess_tag tag_for(unsigned n)
{
	struct kg_sess_tag t = { .listener = n };

	memset(t.trust, (int)n, sizeof(t.trust));
	snprintf(t.sni, sizeof(t.sni), "host%u.example", n);
	return t;
}

static bool put(unsigned n, unsigned cap, unsigned *evicted)
{
	SSL_SESSION *s = session(n, 300);
	struct kg_sess_tag t = tag_for(n);

	if (kg_scache_put(s, &t, cap, evicted))
		return true;
	SSL_SESSION_free(s);
	return false;
}

/* Whether n is cached (its tag intact); a hit makes it the newest. */
static bool has(unsigned n)
{
	SSL_SESSION *probe = session(n, 300), *got;
	struct kg_sess_tag t;
	unsigned len;
	const unsigned char *id = SSL_SESSION_get_id(probe, &len);

	got = kg_scache_get(id, len, &t);
	SSL_SESSION_free(probe);
	if (!got)
		return false;
	SSL_SESSION_free(got);
	return t.listener == n && strcmp(t.sni, tag_for(n).sni) == 0;
}

static void test_lru(void)
{
	unsigned ev, total = 0;

	for (unsigned i = 1; i <= 4; i++) {
		CHECK(put(i, 4, &ev));
		total += ev;
	}
	CHECK(total == 0 && kg_scache_count() == 4);
	CHECK(has(1)); /* 1 is now the newest: 2 is the oldest */
	CHECK(put(5, 4, &ev) && ev == 1);
	CHECK(!has(2) && has(1) && has(3) && has(4) && has(5));
	CHECK(kg_scache_count() == 4);
	/* The same id again replaces the entry, it does not add one. */
	CHECK(put(5, 4, &ev) && ev == 0 && kg_scache_count() == 4);
	/* A smaller capacity (a reload) evicts down to it on the next insert. */
	CHECK(put(6, 2, &ev) && ev == 3 && kg_scache_count() == 2);
	CHECK(has(6) && has(5) && !has(1));
	CHECK(!put(7, 0, &ev)); /* capacity 0 keeps nothing */
	CHECK(kg_scache_trim(0) == 2 && kg_scache_count() == 0);
}

static void test_expiry_and_remove(void)
{
	unsigned ev;
	SSL_SESSION *old = session(10, 300), *s = session(11, 300);
	struct kg_sess_tag t = tag_for(10), got;
	unsigned len;
	const unsigned char *id;

	SSL_SESSION_set_time(old, (long)time(NULL) - 301); /* made before the timeout */
	CHECK(kg_scache_put(old, &t, 8, &ev));
	id = SSL_SESSION_get_id(old, &len);
	CHECK(kg_scache_get(id, len, &got) == NULL); /* expired: dropped */
	CHECK(kg_scache_count() == 0);
	t = tag_for(11);
	SSL_SESSION_up_ref(s); /* as OpenSSL: its connection keeps one */
	CHECK(kg_scache_put(s, &t, 8, &ev));
	CHECK(has(11));
	kg_scache_remove(s); /* remove_cb after a fatal alert */
	CHECK(!has(11) && kg_scache_count() == 0);
	SSL_SESSION_free(s);
	CHECK(kg_scache_get((const unsigned char *)"short", 5, &got) == NULL);
}

static void test_growth(void)
{
	unsigned ev, total = 0;

	for (unsigned i = 0; i < 5000; i++) {
		CHECK(put(1000 + i, 3000, &ev));
		total += ev;
	}
	CHECK(total == 2000 && kg_scache_count() == 3000);
	CHECK(!has(1000) && !has(2999) && has(3000) && has(5999));
	kg_scache_free();
	CHECK(kg_scache_count() == 0);
	CHECK(put(1, 4, &ev) && has(1)); /* usable again after free */
	kg_scache_free();
}

static void test_tag_encoding(void)
{
	struct kg_sess_tag t = tag_for(0x01020304), back;
	unsigned char buf[sizeof(t)];
	size_t n = kg_sess_tag_encode(&t, buf, sizeof(buf));

	CHECK(n == 4 + KG_SESS_TRUST_LEN + strlen(t.sni));
	CHECK(buf[0] == 1 && buf[3] == 4);
	CHECK(kg_sess_tag_decode(buf, n, &back));
	CHECK(back.listener == t.listener && memcmp(back.trust, t.trust, sizeof(t.trust)) == 0);
	CHECK_STR(back.sni, t.sni);
	t.sni[0] = '\0'; /* no SNI */
	n = kg_sess_tag_encode(&t, buf, sizeof(buf));
	CHECK(kg_sess_tag_decode(buf, n, &back) && back.sni[0] == '\0');
	CHECK(!kg_sess_tag_decode(buf, n - 1, &back)); /* too short for the header */
	CHECK(!kg_sess_tag_decode("localhost", 9, &back)); /* an old ticket's bare SNI */
	buf[n] = '\0';
	CHECK(!kg_sess_tag_decode(buf, n + 1, &back)); /* a NUL inside the name */
	CHECK(kg_sess_tag_encode(&t, buf, 10) == 0);
}

int main(void)
{
	test_lru();
	test_expiry_and_remove();
	test_growth();
	test_tag_encoding();
	return T_DONE();
}
