/* Per-worker counters: written only by their worker, summed on read. */
#ifndef KG_STATS_H
#define KG_STATS_H
#include <stddef.h>
#include <stdint.h>

#define KG_LAT_BUCKETS 28 /* 1 us .. 2^28 us (4.5 min) */

/* The bucket of a handshake latency. */
static inline unsigned kg_lat_bucket(uint64_t us)
{
	unsigned b = 0;

	while (us > 1 && b < KG_LAT_BUCKETS - 1) {
		us >>= 1;
		b++;
	}
	return b;
}

/* Why a handshake was refused: the access log's result=, one counter each. */
#define KG_REFUSAL_REASONS(X)                                                  \
	X(no_certificate) X(unknown_ca) X(certificate_expired)                  \
	X(certificate_not_yet_valid) X(certificate_revoked) X(bad_signature)    \
	X(bad_purpose) X(chain_too_long) X(crl_missing) X(crl_stale)            \
	X(access_denied) X(bad_certificate) X(protocol_version)                 \
	X(no_shared_cipher) X(handshake_failed) X(handshake_timeout)            \
	X(client_closed) X(internal_error)

enum kg_refusal {
#define KG_REFUSAL_ENUM(name) KG_REFUSED_##name,
	KG_REFUSAL_REASONS(KG_REFUSAL_ENUM)
#undef KG_REFUSAL_ENUM
	KG_REFUSAL_COUNT
};

extern const char *const kg_refusal_names[KG_REFUSAL_COUNT];
/* The counter for a reason string; unknown ones count as handshake_failed. */
enum kg_refusal kg_refusal_of(const char *reason);

/* Why a backend attempt failed: result=upstream_<reason>, one counter each.
 * connect_error: the TCP connect failed or timed out (any backend). */
#define KG_UP_REFUSAL_REASONS(X)                                               \
	X(name_mismatch) X(unknown_ca) X(certificate_expired)                   \
	X(certificate_not_yet_valid) X(certificate_revoked) X(bad_signature)    \
	X(bad_purpose) X(chain_too_long) X(crl_missing) X(crl_stale)            \
	X(bad_certificate) X(no_client_cert) X(client_cert_rejected)            \
	X(handshake_failed) X(handshake_timeout) X(connect_error)

enum kg_up_refusal {
#define KG_UP_REFUSAL_ENUM(name) KG_UP_REFUSED_##name,
	KG_UP_REFUSAL_REASONS(KG_UP_REFUSAL_ENUM)
#undef KG_UP_REFUSAL_ENUM
	KG_UP_REFUSAL_COUNT
};

extern const char *const kg_up_refusal_names[KG_UP_REFUSAL_COUNT];
/* The same as access log results: "upstream_<reason>" (static strings). */
extern const char *const kg_up_results[KG_UP_REFUSAL_COUNT];
/* The counter for "upstream_<reason>"; unknown ones count as handshake_failed. */
enum kg_up_refusal kg_up_refusal_of(const char *reason);

#define KG_BURST_BUCKETS 8 /* crypto ops per DPDK burst: 1, 2-3, 4-7, ... 128+ */

static inline unsigned kg_burst_bucket(uint64_t n)
{
	unsigned b = 0;

	while (n > 1 && b < KG_BURST_BUCKETS - 1) {
		n >>= 1;
		b++;
	}
	return b;
}

struct kg_worker_stats;
/* t += s, field by field (every field is a uint64_t counter). */
void kg_stats_add(struct kg_worker_stats *t, const struct kg_worker_stats *s);
/* The upper bound (us) of the latency bucket holding quantile q; 0 if empty. */
uint64_t kg_stats_latency_quantile(const struct kg_worker_stats *s, double q);

struct kg_worker_stats {
	uint64_t conns_total;
	uint64_t conns_active;
	uint64_t handshakes_ok;
	uint64_t handshakes_refused;
	uint64_t refused[KG_REFUSAL_COUNT];
	uint64_t handshakes_resumed;
	uint64_t verify_cache_hits; /* client chains not verified again (verify_cache.h) */
	uint64_t session_cache_hits;      /* sessions found and allowed to resume */
	uint64_t session_cache_misses;    /* ids not (or no longer) in the cache */
	uint64_t session_cache_refused;   /* found, but another site, rule, CRL or CA set */
	uint64_t session_cache_evictions; /* pushed out by newer ones (session_cache full) */
	uint64_t handshake_timeouts;
	uint64_t idle_timeouts;
	uint64_t connect_timeouts;
	uint64_t backend_failures;
	uint64_t conn_limit_hits;
	uint64_t source_limit_hits; /* refused by --max-conns-per-source */
	uint64_t accept_errors;     /* EMFILE and friends: accepting paused meanwhile */
	uint64_t cq_overflows;      /* loop rounds that found completions parked in the kernel */
	uint64_t bytes_in;  /* plaintext client -> backend */
	uint64_t bytes_out; /* plaintext backend -> client */
	uint64_t relayed_ktls, relayed_user; /* finished connections, by relay path */
	uint64_t upstream_handshakes;  /* TLS handshakes with backends (backend_tls) */
	uint64_t upstream_resumed;     /* ... that resumed a session */
	uint64_t upstream_refused;     /* failed backend attempts: upstream_refused_by summed */
	uint64_t upstream_refused_by[KG_UP_REFUSAL_COUNT];
	uint64_t relayed_dpdk;
	/* DPDK record engine: records and plaintext bytes each way, bursts. */
	uint64_t dpdk_records_rx, dpdk_records_tx, dpdk_bytes_rx, dpdk_bytes_tx;
	uint64_t dpdk_bursts, dpdk_burst_ops;
	uint64_t dpdk_burst_hist[KG_BURST_BUCKETS];
	uint64_t dpdk_fallbacks;   /* wanted DPDK, relayed with OpenSSL instead */
	uint64_t dpdk_key_updates; /* TLS 1.3 KeyUpdates from clients */
	uint64_t dpdk_queue_waits; /* a batch waited for room in the crypto queue */
	uint64_t recv_nobufs;      /* receives that found the buffer ring empty (bufpool.h) */
	uint64_t hs_latency[KG_LAT_BUCKETS]; /* accept to handshake done: [2^i, 2^(i+1)) us */
};
#endif
