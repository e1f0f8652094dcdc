/* EAL and cryptodev set-up for the DPDK record engine, done once by the
 * control thread before the workers start: no hugepages, no PCI, no shared
 * config or telemetry, software or hardware crypto vdevs from the config, one
 * queue pair per worker. The EAL main lcore is given the calling thread's own
 * CPU set, so EAL pins nothing new and never touches the workers' CPUs. */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_log.h>

#include "config.h"
#include "conn.h"
#include "dpdk_int.h"
#include "log.h"
#include "worker.h"

struct kg_dpdk_global kg_dpdk_g;
static unsigned nqps;

/* "0@(0,1)": lcore 0 on every CPU we may already run on. */
static void own_cpuset(char *buf, size_t cap)
{
	cpu_set_t set;
	size_t used = 0;

	if (sched_getaffinity(0, sizeof(set), &set) < 0)
		CPU_ZERO(&set);
	used = (size_t)snprintf(buf, cap, "0@(");
	for (int i = 0, first = 1; i < CPU_SETSIZE && used < cap; i++)
		if (CPU_ISSET(i, &set)) {
			used += (size_t)snprintf(buf + used, cap - used, "%s%d", first ? "" : ",", i);
			first = 0;
		}
	if (used < cap)
		snprintf(buf + used, cap - used, ")");
}

static unsigned probe_ciphers(uint8_t dev)
{
	static const struct { enum rte_crypto_aead_algorithm algo; uint16_t key; unsigned bit; } t[] = {
		{ RTE_CRYPTO_AEAD_AES_GCM, 16, KG_KTLS_BIT_AES_128_GCM },
		{ RTE_CRYPTO_AEAD_AES_GCM, 32, KG_KTLS_BIT_AES_256_GCM },
		{ RTE_CRYPTO_AEAD_CHACHA20_POLY1305, 32, KG_KTLS_BIT_CHACHA20_POLY1305 },
	};
	unsigned bits = 0;

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct rte_cryptodev_sym_capability_idx idx = {
			.type = RTE_CRYPTO_SYM_XFORM_AEAD, .algo.aead = t[i].algo };
		const struct rte_cryptodev_symmetric_capability *cap =
			rte_cryptodev_sym_capability_get(dev, &idx);
		/* AAD: 5 bytes (TLS 1.3 header) and 13 (TLS 1.2 pseudo-header). */
		if (cap && rte_cryptodev_sym_capability_check_aead(cap, t[i].key, 16, 13, 12) == 0 &&
		    rte_cryptodev_sym_capability_check_aead(cap, t[i].key, 16, 5, 12) == 0)
			bits |= t[i].bit;
	}
	return bits;
}

static int configure(uint8_t dev, unsigned nworkers, unsigned depth, char *err, size_t errlen)
{
	struct rte_cryptodev_info info;
	struct rte_cryptodev_config conf = { .socket_id = SOCKET_ID_ANY };
	struct rte_cryptodev_qp_conf qpc = { .nb_descriptors = depth };

	rte_cryptodev_info_get(dev, &info);
	/* A device that DMAs needs buffers with a real IOVA; heap memory is only
	 * "IOVA as VA" for the software PMDs, which read it with the CPU. */
	kg_dpdk_g.dma_bufs = (info.feature_flags & RTE_CRYPTODEV_FF_HW_ACCELERATED) != 0;
	if (info.max_nb_queue_pairs < nworkers) {
		snprintf(err, errlen, "%s has %u queue pairs for %u workers", info.driver_name,
			 info.max_nb_queue_pairs, nworkers);
		return -1;
	}
	if (!(info.feature_flags & RTE_CRYPTODEV_FF_OOP_LB_IN_LB_OUT)) {
		snprintf(err, errlen, "%s cannot write out of place", info.driver_name);
		return -1;
	}
	conf.nb_queue_pairs = (uint16_t)nworkers;
	unsigned sess_size = rte_cryptodev_sym_get_private_session_size(dev);
	kg_dpdk_g.sessions = rte_cryptodev_sym_session_pool_create("kg_sess", 8191, sess_size, 0,
								   0, SOCKET_ID_ANY);
	if (!kg_dpdk_g.sessions || rte_cryptodev_configure(dev, &conf) < 0) {
		snprintf(err, errlen, "configure %s: %s", info.driver_name, rte_strerror(rte_errno));
		return -1;
	}
	for (unsigned q = 0; q < nworkers; q++)
		if (rte_cryptodev_queue_pair_setup(dev, (uint16_t)q, &qpc, SOCKET_ID_ANY) < 0) {
			snprintf(err, errlen, "queue pair %u of %s (%u descriptors) failed: %s", q,
				 info.driver_name, depth, rte_strerror(rte_errno));
			return -1;
		}
	if (rte_cryptodev_start(dev) < 0) {
		snprintf(err, errlen, "start %s failed", info.driver_name);
		return -1;
	}
	return 0;
}

