/* ktlsgate daemon start-up: validate everything before serving, start one
 * pinned worker per CPU, wait for signals, drain on SIGTERM/SIGINT. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <openssl/ssl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>


#include "config.h"
#include "conn.h"
#include "ctl_server.h"
#include "daemon.h"
#include "metrics_http.h"
#include "generation.h"
#include "ktls_probe.h"
#include "log.h"
#include "tlsctx.h"
#include "options.h"
#include "privdrop.h"
#include "session_cache.h"
#include "ticket_keys.h"
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
	sigaddset(set, SIGUSR1);
	/* Workers inherit the mask: only the main thread takes signals. */
	pthread_sigmask(SIG_BLOCK, set, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static void append_addrs(char *buf, size_t cap, const struct kg_addr_spec *a, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		size_t used = strlen(buf);
		snprintf(buf + used, cap - used, "%s%s", used ? "," : "", a[i].addr.text);
	}
}

/* "addr" or "addr(tls)": which backends are reached over TLS. */
static void append_backends(char *buf, size_t cap, const struct kg_auth_spec *a)
{
	for (size_t i = 0; i < a->nbackends; i++) {
		size_t used = strlen(buf);
		snprintf(buf + used, cap - used, "%s%s%s", used ? "," : "", a->backends[i].addr.text,
			 kg_backend_tls_of(a, i) ? "(tls)" : "");
	}
}

static void log_start(const struct kg_runtime *rt, unsigned nworkers)
{
	const struct kg_config *cfg = &rt->gen->cfg;
	char listen[512] = "", backends[512] = "";

	for (size_t i = 0; i < cfg->nlisteners; i++) {
		append_addrs(listen, sizeof(listen), cfg->listeners[i].addrs, cfg->listeners[i].naddrs);
		append_backends(backends, sizeof(backends), &cfg->listeners[i].auth);
	}
	struct kg_field f[] = {
		KG_S("version", KG_VERSION),
		KG_I("workers", nworkers),
		KG_S("config", cfg->file ? cfg->file : "command line"),
		KG_I("listeners", cfg->nlisteners),
		KG_S("listen", listen),
		KG_S("backends", backends),
		KG_S("relay", rt->ktls ? "ktls" : rt->dpdk_ciphers ? "dpdk" : "user"),
	};
	kg_log_event(KG_LOG_INFO, "start", f, KG_NFIELDS(f));
}

