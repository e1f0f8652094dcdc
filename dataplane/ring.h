/* Ring plumbing shared by the dataplane: how a completion finds its owner.
 * user_data = pointer to a 16-byte aligned object | operation code (low 4 bits),
 * the same trick as liburing's examples/proxy.c. */
#ifndef KG_RING_H
#define KG_RING_H
#include <liburing.h>
#include <stdint.h>

enum kg_op {
	KG_OP_NONE = 0,
	KG_OP_ACCEPT,      /* object: struct kg_listener */
	KG_OP_WAKE,        /* object: struct kg_worker */
	KG_OP_TICK,        /* object: struct kg_worker */
	KG_OP_CLI_RECV,    /* object: struct kg_conn from here on */
	KG_OP_CLI_SEND,
	KG_OP_CLI_SHUT,
	KG_OP_BE_CONNECT,
	KG_OP_BE_TIMEOUT,  /* linked timeout of the connect */
	KG_OP_BE_RECV,
	KG_OP_BE_SEND,
	KG_OP_BE_SHUT,
	KG_OP_CANCEL,
	KG_OP_IGNORE,      /* fire-and-forget (close of an fd nobody waits for) */
	KG_OP_UP_TIMER,    /* kTLS handoff: how long to wait for a backend's ticket */
	KG_OP_CRYPTO_RX,   /* a DPDK batch came back (never in user_data) */
	KG_OP_CRYPTO_TX,
	KG_OP_CRYPTO_WAIT, /* room in the worker's crypto queue again */
	KG_OP_MAX
};

#define KG_OP_MASK 0xfULL
#define KG_ALIGNED __attribute__((aligned(16)))

static inline uint64_t kg_ud(const void *obj, enum kg_op op)
{
	return (uint64_t)(uintptr_t)obj | (uint64_t)op;
}
static inline enum kg_op kg_ud_op(uint64_t ud) { return (enum kg_op)(ud & KG_OP_MASK); }
static inline void *kg_ud_obj(uint64_t ud) { return (void *)(uintptr_t)(ud & ~KG_OP_MASK); }

/* Never NULL: submits to make room when the SQ is full. */
struct io_uring_sqe *kg_get_sqe(struct io_uring *ring);
/* Submits now unless n SQEs are free, so a linked pair stays in one submission. */
void kg_reserve_sqes(struct io_uring *ring, unsigned n);
#endif
