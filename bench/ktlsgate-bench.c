/* ktlsgate-bench: an mTLS load generator that presents a client certificate chain and
 * only counts a connection as ok once the backend answered through the proxy, i.e. once
 * the server has verified the client. See bench/README.md. */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/pkcs12.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

_Atomic int bench_phase = PH_WARMUP;
_Atomic long bench_completed;
_Atomic int bench_held;

static void usage(void)
{
	fputs("usage: ktlsgate-bench --target HOST:PORT --cert CHAIN --key KEY [options]\n"
	      "  --mode handshake|resume|request|bulk|idle   (default handshake)\n"
	      "  -c, --concurrency N   connections in flight (idle: connections held)  [16]\n"
	      "  -t, --threads N       epoll threads                                    [1]\n"
	      "  -d, --duration S      measured seconds (idle: hold time)               [5]\n"
	      "  -n, --count N         stop after N completed operations instead\n"
	      "  -w, --warmup S        seconds run and discarded before measuring       [1]\n"
	      "  --rate R              open loop: start R operations/s (latency from schedule)\n"
	      "  --timeout S           per-operation timeout                            [10]\n"
	      "  --tls 1.2|1.3         --ciphers LIST (TLS 1.2)  --ciphersuites LIST (TLS 1.3)\n"
	      "  --groups LIST  --sigalgs LIST  --sni NAME  --no-tickets\n"
	      "  --ca FILE             verify the server certificate (default: no verification)\n"
	      "  --cert FILE --key FILE  client chain (leaf first, then intermediates) and key\n"
	      "  --p12 FILE [--p12-pass PASS]  client identity from PKCS#12 instead\n"
	      "  --request-size N --response-size N  request mode sizes [1024, 1024]\n"
	      "  --per-conn N          exchanges per connection (request/bulk)          [1]\n"
	      "  --bulk-size N[KMG] --bulk-dir down|up|both                       [64M down]\n"
	      "  --cpus LIST           pin thread i to the i-th CPU of LIST (e.g. 1 or 1,1)\n"
	      "  --server-pid PID      repeatable: report server CPU/RSS deltas from /proc\n"
	      "  --json                one JSON object instead of the summary; --label TEXT\n",
	      stderr);
	exit(2);
}

static uint64_t parse_size(const char *s)
{
	char *end;
	double v = strtod(s, &end);
	uint64_t mult = 1;

	switch (*end) {
	case 'k': case 'K': mult = 1ull << 10; break;
	case 'm': case 'M': mult = 1ull << 20; break;
	case 'g': case 'G': mult = 1ull << 30; break;
	case 0: break;
	default: usage();
	}
	if (v < 0)
		usage();
	return (uint64_t)(v * (double)mult);
}

static int parse_enum(const char *s, const char *const *names, int n)
{
	for (int i = 0; i < n; i++)
		if (!strcmp(s, names[i]))
			return i;
	usage();
	return -1;
}

static void parse_cpus(struct bench_opts *o, const char *s)
{
	char *copy = strdup(s), *save = NULL;

	for (char *tok = strtok_r(copy, ",", &save); tok && o->npins < MAX_PINS;
	     tok = strtok_r(NULL, ",", &save))
		o->pins[o->npins++] = atoi(tok);
	free(copy);
}

static void parse_target(struct bench_opts *o)
{
	static struct sockaddr_storage ss;
	char host[256];
	const char *colon = strrchr(o->target, ':');
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai;

	if (!colon || (size_t)(colon - o->target) >= sizeof(host))
		usage();
	memcpy(host, o->target, (size_t)(colon - o->target));
	host[colon - o->target] = 0;
	if (host[0] == '[') { /* [::1]:443 */
		memmove(host, host + 1, strlen(host));
		host[strcspn(host, "]")] = 0;
	}
	if (getaddrinfo(host, colon + 1, &hints, &ai) != 0) {
		fprintf(stderr, "ktlsgate-bench: --target %s: cannot resolve\n", o->target);
		exit(2);
	}
	memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
	o->addr = &ss;
	o->addrlen = ai->ai_addrlen;
	freeaddrinfo(ai);
}

