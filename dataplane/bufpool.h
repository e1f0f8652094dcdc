/* Relay buffers, per worker. Receives take a buffer from an io_uring
 * provided-buffer ring only when bytes arrive, so an idle connection holds
 * none; send buffers come from a small free list and go back to it once
 * drained. A connection owns at most one buffer per direction and side. */
#ifndef KG_BUFPOOL_H
#define KG_BUFPOOL_H
#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

#define KG_BUF_SIZE (16384 + 512) /* one full TLS record plus overhead */

struct kg_buf {
	uint8_t *data;     /* NULL: none held; a ring buffer or an owned one */
	uint32_t off, len; /* pending bytes are data[off .. off+len) */
};

struct kg_bufpool {
	struct io_uring_buf_ring *br; /* NULL: the kernel has no buffer rings */
	uint8_t *ring_mem;            /* the ring's buffers, KG_BUF_SIZE each */
	unsigned ring_entries;
	void *spare;                  /* freed owned buffers, linked through their start */
	unsigned nspare;
};

/* Registers the ring's buffer group; without kernel support the pool still
 * works, and receives then use owned buffers. */
void kg_bufpool_init(struct kg_bufpool *p, struct io_uring *ring);
void kg_bufpool_destroy(struct kg_bufpool *p, struct io_uring *ring);
/* The calling thread's buffers from now on (a worker owns its pool). */
void kg_bufpool_attach(struct kg_bufpool *p);
/* True when receives should select a buffer from the ring (group KG_BUF_GROUP). */
bool kg_bufpool_selects(void);
#define KG_BUF_GROUP 0

/* An owned buffer for b (kept if it has one). */
bool kg_buf_ensure(struct kg_buf *b);
/* Gives b's buffer back (to the ring or the spare list); pending bytes are dropped. */
void kg_buf_release(struct kg_buf *b);
/* b now holds ring buffer bid, as a completion with IORING_CQE_F_BUFFER says. */
void kg_buf_from_ring(struct kg_buf *b, unsigned bid);
bool kg_buf_is_ring(const struct kg_buf *b);
/* Moves b's pending bytes from a ring buffer to an owned one: the ring's
 * buffers are for bytes in flight only. False when out of memory. */
bool kg_buf_keep(struct kg_buf *b);
#endif