/* The listener that insists on kTLS, if any: it decides whether we may start. */
static const struct kg_listener_spec *ktls_required_by(const struct kg_config *cfg)
{
	for (size_t i = 0; i < cfg->nlisteners; i++)
		if (cfg->listeners[i].ktls == KG_KTLS_REQUIRED)
			return &cfg->listeners[i];
	return NULL;
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

/* Probe once; say in one line what the data path will be, and why. The
 * description is kept for show info. */
static void setup_ktls(struct kg_runtime *rt, char *desc, size_t desclen)
{
	struct kg_ktls_caps caps;
	char err[600];

	const struct kg_config *cfg = &rt->gen->cfg;
	const struct kg_listener_spec *needs = ktls_required_by(cfg);
	char where[512];

	if (cfg->ktls == KG_KTLS_OFF) {
		snprintf(desc, desclen, "off (%s)", cfg->file ? "ktls: off" : "--ktls off");
		kg_log_msg(KG_LOG_INFO, "ktls", "kTLS: %s - using userspace relay", desc);
		return;
	}
	kg_ktls_probe(&caps);
	kg_ktls_caps_describe(&caps, desc, desclen);
	if (!caps.available && (cfg->ktls == KG_KTLS_REQUIRED || needs)) {
		if (needs && cfg->ktls != KG_KTLS_REQUIRED) {
			kg_where_format(&needs->at, where, sizeof(where));
			snprintf(err, sizeof(err), "%s: listener %s: ktls required: kernel TLS %s",
				 where, needs->name, desc);
		} else {
			snprintf(err, sizeof(err), "%s required: kernel TLS %s",
				 cfg->file ? "ktls:" : "--ktls", desc);
		}
		die(err);
	}
	rt->ktls = caps.available;
	rt->ktls_ciphers = ktls_cipher_bits(&caps);
	rt->ktls_rekey = caps.available && caps.rekey;
	kg_log_msg(caps.available ? KG_LOG_INFO : KG_LOG_WARN, "ktls", "kTLS: %s%s", desc,
		   caps.available ? "" : " - using userspace relay");
}

/* The listener (or global setting) that names engine e, if any. */
static const struct kg_where *engine_named(const struct kg_config *cfg, enum kg_record_engine e)
{
	if (cfg->record_engine == e)
		return &cfg->record_engine_at;
	for (size_t i = 0; i < cfg->nlisteners; i++)
		if (cfg->listeners[i].record_engine == e)
			return &cfg->listeners[i].at;
	return NULL;
}

/* record_engine: auto prefers kTLS, then DPDK, then OpenSSL. Starts the EAL
 * (once, here on the control thread) when some listener may use DPDK, gives
 * each worker its queue pair, and says in one line which engine and why. */
static void setup_engine(struct kg_runtime *rt, struct kg_worker *workers, unsigned n,
			 char *desc, size_t desclen)
{
	const struct kg_config *cfg = &rt->gen->cfg;
	const struct kg_where *wants_dpdk = engine_named(cfg, KG_ENGINE_DPDK);
	bool auto_may = engine_named(cfg, KG_ENGINE_AUTO) != NULL;
	struct kg_dpdk_caps caps = { 0 };
	char err[512] = "", where[512];
	const char *engine, *why;

	if (auto_may && rt->ktls) {
		engine = "ktls", why = "kernel TLS available";
		if (!wants_dpdk)
			goto out;
	}
	if (!wants_dpdk && !auto_may) {
		bool ktls = engine_named(cfg, KG_ENGINE_KTLS) != NULL;
		engine = ktls && rt->ktls ? "ktls" : "openssl";
		why = !ktls ? "record_engine: openssl" : rt->ktls ? "record_engine: ktls"
			: "record_engine: ktls, but kernel TLS is unavailable";
		goto out;
	}
	if (!KG_DPDK_BUILT)
		snprintf(err, sizeof(err), "built without DPDK (-Ddpdk=disabled)");
	else if (kg_dpdk_init(&(struct kg_dpdk_opts){
			.vdevs = cfg->dpdk_vdevs, .memory_mb = cfg->dpdk_memory_mb,
			.queue_depth = cfg->dpdk_queue_depth,
			/* test-only: the hardware PMDs' buffer path on a software one */
			.force_dma_bufs = getenv(KG_DPDK_FORCE_DMA_ENV) != NULL },
			n, &caps, err, sizeof(err)) == 0)
		for (unsigned i = 0; i < n; i++)
			if (!(workers[i].dp = kg_dpdk_worker_new(i)))
				snprintf(err, sizeof(err), "worker %u: no cryptodev pools", i);
	if (err[0] && wants_dpdk) {
		kg_where_format(wants_dpdk, where, sizeof(where));
		snprintf(desc, desclen, "%s: record_engine dpdk: %s", where, err);
		die(desc);
	}
	if (!err[0])
		rt->dpdk_ciphers = caps.ciphers;
	if (!(auto_may && rt->ktls)) {
		engine = err[0] ? "openssl" : "dpdk";
		why = err[0] ? err : "kernel TLS unavailable, DPDK cryptodev ready";
	}
out:
	snprintf(desc, desclen, "%s (%s)%s%s", engine, why, caps.available ? " cryptodev=" : "",
		 caps.available ? caps.dev : "");
	struct kg_field f[] = {
		KG_S("engine", engine), KG_S("reason", why),
		KG_S("cryptodev", caps.available ? caps.dev : NULL),
		KG_I("dpdk_ciphers", rt->dpdk_ciphers),
	};
	kg_log_event(KG_LOG_INFO, "record_engine", f, KG_NFIELDS(f));
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
	kg_gen_unref(w->gen);
	free(w);
	if (rt->gen->cfg.ktls == KG_KTLS_REQUIRED || ktls_required_by(&rt->gen->cfg)) {
		char desc[256];
		setup_ktls(rt, desc, sizeof(desc)); /* dies when the kernel cannot */
	}
	printf("ktlsgate: check ok\n");
	return 0;
}

/* global.cpus: each must be one we may run on (taskset, cgroup cpuset). */
static int configured_cpus(const struct kg_config *cfg, int *cpus)
{
	cpu_set_t allowed;
	char err[160];

	if (sched_getaffinity(0, sizeof(allowed), &allowed) < 0)
		CPU_ZERO(&allowed);
	for (size_t i = 0; i < cfg->ncpus; i++) {
		if (cfg->cpus[i] < 0 || cfg->cpus[i] >= CPU_SETSIZE || !CPU_ISSET(cfg->cpus[i], &allowed)) {
			snprintf(err, sizeof(err), "%s: global.cpus: CPU %d is not available to this process",
				 cfg->file, cfg->cpus[i]);
			die(err);
		}
		cpus[i] = cfg->cpus[i];
	}
	return (int)cfg->ncpus;
}

/* Binds every listener before anything is logged: bad input fails first. */
static struct kg_worker *init_workers(const struct kg_runtime *rt, unsigned *nworkers)
{
	int cpus[CPU_SETSIZE];
	int ncpus = rt->gen->cfg.ncpus ? configured_cpus(&rt->gen->cfg, cpus)
				       : online_cpus(cpus, CPU_SETSIZE);
	unsigned n = rt->gen->cfg.workers ? rt->gen->cfg.workers : (unsigned)(ncpus > 0 ? ncpus : 1);
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

/* The counters summed over workers, one line, when the daemon stops. */
static void log_totals(const struct kg_worker *workers, unsigned n)
{
	struct kg_field f[16 + KG_REFUSAL_COUNT];
	char keys[KG_REFUSAL_COUNT][48];
	struct kg_worker_stats t = { 0 };
	size_t nf = 0;

	for (unsigned i = 0; i < n; i++) {
		const struct kg_worker_stats *s = &workers[i].stats;
		t.conns_total += s->conns_total;
		t.handshakes_ok += s->handshakes_ok;
		t.handshakes_resumed += s->handshakes_resumed;
		t.verify_cache_hits += s->verify_cache_hits;
		t.session_cache_hits += s->session_cache_hits;
		t.handshakes_refused += s->handshakes_refused;
		t.backend_failures += s->backend_failures;
		t.conn_limit_hits += s->conn_limit_hits;
		t.idle_timeouts += s->idle_timeouts;
		t.bytes_in += s->bytes_in;
		t.bytes_out += s->bytes_out;
		for (int r = 0; r < KG_REFUSAL_COUNT; r++)
			t.refused[r] += s->refused[r];
	}
	f[nf++] = KG_I("connections", t.conns_total);
	f[nf++] = KG_I("handshakes_ok", t.handshakes_ok);
	f[nf++] = KG_I("resumed", t.handshakes_resumed);
	f[nf++] = KG_I("verify_cache_hits", t.verify_cache_hits);
	f[nf++] = KG_I("session_cache_hits", t.session_cache_hits);
	f[nf++] = KG_I("refused", t.handshakes_refused);
	for (int r = 0; r < KG_REFUSAL_COUNT; r++) {
		if (!t.refused[r])
			continue;
		snprintf(keys[r], sizeof(keys[r]), "refused_%s", kg_refusal_names[r]);
		f[nf++] = KG_I(keys[r], t.refused[r]);
	}
	f[nf++] = KG_I("backend_failures", t.backend_failures);
	f[nf++] = KG_I("conn_limit_hits", t.conn_limit_hits);
	f[nf++] = KG_I("idle_timeouts", t.idle_timeouts);
	f[nf++] = KG_I("bytes_in", t.bytes_in);
	f[nf++] = KG_I("bytes_out", t.bytes_out);
	kg_log_event(KG_LOG_INFO, "totals", f, nf);
}


/* log.file: appended to; SIGUSR1 reopens it after rotation (as nginx does). */
static void open_log_file(const char *path)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	char err[600];

	if (fd < 0) {
		snprintf(err, sizeof(err), "log.file %s: %s", path, strerror(errno));
		die(err);
	}
	kg_log_set_fd(fd);
}

static void reopen_log_file(const char *path)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);

	if (fd < 0) {
		kg_log_msg(KG_LOG_ERROR, "log_reopen", "log.file %s: %s; still writing to the old file",
			   path, strerror(errno));
		return;
	}
	/* Swap by dup2 so a worker mid-write never sees a closed descriptor. */
	kg_log_reopen(fd);
	kg_log_msg(KG_LOG_INFO, "log_reopen", "log file reopened");
}