/* Record buffers per worker when they must be DMA-safe: half the EAL memory,
 * shared out. A connection holds up to three (client ciphertext, plaintext,
 * tx) while bytes are in flight and none when idle (relay_dpdk.c). */
static unsigned bufs_per_worker(unsigned memory_mb, unsigned nworkers)
{
	unsigned long long half = (unsigned long long)memory_mb << 19;
	unsigned long long n = half / nworkers / KG_DP_BUF_SIZE;

	return n < 3 ? 3 : n > 1u << 20 ? 1u << 20 : (unsigned)n;
}

int kg_dpdk_init(const struct kg_dpdk_opts *o, unsigned nworkers, struct kg_dpdk_caps *caps,
		 char *err, size_t errlen)
{
	const char *vdevs = o->vdevs;
	unsigned memory_mb = o->memory_mb ? o->memory_mb : KG_DPDK_MEMORY_MB_DEFAULT;
	unsigned depth = o->queue_depth ? o->queue_depth : KG_DPDK_QUEUE_DEPTH_DEFAULT;
	char lcores[256], prefix[64], mem[16], *list = strdup(vdevs ? vdevs : "crypto_aesni_mb");
	char vdev_args[8][160];
	char *argv[32] = { "ktlsgate", "--no-huge", "--no-pci", "--no-shconf", "--no-telemetry",
			   "-m", mem, "--log-level", "*:error", "--lcores", lcores,
			   "--file-prefix", prefix };
	int argc = 13, nv = 0;

	memset(caps, 0, sizeof(*caps));
	if (!list) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	snprintf(mem, sizeof(mem), "%u", memory_mb);
	own_cpuset(lcores, sizeof(lcores));
	snprintf(prefix, sizeof(prefix), "ktlsgate-%d", (int)getpid());
	for (char *save = NULL, *v = strtok_r(list, ",", &save); v && nv < 8;
	     v = strtok_r(NULL, ",", &save), nv++) {
		/* One queue pair per worker: software PMDs default to 8. */
		snprintf(vdev_args[nv], sizeof(vdev_args[nv]), "%s,max_nb_queue_pairs=%u", v,
			 nworkers < 8 ? 8 : nworkers);
		argv[argc++] = "--vdev";
		argv[argc++] = vdev_args[nv];
	}
	free(list);
	if (rte_eal_init(argc, argv) < 0) {
		snprintf(err, errlen, "EAL init failed: %s", rte_strerror(rte_errno));
		return -1;
	}
	if (rte_cryptodev_count() == 0) {
		snprintf(err, errlen, "no crypto device (vdevs: %s)", vdevs ? vdevs : "crypto_aesni_mb");
		return -1;
	}
	kg_dpdk_g.dev = 0;
	if (configure(0, nworkers, depth, err, errlen) < 0)
		return -1;
	if (o->force_dma_bufs)
		kg_dpdk_g.dma_bufs = true;
	kg_dpdk_g.bufs_per_worker = bufs_per_worker(memory_mb, nworkers);
	nqps = nworkers;
	caps->ciphers = probe_ciphers(0);
	snprintf(caps->dev, sizeof(caps->dev), "%s", rte_cryptodev_name_get(0));
	if (!caps->ciphers) {
		snprintf(err, errlen, "%s has none of AES-GCM, CHACHA20-POLY1305", caps->dev);
		return -1;
	}
	caps->available = true;
	caps->dma_bufs = kg_dpdk_g.dma_bufs;
	kg_dpdk_g.ready = true;
	struct kg_field f[] = {
		KG_S("cryptodev", caps->dev), KG_I("memory_mb", memory_mb),
		KG_I("queue_depth", depth), KG_I("queue_pairs", nworkers),
		KG_S("buffers", kg_dpdk_g.dma_bufs ? "dma" : "heap"),
		KG_I("buffers_per_worker", kg_dpdk_g.dma_bufs ? kg_dpdk_g.bufs_per_worker : 0),
	};
	kg_log_event(KG_LOG_INFO, "dpdk_setup", f, KG_NFIELDS(f));
	return 0;
}

