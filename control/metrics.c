/* The counters, latency histogram, certificate and CRL dates and the
 * kernel's /proc/net/tls_stat as Prometheus text. */
#include "metrics.h"

#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "session_cache.h"

static void head(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Label values escape backslash, quote and newline. */
static void label(FILE *f, const char *v)
{
	for (; v && *v; v++) {
		if (*v == '\\' || *v == '"')
			fputc('\\', f);
		if (*v == '\n') {
			fputs("\\n", f);
			continue;
		}
		fputc(*v, f);
	}
}

static void counter(FILE *f, const char *name, const char *help, uint64_t v)
{
	head(f, name, "counter", help);
	fprintf(f, "%s %llu\n", name, (unsigned long long)v);
}

static void latency_histogram(FILE *f, const struct kg_worker_stats *s)
{
	uint64_t cum = 0, sum_us = 0;

	head(f, "ktlsgate_handshake_duration_seconds", "histogram",
	     "Accept to finished TLS handshake (upper bounds are powers of two microseconds).");
	for (int b = 0; b < KG_LAT_BUCKETS; b++) {
		cum += s->hs_latency[b];
		sum_us += s->hs_latency[b] * (3ull << b) / 2; /* bucket midpoint */
		fprintf(f, "ktlsgate_handshake_duration_seconds_bucket{le=\"%.6f\"} %llu\n",
			(double)(2ull << b) / 1e6, (unsigned long long)cum);
	}
	fprintf(f, "ktlsgate_handshake_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
		(unsigned long long)cum);
	fprintf(f, "ktlsgate_handshake_duration_seconds_sum %.6f\n", (double)sum_us / 1e6);
	fprintf(f, "ktlsgate_handshake_duration_seconds_count %llu\n", (unsigned long long)cum);
}

static void refusals(FILE *f, const struct kg_worker_stats *s)
{
	head(f, "ktlsgate_handshakes_refused_total", "counter", "Refused handshakes by reason.");
	for (int r = 0; r < KG_REFUSAL_COUNT; r++)
		fprintf(f, "ktlsgate_handshakes_refused_total{reason=\"%s\"} %llu\n", kg_refusal_names[r],
			(unsigned long long)s->refused[r]);
}

/* One count per failed backend attempt (connect_error for any backend). */
static void upstream_refusals(FILE *f, const struct kg_worker_stats *s)
{
	head(f, "ktlsgate_upstream_refused_total", "counter", "Failed backend attempts by reason.");
	for (int r = 0; r < KG_UP_REFUSAL_COUNT; r++)
		fprintf(f, "ktlsgate_upstream_refused_total{reason=\"%s\"} %llu\n",
			kg_up_refusal_names[r], (unsigned long long)s->upstream_refused_by[r]);
}

/* The DPDK record engine (zero when it is not in use). */
static void dpdk_counters(FILE *f, const struct kg_worker_stats *s)
{
	head(f, "ktlsgate_engine_records_total", "counter", "TLS records protected by engine.");
	fprintf(f, "ktlsgate_engine_records_total{engine=\"dpdk\",dir=\"rx\"} %llu\n",
		(unsigned long long)s->dpdk_records_rx);
	fprintf(f, "ktlsgate_engine_records_total{engine=\"dpdk\",dir=\"tx\"} %llu\n",
		(unsigned long long)s->dpdk_records_tx);
	head(f, "ktlsgate_engine_bytes_total", "counter", "Plaintext bytes through an engine.");
	fprintf(f, "ktlsgate_engine_bytes_total{engine=\"dpdk\",dir=\"rx\"} %llu\n",
		(unsigned long long)s->dpdk_bytes_rx);
	fprintf(f, "ktlsgate_engine_bytes_total{engine=\"dpdk\",dir=\"tx\"} %llu\n",
		(unsigned long long)s->dpdk_bytes_tx);
	head(f, "ktlsgate_engine_burst_size", "histogram", "Crypto operations per cryptodev burst.");
	uint64_t cum = 0;
	for (int i = 0; i < KG_BURST_BUCKETS; i++) {
		cum += s->dpdk_burst_hist[i];
		if (i < KG_BURST_BUCKETS - 1)
			fprintf(f, "ktlsgate_engine_burst_size_bucket{engine=\"dpdk\",le=\"%u\"} %llu\n",
				(2u << i) - 1, (unsigned long long)cum);
	}
	fprintf(f, "ktlsgate_engine_burst_size_bucket{engine=\"dpdk\",le=\"+Inf\"} %llu\n",
		(unsigned long long)cum);
	fprintf(f, "ktlsgate_engine_burst_size_sum{engine=\"dpdk\"} %llu\n",
		(unsigned long long)s->dpdk_burst_ops);
	fprintf(f, "ktlsgate_engine_burst_size_count{engine=\"dpdk\"} %llu\n",
		(unsigned long long)s->dpdk_bursts);
	head(f, "ktlsgate_engine_fallbacks_total", "counter",
	     "Connections that wanted an engine and were relayed by OpenSSL.");
	fprintf(f, "ktlsgate_engine_fallbacks_total{engine=\"dpdk\"} %llu\n",
		(unsigned long long)s->dpdk_fallbacks);
	counter(f, "ktlsgate_dpdk_key_updates_total", "TLS 1.3 KeyUpdates from clients (DPDK engine).",
		s->dpdk_key_updates);
	counter(f, "ktlsgate_dpdk_queue_waits_total",
		"Batches that waited for room in a worker's crypto queue.", s->dpdk_queue_waits);
}

/* One sample of a labelled family: NAME{LABEL="VALUE"} N. */
static void sample(FILE *f, const char *name, const char *label, const char *value, uint64_t n)
{
	fprintf(f, "%s{%s=\"%s\"} %llu\n", name, label, value, (unsigned long long)n);
}

/* The process-wide session cache: lookups by outcome, evictions, size. */
static void session_cache(FILE *f, const struct kg_worker_stats *s)
{
	static const char lookups[] = "ktlsgate_session_cache_lookups_total";

	head(f, lookups, "counter",
	     "Session cache lookups by result (refused: another site, rule, CRL or CA set).");
	sample(f, lookups, "result", "hit", s->session_cache_hits);
	sample(f, lookups, "result", "miss", s->session_cache_misses);
	sample(f, lookups, "result", "refused", s->session_cache_refused);
	counter(f, "ktlsgate_session_cache_evictions_total",
		"Cached sessions pushed out by newer ones (global.session_cache full).",
		s->session_cache_evictions);
	head(f, "ktlsgate_session_cache_entries", "gauge", "Sessions in the session cache now.");
	fprintf(f, "ktlsgate_session_cache_entries %u\n", kg_scache_count());
}

static void counters(FILE *f, const struct kg_worker_stats *s)
{
	head(f, "ktlsgate_connections_active", "gauge", "Connections open now.");
	fprintf(f, "ktlsgate_connections_active %llu\n", (unsigned long long)s->conns_active);
	counter(f, "ktlsgate_connections_total", "Connections accepted.", s->conns_total);
	counter(f, "ktlsgate_handshakes_ok_total", "Verified handshakes.", s->handshakes_ok);
	counter(f, "ktlsgate_handshakes_resumed_total", "Handshakes that resumed a session.",
		s->handshakes_resumed);
	counter(f, "ktlsgate_verify_cache_hits_total",
		"Full handshakes whose client chain verdict came from the verification cache.",
		s->verify_cache_hits);
	session_cache(f, s);
	refusals(f, s);
	counter(f, "ktlsgate_upstream_handshakes_total", "TLS handshakes with backends (backend_tls).",
		s->upstream_handshakes);
	counter(f, "ktlsgate_upstream_handshakes_resumed_total",
		"Backend TLS handshakes that resumed a session.", s->upstream_resumed);
	upstream_refusals(f, s);
	head(f, "ktlsgate_relayed_connections_total", "counter", "Finished connections by relay path.");
	sample(f, "ktlsgate_relayed_connections_total", "path", "ktls", s->relayed_ktls);
	sample(f, "ktlsgate_relayed_connections_total", "path", "user", s->relayed_user);
	sample(f, "ktlsgate_relayed_connections_total", "path", "dpdk", s->relayed_dpdk);
	dpdk_counters(f, s);
	counter(f, "ktlsgate_bytes_in_total", "Plaintext bytes client to backend (finished connections).",
		s->bytes_in);
	counter(f, "ktlsgate_bytes_out_total", "Plaintext bytes backend to client (finished connections).",
		s->bytes_out);
	counter(f, "ktlsgate_idle_timeouts_total", "Connections closed for idleness.", s->idle_timeouts);
	counter(f, "ktlsgate_backend_failures_total", "Clients no backend would take.", s->backend_failures);
	counter(f, "ktlsgate_connection_limit_hits_total", "Connections refused over max_connections.",
		s->conn_limit_hits);
	counter(f, "ktlsgate_io_uring_cq_overflows_total",
		"Worker loop rounds that found completions parked in the kernel (CQ full).",
		s->cq_overflows);
	counter(f, "ktlsgate_recv_buffer_ring_empty_total",
		"Receives that found the worker's buffer ring empty and took a buffer of their own.",
		s->recv_nobufs);
	latency_histogram(f, s);
}

static void cert_dates(FILE *f, const struct kg_gen *g)
{
	head(f, "ktlsgate_certificate_not_after_timestamp_seconds", "gauge",
	     "When each loaded certificate expires.");
	for (size_t i = 0; i < g->nlisteners; i++) {
		const struct kg_listener_rt *l = &g->listeners[i];
		for (size_t j = 0; j < l->nids; j++) {
			const struct kg_identity_spec *s = l->ids[j].spec;
			time_t t = 0;
			struct tm tm;
			if (ASN1_TIME_to_tm(X509_get0_notAfter(l->ids[j].leaf), &tm) == 1)
				t = timegm(&tm);
			fputs("ktlsgate_certificate_not_after_timestamp_seconds{kind=\"server\",listener=\"", f);
			label(f, l->spec->name);
			fputs("\",file=\"", f);
			label(f, s->pkcs12.path ? s->pkcs12.path : s->cert.path);
			fprintf(f, "\"} %lld\n", (long long)t);
		}
	}
}

static void crl_dates(FILE *f, const struct kg_gen *g)
{
	struct tm tm;

	head(f, "ktlsgate_crl_next_update_timestamp_seconds", "gauge",
	     "When each loaded CRL should be replaced.");
	for (size_t i = 0; i < g->nlisteners; i++)
		for (size_t s = 0; s < g->listeners[i].nsites; s++) {
			const struct kg_client_trust *t = &g->listeners[i].sites[s].trust;
			for (int k = 0; k < sk_X509_CRL_num(t->crls); k++) {
				const ASN1_TIME *next = X509_CRL_get0_nextUpdate(sk_X509_CRL_value(t->crls, k));
				long long when = next && ASN1_TIME_to_tm(next, &tm) == 1 ? (long long)timegm(&tm) : 0;
				fputs("ktlsgate_crl_next_update_timestamp_seconds{listener=\"", f);
				label(f, g->listeners[i].spec->name);
				fputs("\",site=\"", f);
				label(f, g->listeners[i].sites[s].label);
				fputs("\",file=\"", f);
				label(f, t->crl_files[k]);
				fprintf(f, "\"} %lld\n", when);
			}
		}
}

/* The kernel's kTLS counters (TlsCurrTxSw, TlsRxSw, TlsDecryptError, ...). */
static void tls_stat(FILE *f)
{
	FILE *in = fopen("/proc/net/tls_stat", "r");
	char name[64];
	unsigned long long v;

	head(f, "ktlsgate_kernel_tls_stat", "gauge", "/proc/net/tls_stat (absent without kernel TLS).");
	while (in && fscanf(in, "%63s %llu", name, &v) == 2)
		fprintf(f, "ktlsgate_kernel_tls_stat{counter=\"%s\"} %llu\n", name, v);
	if (in)
		fclose(in);
}

char *kg_metrics_text(struct kg_daemon *d)
{
	struct kg_worker_stats total = { 0 }, one;
	char *text = NULL;
	size_t len = 0;
	FILE *f;

	for (unsigned i = 0; i < d->nworkers; i++) {
		struct kg_wmsg *m = kg_wmsg_new(KG_WMSG_STATS);
		bool answered = m && kg_worker_call(&d->workers[i], m, 2000);
		if (answered)
			one = m->stats;
		kg_wmsg_put(m);
		if (!answered)
			return NULL;
		kg_stats_add(&total, &one);
	}
	f = open_memstream(&text, &len);
	if (!f)
		return NULL;
	counters(f, &total);
	pthread_mutex_lock(&d->lock);
	head(f, "ktlsgate_generation", "gauge", "Configuration generation serving new connections.");
	fprintf(f, "ktlsgate_generation %llu\n", (unsigned long long)d->gen_number);
	cert_dates(f, d->rt->gen);
	crl_dates(f, d->rt->gen);
	pthread_mutex_unlock(&d->lock);
	head(f, "ktlsgate_start_time_seconds", "gauge", "When the daemon started.");
	fprintf(f, "ktlsgate_start_time_seconds %lld\n", (long long)d->started);
	tls_stat(f);
	fclose(f);
	return text;
}