/* log_file: the path the daemon opened at start (a reload does not move it). */
static void wait_for_stop(const sigset_t *set, struct kg_daemon *d, const char *log_file)
{
	char err[1024];
	int sig;

	for (;;) {
		if (sigwait(set, &sig) != 0)
			continue;
		if (sig == SIGUSR1) {
			if (log_file)
				reopen_log_file(log_file);
			continue;
		}
		if (sig == SIGHUP) {
			kg_log_msg(KG_LOG_INFO, "reload", "SIGHUP: reloading %s",
				   d->opt->config_file ? d->opt->config_file : "the command line's files");
			kg_daemon_rebuild(d, true, err, sizeof(err)); /* logs the outcome */
			continue;
		}
		kg_log_msg(KG_LOG_INFO, "stopping", "signal %s: draining connections", strsignal(sig));
		return;
	}
}

/* The socket's group: the one we drop to, else group "ktlsgate" if it exists. */
static int control_group(const struct kg_privdrop *pd)
{
	struct group *g;

	if (pd->switch_ids)
		return (int)pd->gid;
	g = getgrnam("ktlsgate");
	return g ? (int)g->gr_gid : -1;
}

/* Bound before privileges go: /run/ktlsgate may be root's. */
static struct kg_ctl *open_control_socket(struct kg_daemon *d, const struct kg_options *opt,
					  const struct kg_privdrop *pd)
{
	const char *path = opt->control_socket ? opt->control_socket : d->rt->gen->cfg.control_socket;
	bool fatal;
	char err[600];
	struct kg_ctl *ctl = kg_ctl_open(d, path ? path : KG_CTL_DEFAULT_PATH, path != NULL,
					 control_group(pd), &fatal, err, sizeof(err));

	if (!ctl && fatal)
		die(err);
	if (!ctl)
		kg_log_msg(KG_LOG_WARN, "control_socket", "%s - running without a control socket", err);
	return ctl;
}

