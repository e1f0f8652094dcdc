/* The control commands: a table from "cmd" to a handler. Handlers read the
 * current generation under the daemon lock and ask workers for what only
 * they may touch (stats, connections, kills) through their mailboxes. */
#include <openssl/x509v3.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "certtext.h"
#include "conn.h"
#include "ctl_server.h"
#include "metrics.h"
#include "session_cache.h"
#include "sockview.h"

static json_t *ok(void)
{
	return json_pack("{s:b}", "ok", 1);
}

/* ---- show info ---- */

static const char *ktls_mode_name(enum kg_ktls_mode m)
{
	return m == KG_KTLS_OFF ? "off" : m == KG_KTLS_REQUIRED ? "required" : "auto";
}

static json_t *listener_json(const struct kg_listener_rt *l)
{
	json_t *addrs = json_array(), *sites = json_array();

	for (size_t i = 0; i < l->spec->naddrs; i++)
		json_array_append_new(addrs, json_string(l->spec->addrs[i].addr.text));
	for (size_t i = 0; i < l->nsites; i++)
		json_array_append_new(sites, json_string(l->sites[i].label));
	return json_pack("{s:s, s:o, s:o, s:s}", "name", l->spec->name, "listen", addrs, "sites", sites,
			 "ktls", ktls_mode_name(l->spec->ktls));
}

static json_t *cmd_show_info(struct kg_daemon *d, json_t *req)
{
	json_t *workers = json_array(), *listeners = json_array(), *r;

	for (unsigned i = 0; i < d->nworkers; i++)
		json_array_append_new(workers, json_pack("{s:i, s:i}", "id", (int)i,
							 "cpu", d->workers[i].cpu));
	pthread_mutex_lock(&d->lock);
	const struct kg_gen *g = d->rt->gen;
	for (size_t i = 0; i < g->nlisteners; i++)
		json_array_append_new(listeners, listener_json(&g->listeners[i]));
	r = json_pack("{s:b, s:s, s:i, s:I, s:s?, s:I, s:{s:b, s:s}, s:s, s:o, s:o}", "ok", 1,
		      "version", KG_VERSION, "pid", (int)getpid(),
		      "uptime_s", (json_int_t)(time(NULL) - d->started), "config", g->cfg.file,
		      "generation", (json_int_t)d->gen_number, "ktls", "available", d->ktls_available,
		      "description", d->ktls_desc, "record_engine", d->engine_desc, "workers", workers,
		      "listeners", listeners);
	pthread_mutex_unlock(&d->lock);
	return r;
}

/* ---- show stats ---- */

static int gather_stats(struct kg_daemon *d, struct kg_worker_stats *per, struct kg_worker_stats *total)
{
	memset(total, 0, sizeof(*total));
	for (unsigned i = 0; i < d->nworkers; i++) {
		struct kg_wmsg *m = kg_wmsg_new(KG_WMSG_STATS);
		if (!m)
			return -1;
		bool answered = kg_worker_call(&d->workers[i], m, 2000);
		if (answered)
			per[i] = m->stats;
		kg_wmsg_put(m);
		if (!answered)
			return -1;
		kg_stats_add(total, &per[i]);
	}
	return 0;
}

/* The DPDK record engine's counters: records, bytes, bursts (sizes as a
 * power-of-two histogram) and fallbacks to OpenSSL. */
static json_t *dpdk_json(const struct kg_worker_stats *s)
{
	json_t *hist = json_array();

	for (int i = 0; i < KG_BURST_BUCKETS; i++)
		json_array_append_new(hist, json_integer((json_int_t)s->dpdk_burst_hist[i]));
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:I, s:I, s:I}",
			 "connections", (json_int_t)s->relayed_dpdk,
			 "records_rx", (json_int_t)s->dpdk_records_rx,
			 "records_tx", (json_int_t)s->dpdk_records_tx,
			 "bytes_rx", (json_int_t)s->dpdk_bytes_rx,
			 "bytes_tx", (json_int_t)s->dpdk_bytes_tx,
			 "bursts", (json_int_t)s->dpdk_bursts,
			 "burst_ops", (json_int_t)s->dpdk_burst_ops,
			 "burst_size_log2", hist,
			 "fallbacks", (json_int_t)s->dpdk_fallbacks,
			 "key_updates", (json_int_t)s->dpdk_key_updates,
			 "queue_waits", (json_int_t)s->dpdk_queue_waits);
}