struct kg_dpdk_worker *kg_dpdk_worker_new(unsigned id)
{
	struct kg_dpdk_worker *dw;
	char name[32];

	if (!kg_dpdk_g.ready || id >= nqps)
		return NULL;
	dw = calloc(1, sizeof(*dw));
	if (!dw)
		return NULL;
	dw->dev = kg_dpdk_g.dev;
	dw->qp = (uint16_t)id;
	snprintf(name, sizeof(name), "kg_ops%u", id);
	dw->ops = rte_crypto_op_pool_create(name, RTE_CRYPTO_OP_TYPE_SYMMETRIC, KG_DP_MAX_PENDING, 0,
					    sizeof(struct kg_dp_op_priv), SOCKET_ID_ANY);
	snprintf(name, sizeof(name), "kg_mbuf%u", id);
	/* Header-only mbufs: each points at one record in the connection's buffers. */
	dw->mbufs = rte_pktmbuf_pool_create(name, 2 * KG_DP_MAX_PENDING, 0, 0, 0, SOCKET_ID_ANY);
	if (kg_dpdk_g.dma_bufs) {
		snprintf(name, sizeof(name), "kg_buf%u", id);
		dw->bufs = kg_dp_buf_pool_create(name, kg_dpdk_g.bufs_per_worker);
	}
	if (!dw->ops || !dw->mbufs || (kg_dpdk_g.dma_bufs && !dw->bufs)) {
		rte_mempool_free(dw->ops);
		rte_mempool_free(dw->mbufs);
		rte_mempool_free(dw->bufs);
		free(dw);
		return NULL;
	}
	return dw;
}

void kg_dpdk_flush(struct kg_worker *w)
{
	struct kg_dpdk_worker *dw = w->dp;
	struct rte_crypto_op *done[256];

	/* Completions may queue new batches (a KeyUpdate answer), and waiting
	 * connections queue theirs once there is room: loop until quiet. */
	while (dw && (dw->npending || dw->nwaiters)) {
		unsigned n = dw->npending, sent = 0, back = 0;

		if (n) {
			w->stats.dpdk_bursts++;
			w->stats.dpdk_burst_ops += n;
			w->stats.dpdk_burst_hist[kg_burst_bucket(n)]++;
		}
		memcpy(dw->batch, dw->pending, n * sizeof(dw->pending[0]));
		dw->npending = 0;
		while (back < n) {
			if (sent < n)
				sent += rte_cryptodev_enqueue_burst(dw->dev, dw->qp, dw->batch + sent,
								    (uint16_t)(n - sent > 512 ? 512 : n - sent));
			uint16_t got = rte_cryptodev_dequeue_burst(dw->dev, dw->qp, done, 256);
			for (uint16_t i = 0; i < got; i++)
				kg_dp_op_done(w, done[i]);
			back += got;
		}
		unsigned nw = dw->nwaiters;
		struct kg_conn *w8[64];
		/* Resume at most 64 per round so that their batches fit the queue. */
		nw = nw > 64 ? 64 : nw;
		memcpy(w8, dw->waiters, nw * sizeof(w8[0]));
		memmove(dw->waiters, dw->waiters + nw, (dw->nwaiters - nw) * sizeof(w8[0]));
		dw->nwaiters -= nw;
		for (unsigned i = 0; i < nw; i++)
			kg_conn_on_cqe(w8[i], KG_OP_CRYPTO_WAIT, 0, 0);
	}
}

void kg_dpdk_shutdown(struct kg_worker *workers, unsigned n)
{
	if (!kg_dpdk_g.ready)
		return;
	for (unsigned i = 0; i < n; i++) {
		struct kg_dpdk_worker *dw = workers[i].dp;
		if (!dw)
			continue;
		kg_dp_spare_drain(&dw->spare);
		rte_mempool_free(dw->ops);
		rte_mempool_free(dw->mbufs);
		rte_mempool_free(dw->bufs);
		free(dw);
		workers[i].dp = NULL;
	}
	rte_cryptodev_stop(kg_dpdk_g.dev);
	rte_cryptodev_close(kg_dpdk_g.dev);
	rte_mempool_free(kg_dpdk_g.sessions);
	kg_dpdk_g.ready = false;
	rte_eal_cleanup();
}
