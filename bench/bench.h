/* ktlsgate-bench: shared types of the load generator. One thread = one epoll loop that
 * drives many non-blocking TLS connections; threads share only the SSL_CTX, the options
 * and the phase flag. */
#ifndef KG_BENCH_H
#define KG_BENCH_H

#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "bench-proto.h"

enum bench_mode { M_HANDSHAKE, M_RESUME, M_REQUEST, M_BULK, M_IDLE };
enum bulk_dir { BULK_DOWN, BULK_UP, BULK_BOTH };
/* Warm-up results are thrown away; STOP ends the threads. */
enum bench_phase { PH_WARMUP, PH_MEASURE, PH_STOP };
enum err_kind { E_CONNECT, E_TLS, E_EOF, E_RESET, E_CHECKSUM, E_TIMEOUT, E_CLOSED_IDLE,
	E_MAX };

#define MAX_PINS 64
#define MAX_SERVER_PIDS 32

struct bench_opts {
	const char *target;
	struct sockaddr_storage *addr;
	socklen_t addrlen;
	enum bench_mode mode;
	int concurrency, threads;
	double duration, warmup, timeout, rate;
	long count;
	int tls_version; /* 0: 1.2 or 1.3; else 12 or 13 */
	const char *ciphers, *ciphersuites, *groups, *sigalgs, *sni, *cafile;
	const char *cert, *key, *p12, *p12_pass;
	uint64_t req_size, resp_size, bulk_size;
	enum bulk_dir dir;
	int per_conn;
	int pins[MAX_PINS], npins;
	pid_t server_pids[MAX_SERVER_PIDS];
	int nserver_pids;
	bool json, no_tickets;
	const char *label;
};

struct bench_stats {
	uint64_t ok, refused, errors, resumed, full;
	uint64_t bytes_tx, bytes_rx;
	uint64_t alerts[256];
	uint64_t err_kinds[E_MAX];
	uint32_t *lat; /* microseconds per completed op */
	size_t nlat, caplat;
};

struct bench_conn;

struct bench_thread {
	const struct bench_opts *o;
	SSL_CTX *ctx;
	int id, epfd;
	pthread_t tid;
	struct bench_conn *conns;
	int nconns, inflight, held;
	int *free_slots, nfree;
	double next_sched, rate; /* open-loop pacing; rate 0 = closed loop */
	double last_scan;
	struct bench_stats st;
};

extern _Atomic int bench_phase;
extern _Atomic long bench_completed; /* ops finished in PH_MEASURE, any outcome */
extern _Atomic int bench_held;       /* idle mode: connections proven and held */

double bench_now(void);
void *bench_thread_main(void *arg);
int bench_conn_index(void);
void bench_ctx_callbacks(SSL_CTX *ctx);
const char *bench_err_name(int kind);

void stats_add_latency(struct bench_stats *st, double us);
void stats_merge(struct bench_stats *dst, const struct bench_stats *src);
void stats_report(const struct bench_opts *o, struct bench_stats *st, double secs,
		  double client_cpu, double server_cpu, long rss_before, long rss_after);

#endif