/* --metrics-listen wins over global.metrics_listen; bound as root, like the rest. */
static struct kg_metrics_http *start_metrics_http(struct kg_daemon *d, const struct kg_options *opt)
{
	struct kg_addr_spec flag = { .addr = opt->metrics_listen, .at = { .key = "--metrics-listen" } };
	const struct kg_config *cfg = &d->rt->gen->cfg;
	struct kg_metrics_http *h;
	char err[600];

	if (!opt->metrics_http && !cfg->metrics_http)
		return NULL;
	h = kg_metrics_http_start(d, opt->metrics_http ? &flag : &cfg->metrics_listen, err, sizeof(err));
	if (!h)
		die(err);
	return h;
}

/* Everything the daemon will serve, built and checked before anything binds.
 * The user to run as is resolved first: a typo there fails before any file
 * is read. The command line wins over global.user/group, like --workers. */
static struct kg_gen *load_generation(const struct kg_options *opt, struct kg_privdrop *pd)
{
	struct kg_config cfg;
	struct kg_gen *g;
	char err[1024];

	if (opt->config_file) {
		if (kg_config_load_yaml(opt->config_file, &cfg, err, sizeof(err)) < 0)
			die(err);
		kg_config_apply_overrides(&cfg, opt);
	} else if (kg_config_from_options(opt, &cfg, err, sizeof(err)) < 0) {
		die(err);
	}
	kg_log_set_format(cfg.log_format);
	if (kg_privdrop_prepare(opt->user ? opt->user : cfg.user, opt->group ? opt->group : cfg.group,
				pd, err, sizeof(err)) < 0) {
		kg_config_free(&cfg);
		die(err);
	}
	if (cfg.log_file && !opt->check)
		open_log_file(cfg.log_file);
	g = kg_gen_build(&cfg, 1, kg_hs_prepare_ctx, err, sizeof(err));
	if (!g)
		die(err);
	return g;
}