enum { O_MODE = 256, O_RATE, O_TIMEOUT, O_TLS, O_CIPHERS, O_SUITES, O_GROUPS, O_SIGALGS,
       O_SNI, O_CA, O_NOVERIFY, O_CERT, O_KEY, O_P12, O_P12PASS, O_REQ, O_RESP, O_PERCONN,
       O_BULK, O_BULKDIR, O_CPUS, O_PID, O_JSON, O_LABEL, O_TARGET, O_NOTICKETS };

static const struct option long_opts[] = {
	{ "target", 1, 0, O_TARGET }, { "mode", 1, 0, O_MODE },
	{ "concurrency", 1, 0, 'c' }, { "threads", 1, 0, 't' }, { "duration", 1, 0, 'd' },
	{ "count", 1, 0, 'n' }, { "warmup", 1, 0, 'w' }, { "rate", 1, 0, O_RATE },
	{ "timeout", 1, 0, O_TIMEOUT }, { "tls", 1, 0, O_TLS }, { "ciphers", 1, 0, O_CIPHERS },
	{ "ciphersuites", 1, 0, O_SUITES }, { "groups", 1, 0, O_GROUPS },
	{ "sigalgs", 1, 0, O_SIGALGS }, { "sni", 1, 0, O_SNI }, { "ca", 1, 0, O_CA },
	{ "no-verify", 0, 0, O_NOVERIFY }, { "cert", 1, 0, O_CERT }, { "key", 1, 0, O_KEY },
	{ "p12", 1, 0, O_P12 }, { "p12-pass", 1, 0, O_P12PASS },
	{ "request-size", 1, 0, O_REQ }, { "response-size", 1, 0, O_RESP },
	{ "per-conn", 1, 0, O_PERCONN }, { "bulk-size", 1, 0, O_BULK },
	{ "bulk-dir", 1, 0, O_BULKDIR }, { "cpus", 1, 0, O_CPUS },
	{ "server-pid", 1, 0, O_PID }, { "json", 0, 0, O_JSON }, { "label", 1, 0, O_LABEL },
	{ "no-tickets", 0, 0, O_NOTICKETS }, { "help", 0, 0, 'h' }, { 0, 0, 0, 0 } };

/* Options that take a string go straight into the struct. */
static const char **string_opt(struct bench_opts *o, int ch)
{
	switch (ch) {
	case O_TARGET: return &o->target;
	case O_CIPHERS: return &o->ciphers;
	case O_SUITES: return &o->ciphersuites;
	case O_GROUPS: return &o->groups;
	case O_SIGALGS: return &o->sigalgs;
	case O_SNI: return &o->sni;
	case O_CA: return &o->cafile;
	case O_CERT: return &o->cert;
	case O_KEY: return &o->key;
	case O_P12: return &o->p12;
	case O_P12PASS: return &o->p12_pass;
	case O_LABEL: return &o->label;
	default: return NULL;
	}
}

static void parse_one(struct bench_opts *o, int ch, const char *arg)
{
	static const char *const modes[] = { "handshake", "resume", "request", "bulk", "idle" };
	static const char *const dirs[] = { "down", "up", "both" };
	static const char *const tls[] = { "1.2", "1.3" };
	const char **str = string_opt(o, ch);

	if (str) {
		*str = arg;
		return;
	}
	switch (ch) {
	case O_MODE: o->mode = (enum bench_mode)parse_enum(arg, modes, 5); break;
	case 'c': o->concurrency = atoi(arg); break;
	case 't': o->threads = atoi(arg); break;
	case 'd': o->duration = atof(arg); break;
	case 'n': o->count = atol(arg); break;
	case 'w': o->warmup = atof(arg); break;
	case O_RATE: o->rate = atof(arg); break;
	case O_TIMEOUT: o->timeout = atof(arg); break;
	case O_TLS: o->tls_version = 12 + parse_enum(arg, tls, 2); break;
	case O_NOVERIFY: o->cafile = NULL; break;
	case O_REQ: o->req_size = parse_size(arg); break;
	case O_RESP: o->resp_size = parse_size(arg); break;
	case O_PERCONN: o->per_conn = atoi(arg); break;
	case O_BULK: o->bulk_size = parse_size(arg); break;
	case O_BULKDIR: o->dir = (enum bulk_dir)parse_enum(arg, dirs, 3); break;
	case O_CPUS: parse_cpus(o, arg); break;
	case O_PID:
		if (o->nserver_pids < MAX_SERVER_PIDS)
			o->server_pids[o->nserver_pids++] = atoi(arg);
		break;
	case O_JSON: o->json = true; break;
	case O_NOTICKETS: o->no_tickets = true; break;
	default: usage();
	}
}

