/* Follows TLS record boundaries in the byte stream we feed OpenSSL, so the
 * kTLS handoff can stop reading exactly at a record boundary: the kernel must
 * see whole records, starting with the next unread one. */
#ifndef KG_TLS_RECORD_H
#define KG_TLS_RECORD_H
#include <stddef.h>
#include <stdint.h>

#define KG_TLS_HEADER_LEN 5

struct kg_rec_tracker {
	uint8_t hdr[KG_TLS_HEADER_LEN];
	uint8_t hdr_have;
	uint32_t body_left;
};

static inline void kg_rec_track(struct kg_rec_tracker *t, const uint8_t *p, size_t len)
{
	while (len) {
		if (t->body_left) {
			size_t n = len < t->body_left ? len : t->body_left;
			t->body_left -= (uint32_t)n;
			p += n;
			len -= n;
			continue;
		}
		t->hdr[t->hdr_have++] = *p++;
		len--;
		if (t->hdr_have == KG_TLS_HEADER_LEN) {
			t->body_left = (uint32_t)t->hdr[3] << 8 | t->hdr[4];
			t->hdr_have = 0;
		}
	}
}

/* Bytes still needed to complete the current record; 0 at a boundary. */
static inline size_t kg_rec_missing(const struct kg_rec_tracker *t)
{
	if (t->hdr_have)
		return KG_TLS_HEADER_LEN - t->hdr_have; /* header first, then we know more */
	return t->body_left;
}
#endif