/* Backend TLS: "refused" is the sum of "refusals", one count per failed
 * backend attempt, like the client side's "refused" per reason. */
static json_t *upstream_json(const struct kg_worker_stats *s)
{
	json_t *by = json_object();

	for (int r = 0; r < KG_UP_REFUSAL_COUNT; r++)
		json_object_set_new(by, kg_up_refusal_names[r],
				    json_integer((json_int_t)s->upstream_refused_by[r]));
	return json_pack("{s:I, s:I, s:I, s:o}", "handshakes", (json_int_t)s->upstream_handshakes,
			 "resumed", (json_int_t)s->upstream_resumed,
			 "refused", (json_int_t)s->upstream_refused, "refusals", by);
}

static json_t *stats_json(const struct kg_worker_stats *s)
{
	json_t *refused = json_object();

	for (int r = 0; r < KG_REFUSAL_COUNT; r++)
		json_object_set_new(refused, kg_refusal_names[r], json_integer((json_int_t)s->refused[r]));
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:o, s:I, s:I, s:I, s:I, s:I, s:o,"
			 " s:{s:I, s:I, s:I, s:I}, s:I, s:I, s:I, s:I, s:o, s:I,"
			 " s:{s:I, s:I, s:I, s:I}, s:I}",
			 "conns_active", (json_int_t)s->conns_active,
			 "conns_total", (json_int_t)s->conns_total,
			 "handshakes_ok", (json_int_t)s->handshakes_ok,
			 "handshakes_refused", (json_int_t)s->handshakes_refused,
			 "resumed", (json_int_t)s->handshakes_resumed, "refused", refused,
			 "bytes_in", (json_int_t)s->bytes_in, "bytes_out", (json_int_t)s->bytes_out,
			 "relay_ktls", (json_int_t)s->relayed_ktls, "relay_user", (json_int_t)s->relayed_user,
			 "relay_dpdk", (json_int_t)s->relayed_dpdk, "dpdk", dpdk_json(s),
			 "handshake_latency_us",
			 "p50", (json_int_t)kg_stats_latency_quantile(s, 0.50),
			 "p90", (json_int_t)kg_stats_latency_quantile(s, 0.90),
			 "p99", (json_int_t)kg_stats_latency_quantile(s, 0.99),
			 "p999", (json_int_t)kg_stats_latency_quantile(s, 0.999),
			 "handshake_timeouts", (json_int_t)s->handshake_timeouts,
			 "idle_timeouts", (json_int_t)s->idle_timeouts,
			 "backend_failures", (json_int_t)s->backend_failures,
			 "conn_limit_hits", (json_int_t)s->conn_limit_hits,
			 "upstream", upstream_json(s),
			 "verify_cache_hits", (json_int_t)s->verify_cache_hits,
			 "session_cache", "hits", (json_int_t)s->session_cache_hits,
			 "misses", (json_int_t)s->session_cache_misses,
			 "refused", (json_int_t)s->session_cache_refused,
			 "evictions", (json_int_t)s->session_cache_evictions,
			 "cq_overflows", (json_int_t)s->cq_overflows);
}

static json_t *cmd_show_stats(struct kg_daemon *d, json_t *req)
{
	struct kg_worker_stats *per = calloc(d->nworkers, sizeof(*per)), total;
	json_t *workers, *r;

	if (!per || gather_stats(d, per, &total) < 0) {
		free(per);
		return kg_ctl_error("a worker did not answer in time");
	}
	workers = json_array();
	for (unsigned i = 0; i < d->nworkers; i++)
		json_array_append_new(workers, stats_json(&per[i]));
	r = json_pack("{s:b, s:o, s:o, s:I}", "ok", 1, "total", stats_json(&total), "workers", workers,
		      "session_cache_entries", (json_int_t)kg_scache_count());
	free(per);
	return r;
}

/* ---- show certs ---- */

