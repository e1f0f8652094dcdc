/* ktlsgate daemon start-up: validate everything before serving, start one
 * pinned worker per CPU, wait for signals, drain on SIGTERM/SIGINT. */
#include <errno.h>
#include <openssl/ssl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#ifdef KG_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "ktls_keys.h"
#include "ktls_probe.h"
#include "log.h"
#include "options.h"
#include "privdrop.h"
#include "tlsctx.h"
#include "worker.h"

#define EXIT_CONFIG 2

static void die(const char *msg)
{
	fprintf(stderr, "ktlsgate: %s\n", msg);
	exit(EXIT_CONFIG);
}

/* The CPUs we may run on, in order (respects taskset/cgroup limits). */
static int online_cpus(int *cpus, int max)
{
	cpu_set_t set;
	int n = 0;

	if (sched_getaffinity(0, sizeof(set), &set) < 0)
		return 0;
	for (int cpu = 0; cpu < CPU_SETSIZE && n < max; cpu++)
		if (CPU_ISSET(cpu, &set))
			cpus[n++] = cpu;
	return n;
}

static void block_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGHUP);
	/* Workers inherit the mask: only the main thread takes signals. */
	pthread_sigmask(SIG_BLOCK, set, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static void log_start(const struct kg_runtime *rt, unsigned nworkers)
{
	const struct kg_options *o = rt->opt;
	char listen[512] = "", backends[512] = "";

	for (size_t i = 0; i < o->nlisten; i++)
		snprintf(listen + strlen(listen), sizeof(listen) - strlen(listen), "%s%s",
			 i ? "," : "", o->listen[i].text);
	for (size_t i = 0; i < o->nbackends; i++)
		snprintf(backends + strlen(backends), sizeof(backends) - strlen(backends), "%s%s",
			 i ? "," : "", o->backends[i].text);
	struct kg_field f[] = {
		KG_S("version", KG_VERSION),
		KG_I("workers", nworkers),
		KG_S("listen", listen),
		KG_S("backends", backends),
		KG_S("relay", rt->ktls ? "ktls" : "user"),
	};
	kg_log_event(KG_LOG_INFO, "start", f, KG_NFIELDS(f));
}

static unsigned ktls_cipher_bits(const struct kg_ktls_caps *caps)
{
	static const unsigned bits[KG_KTLS_NCIPHERS] = {
		KG_KTLS_BIT_AES_128_GCM, KG_KTLS_BIT_AES_256_GCM, KG_KTLS_BIT_CHACHA20_POLY1305,
	};
	unsigned mask = 0;

	for (int c = 0; c < KG_KTLS_NCIPHERS; c++)
		if (caps->tx[c] && caps->rx[c])
			mask |= bits[c];
	return mask;
}

/* Probe once; say in one line what the data path will be, and why. */
static void setup_ktls(struct kg_runtime *rt)
{
	struct kg_ktls_caps caps;
	char desc[256], err[320];

	if (rt->opt->ktls == KG_KTLS_OFF) {
		kg_log_msg(KG_LOG_INFO, "ktls", "kTLS: off (--ktls off) - using userspace relay");
		return;
	}
	kg_ktls_probe(&caps);
	kg_ktls_caps_describe(&caps, desc, sizeof(desc));
	if (!caps.available && rt->opt->ktls == KG_KTLS_REQUIRED) {
		snprintf(err, sizeof(err), "--ktls required: kernel TLS %s", desc);
		die(err);
	}
	rt->ktls = caps.available;
	rt->ktls_ciphers = ktls_cipher_bits(&caps);
	kg_log_msg(caps.available ? KG_LOG_INFO : KG_LOG_WARN, "ktls", "kTLS: %s%s", desc,
		   caps.available ? "" : " - using userspace relay");
}

/* --check: everything start-up would do, without serving. */
static int run_check(struct kg_runtime *rt)
{
	struct kg_worker *w = malloc(sizeof(*w));
	char err[512];

	if (!w)
		die("out of memory");
	if (kg_worker_init(w, 0, 0, rt, err, sizeof(err)) < 0)
		die(err);
	for (size_t i = 0; i < w->nlisteners; i++)
		close(w->listeners[i].fd);
	close(w->wake_fd);
	io_uring_queue_exit(&w->ring);
	free(w);
	if (rt->opt->ktls == KG_KTLS_REQUIRED)
		setup_ktls(rt); /* dies when the kernel cannot */
	printf("ktlsgate: check ok\n");
	return 0;
}

/* Binds every listener before anything is logged: bad input fails first. */
static struct kg_worker *init_workers(const struct kg_runtime *rt, unsigned *nworkers)
{
	int cpus[CPU_SETSIZE];
	int ncpus = online_cpus(cpus, CPU_SETSIZE);
	unsigned n = rt->opt->workers ? rt->opt->workers : (unsigned)(ncpus > 0 ? ncpus : 1);
	struct kg_worker *workers = aligned_alloc(16, sizeof(*workers) * n);
	char err[512];

	if (!workers)
		die("out of memory");
	for (unsigned i = 0; i < n; i++)
		if (kg_worker_init(&workers[i], i, ncpus ? cpus[i % (unsigned)ncpus] : 0, rt,
				   err, sizeof(err)) < 0)
			die(err);
	*nworkers = n;
	return workers;
}

static void start_workers(struct kg_worker *workers, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (kg_worker_start(&workers[i]) != 0)
			die("cannot start worker thread");
}

/* Type=notify: systemd starts dependants only once we really accept. */
static void notify(const char *state)
{
#ifdef KG_HAVE_SYSTEMD
	sd_notify(0, state);
#else
	(void)state;
#endif
}

static void wait_for_stop(const sigset_t *set)
{
	int sig;

	for (;;) {
		if (sigwait(set, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			kg_log_msg(KG_LOG_INFO, "sighup", "nothing to reload: settings come from the command line");
			continue;
		}
		kg_log_msg(KG_LOG_INFO, "stopping", "signal %s: draining connections", strsignal(sig));
		return;
	}
}

int main(int argc, char **argv)
{
	struct kg_options opt;
	struct kg_runtime rt = { .opt = &opt };
	char err[1024];
	sigset_t sigs;
	unsigned nworkers = 0;
	struct kg_privdrop pd;

	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0); /* no core dumps or ptrace peeks at keys */
	switch (kg_options_parse(argc, argv, &opt, err, sizeof(err))) {
	case KG_PARSE_EXIT_OK:
		return 0;
	case KG_PARSE_ERROR:
		die(err);
		break;
	case KG_PARSE_OK:
		break;
	}
	kg_log_set_format(opt.log_format);
	if (kg_privdrop_prepare(opt.user, opt.group, &pd, err, sizeof(err)) < 0)
		die(err);
	rt.ssl_ctx = kg_tlsctx_new(&opt, err, sizeof(err));
	if (!rt.ssl_ctx)
		die(err);
	kg_ktls_prepare_ctx(rt.ssl_ctx);
	if (opt.check) {
		int rc = run_check(&rt);
		SSL_CTX_free(rt.ssl_ctx);
		return rc;
	}

	block_signals(&sigs);
	struct kg_worker *workers = init_workers(&rt, &nworkers);
	setup_ktls(&rt);
	if (kg_privdrop_apply(&pd, err, sizeof(err)) < 0)
		die(err);
	start_workers(workers, nworkers);
	log_start(&rt, nworkers);
	kg_log_msg(KG_LOG_INFO, "ready", "accepting connections");
	notify("READY=1\nSTATUS=accepting connections");
	wait_for_stop(&sigs);
	notify("STOPPING=1\nSTATUS=draining connections");
	for (unsigned i = 0; i < nworkers; i++)
		kg_worker_request_stop(&workers[i]);
	int status = 0;
	for (unsigned i = 0; i < nworkers; i++) {
		kg_worker_join(&workers[i]);
		status |= workers[i].exit_status;
	}
	kg_log_msg(KG_LOG_INFO, "stopped", "all connections closed");
	free(workers);
	SSL_CTX_free(rt.ssl_ctx);
	return status;
}