static void parse_args(struct bench_opts *o, int argc, char **argv)
{
	int ch;

	*o = (struct bench_opts){ .concurrency = 16, .threads = 1, .duration = 5, .warmup = 1,
		.timeout = 10, .req_size = 1024, .resp_size = 1024, .bulk_size = 64ull << 20,
		.per_conn = 1 };
	while ((ch = getopt_long(argc, argv, "c:t:d:n:w:h", long_opts, NULL)) != -1)
		parse_one(o, ch, optarg);
	if (optind != argc || !o->target || (!o->p12 && (!o->cert || !o->key)))
		usage();
	if (o->threads < 1 || o->concurrency < o->threads || o->per_conn < 1 ||
	    o->duration < 0 || o->warmup < 0 || o->timeout <= 0)
		usage();
	if (o->mode == M_IDLE)
		o->warmup = 0; /* every idle connection is the measurement */
	parse_target(o);
}

static int load_p12(SSL_CTX *ctx, const struct bench_opts *o)
{
	FILE *f = fopen(o->p12, "rb");
	PKCS12 *p12 = f ? d2i_PKCS12_fp(f, NULL) : NULL;
	EVP_PKEY *key = NULL;
	X509 *cert = NULL;
	STACK_OF(X509) *chain = NULL;
	int ret = -1;

	if (!p12 || !PKCS12_parse(p12, o->p12_pass ? o->p12_pass : "", &key, &cert, &chain))
		goto out;
	if (SSL_CTX_use_cert_and_key(ctx, cert, key, chain, 1) == 1)
		ret = 0;
out:
	sk_X509_pop_free(chain, X509_free);
	X509_free(cert);
	EVP_PKEY_free(key);
	PKCS12_free(p12);
	if (f)
		fclose(f);
	return ret;
}

static int ctx_identity(SSL_CTX *ctx, const struct bench_opts *o, const char **what)
{
	if (o->p12) {
		*what = o->p12;
		return load_p12(ctx, o);
	}
	*what = o->cert;
	if (SSL_CTX_use_certificate_chain_file(ctx, o->cert) != 1)
		return -1;
	*what = o->key;
	if (SSL_CTX_use_PrivateKey_file(ctx, o->key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1)
		return -1;
	return 0;
}

/* Returns the error context on failure, NULL when every setting was accepted. */
static const char *ctx_policy(SSL_CTX *ctx, const struct bench_opts *o)
{
	int v = o->tls_version == 12 ? TLS1_2_VERSION : TLS1_3_VERSION;

	SSL_CTX_set_min_proto_version(ctx, o->tls_version ? v : TLS1_2_VERSION);
	SSL_CTX_set_max_proto_version(ctx, o->tls_version ? v : TLS1_3_VERSION);
	if (o->ciphers && !SSL_CTX_set_cipher_list(ctx, o->ciphers))
		return "--ciphers";
	if (o->ciphersuites && !SSL_CTX_set_ciphersuites(ctx, o->ciphersuites))
		return "--ciphersuites";
	if (o->groups && !SSL_CTX_set1_groups_list(ctx, o->groups))
		return "--groups";
	if (o->sigalgs && !SSL_CTX_set1_sigalgs_list(ctx, o->sigalgs))
		return "--sigalgs";
	if (o->cafile && !SSL_CTX_load_verify_locations(ctx, o->cafile, NULL))
		return o->cafile;
	SSL_CTX_set_verify(ctx, o->cafile ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
	if (o->no_tickets)
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
			 SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	return NULL;
}

static SSL_CTX *make_ctx(const struct bench_opts *o)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	const char *what = "SSL_CTX_new";

	if (!ctx)
		goto fail;
	if ((what = ctx_policy(ctx, o)) != NULL || ctx_identity(ctx, o, &what) < 0)
		goto fail;
	bench_ctx_callbacks(ctx);
	return ctx;
fail:
	fprintf(stderr, "ktlsgate-bench: %s: ", what);
	ERR_print_errors_fp(stderr);
	fputc('\n', stderr);
	SSL_CTX_free(ctx);
	exit(2);
}

/* CPU seconds (user + system, all threads) of the server processes, from /proc. */
static double server_cpu(const struct bench_opts *o)
{
	double ticks = 0, hz = (double)sysconf(_SC_CLK_TCK);

	for (int i = 0; i < o->nserver_pids; i++) {
		char path[64], buf[1024];
		unsigned long long ut, st;
		FILE *f;

		snprintf(path, sizeof(path), "/proc/%d/stat", o->server_pids[i]);
		if (!(f = fopen(path, "r")))
			continue;
		size_t n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = 0;
		/* The command name may contain spaces; fields restart after the last ')'. */
		char *p = strrchr(buf, ')');
		if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
				&ut, &st) == 2)
			ticks += (double)(ut + st);
	}
	return ticks / hz;
}