static void iso_time(const ASN1_TIME *t, char *buf, size_t cap)
{
	struct tm tm;

	if (!t || ASN1_TIME_to_tm(t, &tm) != 1) {
		snprintf(buf, cap, "-");
		return;
	}
	strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static long days_left(const ASN1_TIME *t)
{
	int days = 0, secs = 0;

	ASN1_TIME_diff(&days, &secs, NULL, t);
	return days;
}

static char *text_of(const X509_NAME *name)
{
	char buf[256];

	kg_name_text(name, buf, sizeof(buf));
	return strdup(buf);
}

static json_t *sans_json(X509 *x)
{
	GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	json_t *out = json_array();
	char buf[512];

	for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
		const char *kind = g->type == GEN_DNS ? "DNS" : g->type == GEN_URI ? "URI"
				   : g->type == GEN_EMAIL ? "email" : NULL;
		if (!kind)
			continue;
		const ASN1_IA5STRING *s = g->d.ia5;
		snprintf(buf, sizeof(buf), "%s:%.*s", kind, s->length, (const char *)s->data);
		json_array_append_new(out, json_string(buf));
	}
	GENERAL_NAMES_free(names);
	return out;
}

static json_t *cert_json(const char *kind, const char *listener, const char *site, const char *file,
			 X509 *x)
{
	char nb[32], na[32], serial[80];
	char *subject = text_of(X509_get_subject_name(x)), *issuer = text_of(X509_get_issuer_name(x));
	long left = days_left(X509_get0_notAfter(x));
	json_t *j;

	kg_serial_text(X509_get0_serialNumber(x), serial, sizeof(serial));
	iso_time(X509_get0_notBefore(x), nb, sizeof(nb));
	iso_time(X509_get0_notAfter(x), na, sizeof(na));
	j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:s, s:s, s:s, s:s, s:I, s:b}", "kind", kind,
		      "listener", listener, "site", site, "file", file ? file : "-",
		      "subject", subject ? subject : "", "sans", sans_json(x), "issuer", issuer ? issuer : "",
		      "serial", serial, "not_before", nb, "not_after", na, "days_left", (json_int_t)left,
		      "warn", left < 30);
	free(subject);
	free(issuer);
	return j;
}

static int revoked_count(X509_CRL *crl)
{
	int n = sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl));

	return n > 0 ? n : 0; /* an empty CRL has no list at all: -1 */
}

static json_t *crl_json(const char *listener, const char *site, const char *file, X509_CRL *crl)
{
	char lu[32], nu[32];
	char *issuer = text_of(X509_CRL_get_issuer(crl));
	const ASN1_TIME *next = X509_CRL_get0_nextUpdate(crl);
	bool stale = next && X509_cmp_current_time(next) <= 0;
	json_t *j;

	iso_time(X509_CRL_get0_lastUpdate(crl), lu, sizeof(lu));
	iso_time(next, nu, sizeof(nu));
	j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:b, s:b}", "listener", listener, "site", site,
		      "file", file ? file : "-", "issuer", issuer ? issuer : "", "last_update", lu,
		      "next_update", nu, "revoked", revoked_count(crl),
		      "stale", stale, "warn", stale || (next && days_left(next) < 1));
	free(issuer);
	return j;
}

static void site_certs(const struct kg_listener_rt *l, const struct kg_site *s, json_t *certs,
		       json_t *crls)
{
	const struct kg_client_trust *t = &s->trust;

	for (int i = 0; i < sk_X509_num(t->cas); i++)
		json_array_append_new(certs, cert_json("client_ca", l->spec->name, s->label,
						       t->ca_files[i], sk_X509_value(t->cas, i)));
	for (int i = 0; i < sk_X509_CRL_num(t->crls); i++)
		json_array_append_new(crls, crl_json(l->spec->name, s->label, t->crl_files[i],
						     sk_X509_CRL_value(t->crls, i)));
}

static json_t *cmd_show_certs(struct kg_daemon *d, json_t *req)
{
	json_t *certs = json_array(), *crls = json_array();

	pthread_mutex_lock(&d->lock);
	const struct kg_gen *g = d->rt->gen;
	for (size_t i = 0; i < g->nlisteners; i++) {
		const struct kg_listener_rt *l = &g->listeners[i];
		for (size_t j = 0; j < l->nids; j++) {
			const struct kg_identity_spec *s = l->ids[j].spec;
			json_array_append_new(certs, cert_json("server", l->spec->name, "-",
							       s->pkcs12.path ? s->pkcs12.path : s->cert.path,
							       l->ids[j].leaf));
		}
		for (size_t j = 0; j < l->nsites; j++)
			site_certs(l, &l->sites[j], certs, crls);
	}
	pthread_mutex_unlock(&d->lock);
	return json_pack("{s:b, s:o, s:o}", "ok", 1, "certs", certs, "crls", crls);
}

