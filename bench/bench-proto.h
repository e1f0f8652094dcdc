/* Wire protocol between ktlsgate-bench and bench-backend, carried in the clear by the
 * proxy under test. Every exchange starts with a fixed 17-byte header so that the backend
 * knows what to expect without parsing text, and every payload byte is a function of its
 * offset so that both ends can verify data without keeping copies.
 *
 *   'Q' a b : the client sends a payload bytes; once all arrived (and matched the
 *             pattern), the backend sends b pattern bytes. Then the next header.
 *   'D' a   : duplex echo of the next a bytes (upload and download at once).
 */
#ifndef KG_BENCH_PROTO_H
#define KG_BENCH_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define BP_HDR_LEN 17
#define BP_OP_QUERY 'Q'
#define BP_OP_DUPLEX 'D'
/* A prime period keeps the pattern from lining up with record or buffer sizes, so a
 * misplaced chunk can't compare equal by accident. */
#define BP_PERIOD 65521u
#define BP_CHUNK (64u * 1024u)

/* Returns a buffer where [off % BP_PERIOD, + BP_CHUNK) holds pattern bytes off.. */
static inline const uint8_t *bp_pattern(void)
{
	static uint8_t buf[BP_PERIOD + BP_CHUNK];
	static int ready;

	if (!ready) {
		uint32_t x = 0x9e3779b9u;

		for (size_t i = 0; i < BP_PERIOD; i++) {
			x ^= x << 13;
			x ^= x >> 17;
			x ^= x << 5;
			buf[i] = (uint8_t)(x >> 24);
		}
		for (size_t i = 0; i < BP_CHUNK; i++)
			buf[BP_PERIOD + i] = buf[i];
		ready = 1;
	}
	return buf;
}

static inline const uint8_t *bp_pattern_at(uint64_t off)
{
	return bp_pattern() + off % BP_PERIOD;
}

static inline void bp_put64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static inline uint64_t bp_get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static inline void bp_header(uint8_t *h, char op, uint64_t a, uint64_t b)
{
	h[0] = (uint8_t)op;
	bp_put64(h + 1, a);
	bp_put64(h + 9, b);
}

#endif
