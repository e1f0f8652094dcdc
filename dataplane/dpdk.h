/* The DPDK cryptodev record engine: EAL and device set-up (dpdk_eal.c, run
 * once by the control thread) and the relay that frames and protects TLS
 * records itself, batching crypto operations per worker (relay_dpdk.c).
 * Without -Ddpdk the functions below are stubs that report "not built". */
#ifndef KG_DPDK_H
#define KG_DPDK_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "relay.h"

struct kg_conn;
struct kg_worker;
struct kg_ktls_params;
struct kg_ktls_secrets;

/* EAL and device set-up: global config keys dpdk_vdevs, dpdk_memory_mb and
 * dpdk_queue_depth (bounds and defaults in config.h). */
/* Test-only: record buffers from DMA-safe mempools even on a software PMD. */
#define KG_DPDK_FORCE_DMA_ENV "KTLSGATE_TEST_DPDK_DMA_BUFFERS"

struct kg_dpdk_opts {
	const char *vdevs;     /* "a,b"; NULL: crypto_aesni_mb */
	unsigned memory_mb;    /* EAL -m; 0: the default */
	unsigned queue_depth;  /* descriptors per queue pair; 0: the default */
	bool force_dma_bufs;   /* tests: take the hardware PMD's buffer path */
};

struct kg_dpdk_caps {
	bool available;
	unsigned ciphers;   /* KG_KTLS_BIT_* the device does as AEAD (same bits as kTLS) */
	char dev[64];       /* the cryptodev used: "crypto_aesni_mb" */
	bool dma_bufs;      /* record buffers from mempools (hardware PMD or forced) */
};

#ifdef KG_HAVE_DPDK
#define KG_DPDK_BUILT 1
/* rte_eal_init (once) with the vdevs, one queue pair per worker.
 * The EAL main lcore keeps the calling thread's CPU set: nobody is re-pinned. */
int kg_dpdk_init(const struct kg_dpdk_opts *o, unsigned nworkers, struct kg_dpdk_caps *caps,
		 char *err, size_t errlen);
/* Per-worker pools and the queue pair; NULL on failure (the worker then relays
 * with OpenSSL). Called before the worker thread starts. */
struct kg_dpdk_worker *kg_dpdk_worker_new(unsigned id);
/* After the workers stopped: pools, device, EAL. */
void kg_dpdk_shutdown(struct kg_worker *workers, unsigned n);
/* Submits the crypto operations queued by connections since the last call,
 * in one burst, and hands every finished batch back to its connection. */
void kg_dpdk_flush(struct kg_worker *w);
/* relay_dpdk.c: after the handoff preparation (ktls.c). 0, or -1 with why
 * (nothing was sent yet: the caller falls back to OpenSSL). */
int kg_dpdk_hand_off(struct kg_conn *c, const struct kg_ktls_params *p,
		     const struct kg_ktls_secrets *s, const char *md, char *why, size_t whylen);
void kg_relay_dpdk_on_cqe(struct kg_conn *c, int op, int res);
void kg_dpdk_conn_free(struct kg_conn *c);
#else
#define KG_DPDK_BUILT 0
static inline int kg_dpdk_init(const struct kg_dpdk_opts *o, unsigned nworkers,
			       struct kg_dpdk_caps *caps, char *err, size_t errlen)
{
	caps->available = false;
	return -1;
}
static inline struct kg_dpdk_worker *kg_dpdk_worker_new(unsigned id) { return NULL; }
static inline void kg_dpdk_flush(struct kg_worker *w) {}
static inline void kg_dpdk_shutdown(struct kg_worker *workers, unsigned n) {}
static inline void kg_dpdk_conn_free(struct kg_conn *c) {}
#endif

/* Whether this connection's cipher and listener let it take the DPDK path. */
bool kg_dpdk_wanted(const struct kg_conn *c);
extern const struct kg_relay_ops kg_relay_dpdk;
#endif