/* ---- show conns ---- */

static json_t *view_json(const struct kg_conn_view *v)
{
	json_t *kernel = v->ktls ? kg_sockview_json(&v->local, &v->peer) : json_null();

	return json_pack("{s:I, s:i, s:s, s:s, s:s, s:s, s:s?, s:s, s:s?, s:I, s:I, s:I, s:s, s:s?,"
			 " s:s?, s:s?, s:o}",
			 "id", (json_int_t)v->id, "worker", (int)v->worker, "client", v->client,
			 "sni", v->sni, "subject", v->subject, "serial", v->serial,
			 "spiffe", v->spiffe[0] ? v->spiffe : NULL, "backend", v->backend,
			 "upstream_tls", v->up_version, "bytes_in", (json_int_t)v->bytes_in, "bytes_out", (json_int_t)v->bytes_out,
			 "age_ms", (json_int_t)v->age_ms, "state", v->state, "path", v->path,
			 "version", v->version, "cipher", v->cipher, "kernel", kernel);
}

static json_t *cmd_show_conns(struct kg_daemon *d, json_t *req)
{
	json_t *conns = json_array();

	for (unsigned i = 0; i < d->nworkers; i++) {
		struct kg_wmsg *m = kg_wmsg_new(KG_WMSG_CONNS);
		if (!m)
			break;
		if (kg_worker_call(&d->workers[i], m, 2000))
			for (size_t k = 0; k < m->nviews; k++)
				json_array_append_new(conns, view_json(&m->views[k]));
		kg_wmsg_put(m);
	}
	return json_pack("{s:b, s:o}", "ok", 1, "conns", conns);
}

static json_t *cmd_show_generation(struct kg_daemon *d, json_t *req)
{
	char built[32];
	struct tm tm;
	json_t *r;

	pthread_mutex_lock(&d->lock);
	gmtime_r(&d->gen_built, &tm);
	strftime(built, sizeof(built), "%Y-%m-%dT%H:%M:%SZ", &tm);
	r = json_pack("{s:b, s:I, s:s, s:s, s:i}", "ok", 1, "generation", (json_int_t)d->gen_number,
		      "built_at", built, "source", d->rt->gen->cfg.file ? d->rt->gen->cfg.file : "command line",
		      "runtime_changes", (int)kg_daemon_runtime_changes(d));
	pthread_mutex_unlock(&d->lock);
	return r;
}

/* ---- changes ---- */

static json_t *cmd_reload(struct kg_daemon *d, json_t *req)
{
	char err[1024];
	uint64_t t0 = kg_now_us();

	if (kg_daemon_rebuild(d, true, err, sizeof(err)) < 0)
		return kg_ctl_error("%s", err);
	return json_pack("{s:b, s:I, s:f}", "ok", 1, "generation", (json_int_t)d->gen_number, "ms",
			 (double)(kg_now_us() - t0) / 1000.0);
}

static const char *str_arg(json_t *req, const char *key)
{
	return json_string_value(json_object_get(req, key));
}

/* "cert begin" -> kind "cert", verb "begin". */
static json_t *cmd_txn(struct kg_daemon *d, json_t *req)
{
	const char *cmd = str_arg(req, "cmd"), *name = str_arg(req, "name");
	char kind[8], verb[8], err[1024];
	int rc;

	if (sscanf(cmd, "%7s %7s", kind, verb) != 2)
		return kg_ctl_error("bad command");
	if (!name)
		return kg_ctl_error("%s: missing \"name\" (the file as the configuration names it)", cmd);
	if (strcmp(verb, "begin") == 0) {
		rc = kg_txn_begin(d, kind, name, err, sizeof(err));
	} else if (strcmp(verb, "set") == 0) {
		const char *pem = str_arg(req, "pem");
		if (!pem)
			return kg_ctl_error("%s: missing \"pem\"", cmd);
		rc = kg_txn_set(d, kind, name, pem, err, sizeof(err));
	} else if (strcmp(verb, "commit") == 0) {
		rc = kg_txn_commit(d, kind, name, err, sizeof(err));
		if (rc == 0)
			return json_pack("{s:b, s:I}", "ok", 1, "generation", (json_int_t)d->gen_number);
	} else {
		rc = kg_txn_abort(d, kind, name, err, sizeof(err));
	}
	return rc < 0 ? kg_ctl_error("%s", err) : ok();
}

