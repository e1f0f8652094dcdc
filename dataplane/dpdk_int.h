/* Shared by dpdk_eal.c and relay_dpdk.c only (needs the DPDK headers). */
#ifndef KG_DPDK_INT_H
#define KG_DPDK_INT_H
#include <rte_crypto.h>
#include <rte_cryptodev.h>
#include <rte_mbuf.h>
#include <rte_errno.h>
#include <rte_mempool.h>

#include "dpdk.h"
#include "dpdk_record.h"

#ifndef KG_DP_MAX_PENDING /* a test build may shrink it to exercise the waiting list */
#define KG_DP_MAX_PENDING 16384 /* operations queued per worker between flushes */
#endif
#define KG_DP_MAX_WAITERS 8192

struct kg_dpdk_worker {
	uint8_t dev;
	uint16_t qp;
	struct rte_mempool *ops, *mbufs;
	struct rte_mempool *bufs;   /* DMA-safe record buffers; NULL: heap (IOVA as VA) */
	struct kg_dp_spare spare;   /* record buffers between bursts, of bufs' kind */
	struct rte_crypto_op *pending[KG_DP_MAX_PENDING];
	struct rte_crypto_op *batch[KG_DP_MAX_PENDING]; /* the burst being run */
	unsigned npending;
	/* Connections that found the queue full: each holds one inflight count
	 * and is resumed (KG_OP_CRYPTO_WAIT) once the burst has drained it. */
	struct kg_conn *waiters[KG_DP_MAX_WAITERS];
	unsigned nwaiters;
};

struct kg_dpdk_global {
	uint8_t dev;
	struct rte_mempool *sessions;
	bool ready;
	bool dma_bufs;          /* record buffers from mempools (hardware PMD, or forced) */
	unsigned bufs_per_worker;
};
extern struct kg_dpdk_global kg_dpdk_g;

/* relay_dpdk.c: one operation of a connection's batch finished. */
void kg_dp_op_done(struct kg_worker *w, struct rte_crypto_op *op);
#endif
