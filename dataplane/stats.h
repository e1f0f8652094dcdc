/* Per-worker counters: written only by their worker, summed on read. */
#ifndef KG_STATS_H
#define KG_STATS_H
#include <stdint.h>

struct kg_worker_stats {
	uint64_t conns_total;
	uint64_t conns_active;
	uint64_t handshakes_ok;
	uint64_t handshakes_refused;
	uint64_t handshakes_resumed;
	uint64_t handshake_timeouts;
	uint64_t idle_timeouts;
	uint64_t connect_timeouts;
	uint64_t backend_failures;
	uint64_t conn_limit_hits;
	uint64_t source_limit_hits; /* refused by --max-conns-per-source */
	uint64_t accept_errors;     /* EMFILE and friends: accepting paused meanwhile */
	uint64_t bytes_in;  /* plaintext client -> backend */
	uint64_t bytes_out; /* plaintext backend -> client */
};
#endif
