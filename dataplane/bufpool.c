#include "bufpool.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Enough for the receives that complete in one round of a busy worker: with
 * 64, 200 connections relaying both ways found the ring dry ~60,000 times in
 * 1.6 GB (each a second trip through the ring), with 256 never. A dry ring
 * fails the receive with ENOBUFS and conn.c posts it again with an owned
 * buffer, so this bounds memory, not correctness. Pages are resident only
 * as far as bytes came in: ~1 MiB per worker when idle, 4.3 MiB at most. */
#define KG_RING_BUFS 256
/* Freed send buffers kept for the next drain-and-refill of a busy connection;
 * beyond this they go back to malloc. */
#define KG_BUF_SPARE 32

/* A worker's connections run only on its thread: the pool is found here
 * rather than threaded through every caller. NULL (unit tests): malloc. */
static __thread struct kg_bufpool *tl_pool;

static void *map(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

void kg_bufpool_init(struct kg_bufpool *p, struct io_uring *ring)
{
	unsigned n = KG_RING_BUFS;
	struct io_uring_buf_reg reg = { .ring_entries = n, .bgid = KG_BUF_GROUP };

	memset(p, 0, sizeof(*p));
	p->br = map(n * sizeof(struct io_uring_buf));
	p->ring_mem = map((size_t)n * KG_BUF_SIZE);
	if (!p->br || !p->ring_mem)
		goto none;
	reg.ring_addr = (unsigned long)p->br;
	if (io_uring_register_buf_ring(ring, &reg, 0) != 0)
		goto none;
	io_uring_buf_ring_init(p->br);
	for (unsigned i = 0; i < n; i++)
		io_uring_buf_ring_add(p->br, p->ring_mem + (size_t)i * KG_BUF_SIZE, KG_BUF_SIZE, i,
				      io_uring_buf_ring_mask(n), (int)i);
	io_uring_buf_ring_advance(p->br, (int)n);
	p->ring_entries = n;
	return;
none:
	if (p->br)
		munmap(p->br, n * sizeof(struct io_uring_buf));
	if (p->ring_mem)
		munmap(p->ring_mem, (size_t)n * KG_BUF_SIZE);
	p->br = NULL;
	p->ring_mem = NULL;
}

/* Plaintext and key-derived bytes never go back to malloc unwiped. */
static void free_owned(uint8_t *data)
{
	OPENSSL_cleanse(data, KG_BUF_SIZE);
	free(data);
}

void kg_bufpool_destroy(struct kg_bufpool *p, struct io_uring *ring)
{
	while (p->spare) {
		uint8_t *d = p->spare;
		memcpy(&p->spare, d, sizeof(void *));
		free_owned(d);
	}
	p->nspare = 0;
	if (p->br) {
		io_uring_unregister_buf_ring(ring, KG_BUF_GROUP);
		munmap(p->br, p->ring_entries * sizeof(struct io_uring_buf));
		munmap(p->ring_mem, (size_t)p->ring_entries * KG_BUF_SIZE); /* the kernel zeroes */
		p->br = NULL;
	}
	if (tl_pool == p)
		tl_pool = NULL;
}

void kg_bufpool_attach(struct kg_bufpool *p)
{
	tl_pool = p;
}

bool kg_bufpool_selects(void)
{
	return tl_pool && tl_pool->br;
}

bool kg_buf_is_ring(const struct kg_buf *b)
{
	const struct kg_bufpool *p = tl_pool;

	return p && p->br && b->data >= p->ring_mem &&
	       b->data < p->ring_mem + (size_t)p->ring_entries * KG_BUF_SIZE;
}

bool kg_buf_ensure(struct kg_buf *b)
{
	struct kg_bufpool *p = tl_pool;

	if (b->data)
		return true;
	if (p && p->spare) {
		b->data = p->spare;
		memcpy(&p->spare, b->data, sizeof(void *));
		p->nspare--;
	} else {
		b->data = malloc(KG_BUF_SIZE);
	}
	return b->data != NULL;
}

void kg_buf_release(struct kg_buf *b)
{
	struct kg_bufpool *p = tl_pool;

	if (!b->data)
		return;
	if (kg_buf_is_ring(b)) {
		unsigned bid = (unsigned)((size_t)(b->data - p->ring_mem) / KG_BUF_SIZE);
		io_uring_buf_ring_add(p->br, b->data, KG_BUF_SIZE, (unsigned short)bid,
				      io_uring_buf_ring_mask(p->ring_entries), 0);
		io_uring_buf_ring_advance(p->br, 1);
	} else if (p && p->nspare < KG_BUF_SPARE) {
		memcpy(b->data, &p->spare, sizeof(void *));
		p->spare = b->data;
		p->nspare++;
	} else {
		free_owned(b->data);
	}
	b->data = NULL;
	b->off = b->len = 0;
}

void kg_buf_from_ring(struct kg_buf *b, unsigned bid)
{
	kg_buf_release(b);
	b->data = tl_pool->ring_mem + (size_t)bid * KG_BUF_SIZE;
	b->off = 0;
	b->len = 0;
}

bool kg_buf_keep(struct kg_buf *b)
{
	struct kg_buf own = { 0 };

	if (!kg_buf_is_ring(b))
		return true;
	if (!kg_buf_ensure(&own))
		return false;
	memcpy(own.data, b->data + b->off, b->len);
	own.len = b->len;
	kg_buf_release(b);
	*b = own;
	return true;
}