static json_t *cmd_policy_set(struct kg_daemon *d, json_t *req)
{
	const char *listener = str_arg(req, "listener"), *site = str_arg(req, "site");
	json_t *allow = json_object_get(req, "allow"), *deny = json_object_get(req, "deny");
	char err[1024];

	if (!listener)
		return kg_ctl_error("policy set: missing \"listener\"");
	if (!allow && !deny)
		return kg_ctl_error("policy set: give \"allow\" and/or \"deny\" rule lists");
	if (kg_policy_override_set(d, listener, site, allow, deny, err, sizeof(err)) < 0)
		return kg_ctl_error("%s", err);
	return json_pack("{s:b, s:I}", "ok", 1, "generation", (json_int_t)d->gen_number);
}

static json_t *cmd_conn_kill(struct kg_daemon *d, json_t *req)
{
	struct kg_kill_filter f = { 0 };
	char serial[80];
	json_t *id = json_object_get(req, "id");

	if (id && (!json_is_integer(id) || json_integer_value(id) <= 0))
		return kg_ctl_error("conn kill: \"id\" must be a positive integer");
	f.id = id ? (uint64_t)json_integer_value(id) : 0;
	if (str_arg(req, "serial")) {
		kg_serial_normalise(str_arg(req, "serial"), serial, sizeof(serial));
		f.serial = serial;
	}
	f.subject = str_arg(req, "subject");
	f.spiffe = str_arg(req, "spiffe");
	if (!f.id && !f.serial && !f.subject && !f.spiffe)
		return kg_ctl_error("conn kill: give \"id\", \"serial\", \"subject\" or \"spiffe\"");
	return json_pack("{s:b, s:i}", "ok", 1, "killed", (int)kg_daemon_kill(d, &f));
}

static json_t *cmd_drain(struct kg_daemon *d, json_t *req)
{
	/* The signal loop does the rest, exactly as for SIGTERM. */
	kg_log_msg(KG_LOG_INFO, "drain", "drain requested on the control socket");
	kill(getpid(), SIGTERM);
	return ok();
}

static json_t *cmd_metrics(struct kg_daemon *d, json_t *req)
{
	char *text = kg_metrics_text(d);
	json_t *r;

	if (!text)
		return kg_ctl_error("a worker did not answer in time");
	r = json_pack("{s:b, s:s}", "ok", 1, "text", text);
	free(text);
	return r;
}

static const struct {
	const char *cmd;
	json_t *(*handler)(struct kg_daemon *d, json_t *req);
} commands[] = {
	{ "show info", cmd_show_info },
	{ "show stats", cmd_show_stats },
	{ "show certs", cmd_show_certs },
	{ "show conns", cmd_show_conns },
	{ "show generation", cmd_show_generation },
	{ "reload", cmd_reload },
	{ "cert begin", cmd_txn }, { "cert set", cmd_txn }, { "cert commit", cmd_txn }, { "cert abort", cmd_txn },
	{ "ca begin", cmd_txn }, { "ca set", cmd_txn }, { "ca commit", cmd_txn }, { "ca abort", cmd_txn },
	{ "crl begin", cmd_txn }, { "crl set", cmd_txn }, { "crl commit", cmd_txn }, { "crl abort", cmd_txn },
	{ "policy set", cmd_policy_set },
	{ "conn kill", cmd_conn_kill },
	{ "drain", cmd_drain },
	{ "metrics", cmd_metrics },
};

json_t *kg_ctl_dispatch(struct kg_daemon *d, json_t *req)
{
	const char *cmd = str_arg(req, "cmd");

	if (!cmd)
		return kg_ctl_error("missing \"cmd\"");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(commands[i].cmd, cmd) == 0)
			return d ? commands[i].handler(d, req) : kg_ctl_error("no daemon to ask");
	return kg_ctl_error("unknown command '%.64s' (try \"show info\")", cmd);
}
