/* A worker: one pinned thread, one io_uring, its own SO_REUSEPORT listeners. */
#ifndef KG_WORKER_H
#define KG_WORKER_H
#include <liburing.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "bufpool.h"
#include "generation.h"
#include "mailbox.h"
#include "options.h"
#include "ring.h"
#include "stats.h"

/* Immutable after start-up; shared by every worker. */
struct kg_runtime {
	struct kg_gen *gen;    /* the generation workers start with */
	bool ktls;             /* hand sessions to kernel TLS when the cipher allows */
	unsigned ktls_ciphers; /* KG_KTLS_BIT_* the kernel accepts for TX and RX */
	bool ktls_rekey;       /* the kernel takes new TLS 1.3 keys on a live socket */
	unsigned dpdk_ciphers; /* KG_KTLS_BIT_* the cryptodev does; 0: no DPDK engine */
};


#define KG_KTLS_BIT_AES_128_GCM 1u
#define KG_KTLS_BIT_AES_256_GCM 2u
#define KG_KTLS_BIT_CHACHA20_POLY1305 4u

struct kg_worker;

struct kg_listener {
	int fd;
	unsigned index; /* the configuration's listener this socket serves */
	struct kg_worker *worker;
	bool armed;
	uint64_t resume_ms;    /* accepting paused (out of fds) until then; 0: not paused */
} KG_ALIGNED;

struct kg_conn;
struct kg_up_cache;
struct kg_vcache;

/* This worker's verification cache for one site of its current generation. */
struct kg_vcache_slot {
	const struct kg_site *site;
	uint64_t gen;      /* generation number the site belongs to */
	int64_t crl_limit; /* the site's earliest CRL nextUpdate: no verdict outlives it */
	struct kg_vcache *cache;
};

struct kg_worker {
	unsigned id;
	int cpu;
	pthread_t thread;
	struct io_uring ring;
	struct kg_bufpool bufs;     /* relay buffers: provided ring + spare list */
	const struct kg_runtime *rt;
	struct kg_gen *gen;         /* own reference; new connections start on it */
	struct kg_listener listeners[KG_MAX_LISTEN];
	size_t nlisteners;
	int wake_fd;
	uint64_t wake_value;
	pthread_mutex_t box_lock;
	struct kg_wmsg *box;        /* from the control thread; see mailbox.h */
	bool box_closed;            /* the worker has stopped reading it */
	struct __kernel_timespec tick;
	struct kg_conn *conns;      /* intrusive list of live connections */
	struct kg_conn *conn_pool;  /* free connection objects (conn.c's slabs) */
	unsigned nconns;
	unsigned backend_rr;
	struct kg_up_cache *up_cache; /* backend TLS sessions, this worker's own */
	uint64_t next_conn_id;
	bool draining;
	uint64_t drain_deadline_ms;
	uint64_t last_limit_log_ms;
	uint64_t last_source_log_ms;
	uint64_t last_accept_log_ms;
	uint64_t accept_errors_unlogged;
	unsigned cq_entries;        /* completion queue size (KTLSGATE_TEST_CQ_ENTRIES in tests) */
	uint64_t last_overflow_log_ms;
	uint64_t cq_overflows_unlogged;
	bool trim_pending;          /* handshakes ran since the last malloc_trim */
	uint64_t last_trim_ms;
	int exit_status;
	struct kg_vcache_slot *vcaches; /* grown on a site's first handshake; emptied per generation */
	size_t nvcaches;
	struct kg_worker_stats stats;
	struct kg_dpdk_worker *dp;  /* cryptodev queue pair and pools; NULL: none */
} KG_ALIGNED;

/* Creates listener sockets (bound, listening) for every listener address of
 * the current generation. Errors name the address and where it was written:
 * "--listen 127.0.0.1:443: Address already in use". */
int kg_worker_init(struct kg_worker *w, unsigned id, int cpu, const struct kg_runtime *rt,
		   char *err, size_t errlen);
int kg_worker_start(struct kg_worker *w);
/* Asks the worker to stop accepting and drain; safe from any thread. */
void kg_worker_request_stop(struct kg_worker *w);
void kg_worker_join(struct kg_worker *w);

uint64_t kg_now_ms(void);
#endif