static long server_rss_kb(const struct bench_opts *o)
{
	long total = 0;

	for (int i = 0; i < o->nserver_pids; i++) {
		char path[64], line[256];
		long kb;
		FILE *f;

		snprintf(path, sizeof(path), "/proc/%d/status", o->server_pids[i]);
		if (!(f = fopen(path, "r")))
			continue;
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "VmRSS: %ld", &kb) == 1)
				total += kb;
		fclose(f);
	}
	return total;
}

static double rusage_cpu(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void sleep_s(double s)
{
	struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void start_threads(const struct bench_opts *o, SSL_CTX *ctx, struct bench_thread *th)
{
	for (int i = 0; i < o->threads; i++) {
		th[i] = (struct bench_thread){ .o = o, .ctx = ctx, .id = i };
		th[i].nconns = o->concurrency / o->threads + (i < o->concurrency % o->threads);
		th[i].rate = o->rate / o->threads;
		if (pthread_create(&th[i].tid, NULL, bench_thread_main, &th[i]) != 0) {
			fprintf(stderr, "ktlsgate-bench: cannot start thread %d\n", i);
			exit(1);
		}
		if (o->npins) {
			cpu_set_t set;

			CPU_ZERO(&set);
			CPU_SET(o->pins[i % o->npins], &set);
			pthread_setaffinity_np(th[i].tid, sizeof(set), &set);
		}
	}
}

/* Idle mode: wait (bounded) until every connection proved itself, then measure. */
static void wait_idle_ready(const struct bench_opts *o)
{
	double deadline = bench_now() + 30 + o->concurrency / 500.0;

	while (atomic_load(&bench_held) < o->concurrency && bench_now() < deadline)
		sleep_s(0.01);
}

static void wait_measured(const struct bench_opts *o)
{
	if (o->count <= 0 || o->mode == M_IDLE) {
		sleep_s(o->duration);
		return;
	}
	while (atomic_load(&bench_completed) < o->count)
		sleep_s(0.001);
}

int main(int argc, char **argv)
{
	struct bench_opts o;
	struct bench_stats total = { 0 };
	long rss_before, rss_after;
	double t0, t1, cpu0, cpu1, scpu0, scpu1;

	parse_args(&o, argc, argv);
	signal(SIGPIPE, SIG_IGN);
	SSL_CTX *ctx = make_ctx(&o);
	struct bench_thread *th = calloc((size_t)o.threads, sizeof(*th));
	if (!th)
		return 1;
	bp_pattern(); /* built once before the threads share it */
	bench_conn_index();
	rss_before = server_rss_kb(&o);
	bench_phase = o.warmup > 0 ? PH_WARMUP : PH_MEASURE;
	start_threads(&o, ctx, th);
	if (o.warmup > 0)
		sleep_s(o.warmup);
	if (o.mode == M_IDLE)
		wait_idle_ready(&o);
	rss_after = server_rss_kb(&o);
	t0 = bench_now(), cpu0 = rusage_cpu(), scpu0 = server_cpu(&o);
	bench_phase = PH_MEASURE;
	wait_measured(&o);
	t1 = bench_now(), cpu1 = rusage_cpu(), scpu1 = server_cpu(&o);
	if (o.mode != M_IDLE)
		rss_after = server_rss_kb(&o);
	bench_phase = PH_STOP;
	for (int i = 0; i < o.threads; i++) {
		pthread_join(th[i].tid, NULL);
		stats_merge(&total, &th[i].st);
	}
	if (o.mode == M_IDLE)
		total.ok = (uint64_t)atomic_load(&bench_held);
	stats_report(&o, &total, t1 - t0, cpu1 - cpu0, scpu1 - scpu0, rss_before, rss_after);
	SSL_CTX_free(ctx);
	return 0;
}
