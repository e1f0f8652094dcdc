/* ktlsgate-bench accounting and output: latencies are kept exactly (4 bytes per op) so
 * that p99.9 is a real order statistic, not a histogram bucket. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

void stats_add_latency(struct bench_stats *st, double us)
{
	if (st->nlat == st->caplat) {
		size_t cap = st->caplat ? st->caplat * 2 : 4096;
		uint32_t *p = realloc(st->lat, cap * sizeof(*p));

		if (!p)
			return; /* keep counting; only the percentiles lose a sample */
		st->lat = p;
		st->caplat = cap;
	}
	st->lat[st->nlat++] = us < 0 ? 0 : us > 4e9 ? 4000000000u : (uint32_t)us;
}

void stats_merge(struct bench_stats *dst, const struct bench_stats *src)
{
	dst->ok += src->ok;
	dst->refused += src->refused;
	dst->errors += src->errors;
	dst->resumed += src->resumed;
	dst->full += src->full;
	dst->bytes_tx += src->bytes_tx;
	dst->bytes_rx += src->bytes_rx;
	for (int i = 0; i < 256; i++)
		dst->alerts[i] += src->alerts[i];
	for (int i = 0; i < E_MAX; i++)
		dst->err_kinds[i] += src->err_kinds[i];
	for (size_t i = 0; i < src->nlat; i++)
		stats_add_latency(dst, src->lat[i]);
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static double pct(const struct bench_stats *st, double p)
{
	if (!st->nlat)
		return 0;
	size_t i = (size_t)(p / 100.0 * (double)(st->nlat - 1) + 0.5);
	return st->lat[i];
}

/* "unknown CA" -> "unknown_ca": the same spelling as ktlsgate's refusal reasons. */
static void alert_name(int desc, char *out, size_t len)
{
	const char *s = SSL_alert_desc_string_long(desc);
	size_t i;

	for (i = 0; s[i] && i + 1 < len; i++)
		out[i] = s[i] == ' ' ? '_' : (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
	out[i] = 0;
}

static const char *mode_name(enum bench_mode m)
{
	static const char *const n[] = { "handshake", "resume", "request", "bulk", "idle" };
	return n[m];
}

static void print_counts_json(const struct bench_stats *st)
{
	char name[64];
	const char *sep = "";

	printf("\"alerts\":{");
	for (int i = 0; i < 256; i++)
		if (st->alerts[i]) {
			alert_name(i, name, sizeof(name));
			printf("%s\"%s\":%llu", sep, name, (unsigned long long)st->alerts[i]);
			sep = ",";
		}
	printf("},\"error_kinds\":{");
	sep = "";
	for (int i = 0; i < E_MAX; i++)
		if (st->err_kinds[i]) {
			printf("%s\"%s\":%llu", sep, bench_err_name(i),
			       (unsigned long long)st->err_kinds[i]);
			sep = ",";
		}
	printf("}");
}

struct report {
	double secs, client_cpu, server_cpu;
	long rss_before, rss_after;
};

static void print_json(const struct bench_opts *o, const struct bench_stats *st,
		       const struct report *r)
{
	double ops = (double)(st->ok ? st->ok : 1);

	printf("{\"label\":\"%s\",\"mode\":\"%s\",\"target\":\"%s\",\"concurrency\":%d,"
	       "\"threads\":%d,\"duration_s\":%.3f,\"ok\":%llu,\"refused\":%llu,\"errors\":%llu,"
	       "\"rate\":%.1f,\"full\":%llu,\"resumed\":%llu,", o->label ? o->label : "",
	       mode_name(o->mode), o->target, o->concurrency, o->threads, r->secs,
	       (unsigned long long)st->ok, (unsigned long long)st->refused,
	       (unsigned long long)st->errors, (double)st->ok / r->secs,
	       (unsigned long long)st->full, (unsigned long long)st->resumed);
	printf("\"latency_us\":{\"p50\":%.0f,\"p90\":%.0f,\"p99\":%.0f,\"p99.9\":%.0f,"
	       "\"max\":%.0f},", pct(st, 50), pct(st, 90), pct(st, 99), pct(st, 99.9),
	       pct(st, 100));
	printf("\"bytes_tx\":%llu,\"bytes_rx\":%llu,", (unsigned long long)st->bytes_tx,
	       (unsigned long long)st->bytes_rx);
	print_counts_json(st);
	printf(",\"client_cpu_s\":%.4f,\"client_cpu_us_per_op\":%.1f", r->client_cpu,
	       r->client_cpu * 1e6 / ops);
	if (o->nserver_pids)
		printf(",\"server\":{\"cpu_s\":%.4f,\"cpu_us_per_op\":%.1f,\"rss_before_kb\":%ld,"
		       "\"rss_after_kb\":%ld}", r->server_cpu, r->server_cpu * 1e6 / ops,
		       r->rss_before, r->rss_after);
	printf("}\n");
}

static void print_human(const struct bench_opts *o, const struct bench_stats *st,
			const struct report *r)
{
	char name[64];

	printf("%s %s: %.2f s, %llu ok (%llu full, %llu resumed), %llu refused, %llu errors, "
	       "%.1f ok/s\n", mode_name(o->mode), o->target, r->secs,
	       (unsigned long long)st->ok, (unsigned long long)st->full,
	       (unsigned long long)st->resumed, (unsigned long long)st->refused,
	       (unsigned long long)st->errors, (double)st->ok / r->secs);
	printf("  latency us: p50 %.0f  p90 %.0f  p99 %.0f  p99.9 %.0f  max %.0f\n",
	       pct(st, 50), pct(st, 90), pct(st, 99), pct(st, 99.9), pct(st, 100));
	printf("  bytes: tx %llu rx %llu; client cpu %.3f s (%.1f us/op)\n",
	       (unsigned long long)st->bytes_tx, (unsigned long long)st->bytes_rx,
	       r->client_cpu, st->ok ? r->client_cpu * 1e6 / (double)st->ok : 0);
	for (int i = 0; i < 256; i++)
		if (st->alerts[i]) {
			alert_name(i, name, sizeof(name));
			printf("  refused by alert %s: %llu\n", name, (unsigned long long)st->alerts[i]);
		}
	for (int i = 0; i < E_MAX; i++)
		if (st->err_kinds[i])
			printf("  error %s: %llu\n", bench_err_name(i),
			       (unsigned long long)st->err_kinds[i]);
	if (o->nserver_pids)
		printf("  server cpu %.3f s (%.1f us/op), rss %ld -> %ld KiB\n", r->server_cpu,
		       st->ok ? r->server_cpu * 1e6 / (double)st->ok : 0, r->rss_before,
		       r->rss_after);
}

void stats_report(const struct bench_opts *o, struct bench_stats *st, double secs,
		  double client_cpu, double server_cpu, long rss_before, long rss_after)
{
	struct report r = { secs > 0 ? secs : 1e-9, client_cpu, server_cpu, rss_before,
			    rss_after };

	qsort(st->lat, st->nlat, sizeof(*st->lat), cmp_u32);
	if (o->json)
		print_json(o, st, &r);
	else
		print_human(o, st, &r);
	fflush(stdout);
}