int main(int argc, char **argv)
{
	struct kg_options opt;
	struct kg_runtime rt = { 0 };
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
	/* Explicitly and first: when OpenSSL's own initialisation cannot
	 * allocate, later calls crash on the default context's NULL lock. */
	if (!OPENSSL_init_ssl(0, NULL))
		die("OpenSSL initialisation failed (out of memory)");
	kg_tls_load_algorithms();
	rt.gen = load_generation(&opt, &pd);
	if (opt.check) {
		int rc = run_check(&rt);
		kg_gen_unref(rt.gen);
		return rc;
	}

	block_signals(&sigs);
	struct kg_worker *workers = init_workers(&rt, &nworkers);
	struct kg_daemon d = { .opt = &opt, .rt = &rt, .workers = workers, .nworkers = nworkers,
			       .started = time(NULL), .gen_number = rt.gen->number,
			       .gen_built = time(NULL) };
	pthread_mutex_init(&d.lock, NULL);
	setup_ktls(&rt, d.ktls_desc, sizeof(d.ktls_desc));
	d.ktls_available = rt.ktls;
	setup_engine(&rt, workers, nworkers, d.engine_desc, sizeof(d.engine_desc));
	struct kg_ctl *ctl = open_control_socket(&d, &opt, &pd);
	struct kg_metrics_http *mh = start_metrics_http(&d, &opt);
	if (kg_privdrop_apply(&pd, err, sizeof(err)) < 0)
		die(err);
	char *log_file = rt.gen->cfg.log_file ? strdup(rt.gen->cfg.log_file) : NULL;
	start_workers(workers, nworkers);
	/* Before the control thread runs: a commit there publishes a new
	 * generation and may free the one log_start reads. */
	log_start(&rt, nworkers);
	if (ctl && kg_ctl_start(ctl) != 0)
		die("cannot start the control thread");
	kg_log_msg(KG_LOG_INFO, "ready", "accepting connections");
	kg_daemon_notify("READY=1\nSTATUS=accepting connections");
	wait_for_stop(&sigs, &d, log_file);
	kg_daemon_notify("STOPPING=1\nSTATUS=draining connections");
	for (unsigned i = 0; i < nworkers; i++)
		kg_worker_request_stop(&workers[i]);
	int status = 0;
	for (unsigned i = 0; i < nworkers; i++) {
		kg_worker_join(&workers[i]);
		status |= workers[i].exit_status;
	}
	kg_metrics_http_stop(mh);
	kg_ctl_stop(ctl);
	log_totals(workers, nworkers);
	kg_dpdk_shutdown(workers, nworkers);
	kg_log_msg(KG_LOG_INFO, "stopped", "all connections closed");
	free(workers);
	free(log_file);
	kg_daemon_free_runtime(&d);
	kg_gen_unref(rt.gen);
	kg_ticket_keys_free();
	kg_scache_free();
	return status;
}
