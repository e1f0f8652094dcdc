/* Changing what the daemon serves while it serves: rebuild a generation
 * from the configuration source plus runtime changes, check it, publish it
 * to every worker's mailbox, and cut connections a new CRL revokes. */
#include "daemon.h"

#include <errno.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef KG_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "certtext.h"
#include "config.h"
#include "conn.h"
#include "log.h"
#include "overlay.h"
#include "sockdiag.h"

#define KG_MAX_PEM (1u << 20)

struct kg_policy_override {
	char *listener, *site; /* site NULL: the listener's own rules */
	struct kg_rules rules;
	struct kg_policy_override *next;
};

struct kg_txn {
	char kind[8];
	char *name;
	char *pem;
	struct kg_txn *next;
};

void kg_daemon_notify(const char *state)
{
#ifdef KG_HAVE_SYSTEMD
	sd_notify(0, state);
#else
	(void)state;
#endif
}

static int load_source(const struct kg_daemon *d, struct kg_config *cfg, char *err, size_t errlen)
{
	if (d->opt->config_file) {
		if (kg_config_load_yaml(d->opt->config_file, cfg, err, errlen) < 0)
			return -1;
		kg_config_apply_overrides(cfg, d->opt);
		return 0;
	}
	return kg_config_from_options(d->opt, cfg, err, errlen);
}

static struct kg_listener_spec *listener_named(struct kg_config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->nlisteners; i++)
		if (strcmp(cfg->listeners[i].name, name) == 0)
			return &cfg->listeners[i];
	return NULL;
}

static struct kg_site_spec *site_named(struct kg_listener_spec *l, const char *name)
{
	for (size_t i = 0; i < l->nsites; i++)
		for (size_t j = 0; j < l->sites[i].nnames; j++)
			if (strcasecmp(l->sites[i].names[j], name) == 0)
				return &l->sites[i];
	return NULL;
}

static char **copy_strv(char *const *v, size_t n)
{
	char **out = calloc(n ? n : 1, sizeof(*out));

	for (size_t i = 0; out && i < n; i++)
		if (!(out[i] = strdup(v[i])))
			return NULL; /* the leak on OOM is bounded and rare */
	return out;
}

static int copy_rule_list(struct kg_rule_spec **dst, size_t *ndst, const struct kg_rule_spec *src,
			  size_t n)
{
	struct kg_rule_spec *r = calloc(n ? n : 1, sizeof(*r));

	if (!r)
		return -1;
	for (size_t i = 0; i < n; i++) {
		r[i] = src[i];
		r[i].name = src[i].name ? strdup(src[i].name) : NULL;
		r[i].conds = calloc(src[i].nconds ? src[i].nconds : 1, sizeof(*r[i].conds));
		if (!r[i].conds)
			return -1;
		for (size_t j = 0; j < src[i].nconds; j++) {
			r[i].conds[j] = src[i].conds[j];
			r[i].conds[j].values = copy_strv(src[i].conds[j].values, src[i].conds[j].nvalues);
		}
	}
	*dst = r;
	*ndst = n;
	return 0;
}

static int apply_override(struct kg_config *cfg, const struct kg_policy_override *o, char *err,
			  size_t errlen)
{
	struct kg_listener_spec *l = listener_named(cfg, o->listener);
	struct kg_site_spec *s = l && o->site ? site_named(l, o->site) : NULL;
	struct kg_auth_spec *a = s ? &s->auth : l ? &l->auth : NULL;

	if (!a || (o->site && !s)) {
		snprintf(err, errlen, "policy set: listener %s%s%s no longer exists in the configuration",
			 o->listener, o->site ? " site " : "", o->site ? o->site : "");
		return -1;
	}
	kg_rule_list_free(a->rules.allow, a->rules.nallow);
	kg_rule_list_free(a->rules.deny, a->rules.ndeny);
	memset(&a->rules, 0, sizeof(a->rules));
	if (copy_rule_list(&a->rules.allow, &a->rules.nallow, o->rules.allow, o->rules.nallow) < 0 ||
	    copy_rule_list(&a->rules.deny, &a->rules.ndeny, o->rules.deny, o->rules.ndeny) < 0) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

/* A reload cannot move listening sockets: they were bound (as root) once. */
static int same_listeners(const struct kg_config *old, const struct kg_config *new, char *err,
			  size_t errlen)
{
	bool same = old->nlisteners == new->nlisteners;

	for (size_t i = 0; same && i < old->nlisteners; i++) {
		same = old->listeners[i].naddrs == new->listeners[i].naddrs;
		for (size_t j = 0; same && j < old->listeners[i].naddrs; j++)
			same = strcmp(old->listeners[i].addrs[j].addr.text,
				      new->listeners[i].addrs[j].addr.text) == 0;
	}
	if (!same)
		snprintf(err, errlen, "listen addresses changed: restart ktlsgate to apply them");
	return same ? 0 : -1;
}

static struct kg_gen *build_next(struct kg_daemon *d, bool runtime, char *err, size_t errlen)
{
	struct kg_config cfg;

	if (load_source(d, &cfg, err, errlen) < 0)
		return NULL;
	for (struct kg_policy_override *o = runtime ? d->policies : NULL; o; o = o->next) {
		if (apply_override(&cfg, o, err, errlen) < 0) {
			kg_config_free(&cfg);
			return NULL;
		}
	}
	if (same_listeners(&d->rt->gen->cfg, &cfg, err, errlen) < 0) {
		kg_config_free(&cfg);
		return NULL;
	}
	kg_overlay_suspend(!runtime);
	struct kg_gen *g = kg_gen_build(&cfg, d->gen_number + 1, kg_hs_prepare_ctx, err, errlen);
	kg_overlay_suspend(false);
	return g;
}

/* New connections start on g; live ones keep the generation they began on. */
static void publish(struct kg_daemon *d, struct kg_gen *g)
{
	struct kg_gen *old = d->rt->gen;

	for (unsigned i = 0; i < d->nworkers; i++) {
		struct kg_wmsg *m = kg_wmsg_new(KG_WMSG_GEN);
		if (!m)
			continue; /* that worker keeps the old generation: logged below */
		kg_gen_ref(g);
		m->gen = g;
		kg_worker_post(&d->workers[i], m);
	}
	d->rt->gen = g;
	d->gen_number = g->number;
	d->gen_built = time(NULL);
	kg_gen_unref(old);
}

static char *name_text(const X509_NAME *name)
{
	char buf[256];

	kg_name_text(name, buf, sizeof(buf));
	return strdup(buf);
}

static size_t count_revoked(const struct kg_gen *g)
{
	size_t n = 0;

	for (size_t l = 0; l < g->nlisteners; l++)
		for (size_t s = 0; s < g->listeners[l].nsites; s++) {
			STACK_OF(X509_CRL) *crls = g->listeners[l].sites[s].trust.crls;
			for (int i = 0; i < sk_X509_CRL_num(crls); i++) {
				int k = sk_X509_REVOKED_num(X509_CRL_get_REVOKED(sk_X509_CRL_value(crls, i)));
				n += k > 0 ? (size_t)k : 0; /* an empty CRL has no list: -1 */
			}
		}
	return n;
}

/* Every (issuer, serial) the generation's CRLs revoke, sorted for bsearch. */
static struct kg_revoked *collect_revoked(const struct kg_gen *g, size_t *n)
{
	struct kg_revoked *out = calloc(count_revoked(g) + 1, sizeof(*out));
	char serial[80];

	*n = 0;
	for (size_t l = 0; out && l < g->nlisteners; l++)
		for (size_t s = 0; s < g->listeners[l].nsites; s++) {
			STACK_OF(X509_CRL) *crls = g->listeners[l].sites[s].trust.crls;
			for (int i = 0; i < sk_X509_CRL_num(crls); i++) {
				X509_CRL *crl = sk_X509_CRL_value(crls, i);
				STACK_OF(X509_REVOKED) *rev = X509_CRL_get_REVOKED(crl);
				char *issuer = name_text(X509_CRL_get_issuer(crl));
				for (int j = 0; issuer && j < sk_X509_REVOKED_num(rev); j++) {
					kg_serial_text(X509_REVOKED_get0_serialNumber(sk_X509_REVOKED_value(rev, j)),
						       serial, sizeof(serial));
					out[*n].issuer = j ? out[*n - 1].issuer : issuer;
					out[(*n)++].serial = strdup(serial);
				}
				if (issuer && sk_X509_REVOKED_num(rev) <= 0)
					free(issuer);
			}
		}
	if (out)
		qsort(out, *n, sizeof(*out), kg_revoked_cmp);
	return out;
}

static void free_revoked(struct kg_revoked *r, size_t n)
{
	/* Issuer strings are shared by runs of entries from one CRL. */
	char **issuers = calloc(n + 1, sizeof(*issuers));
	size_t ni = 0;

	for (size_t i = 0; i < n; i++) {
		bool seen = false;
		for (size_t j = 0; j < ni && !seen; j++)
			seen = issuers[j] == r[i].issuer;
		if (!seen && issuers)
			issuers[ni++] = (char *)r[i].issuer;
		free((char *)r[i].serial);
	}
	for (size_t j = 0; j < ni; j++)
		free(issuers[j]);
	free(issuers);
	free(r);
}

/* On the kTLS path the kernel owns the session: SOCK_DESTROY resets it there
 * (the client sees a reset at once, whatever the kernel still had queued).
 * Without CAP_NET_ADMIN or CONFIG_INET_DIAG_DESTROY the worker's close
 * (SO_LINGER 0) does the same job a moment later. */
static void destroy_in_kernel(const struct kg_conn_view *v, size_t n)
{
	static int last_error;

	for (size_t i = 0; i < n; i++) {
		int rc = kg_sockdiag_destroy((const struct sockaddr *)&v[i].local,
					     (const struct sockaddr *)&v[i].peer);
		if (rc < 0 && rc != last_error) {
			last_error = rc;
			kg_log_msg(KG_LOG_WARN, "sock_destroy", "SOCK_DESTROY: %s%s - the worker resets it",
				   strerror(-rc), rc == -EPERM ? " (needs CAP_NET_ADMIN)" : "");
		}
	}
}

static unsigned kill_on_worker(struct kg_worker *w, const struct kg_kill_filter *f)
{
	struct kg_kill_filter first = *f, then = { 0 };
	struct kg_wmsg *m = kg_wmsg_new(KG_WMSG_KILL);
	unsigned killed = 0;
	uint64_t *ids;

	if (!m)
		return 0;
	first.spare_ktls = true;
	m->kill = first;
	bool answered = kg_worker_call(w, m, 2000);
	if (answered)
		killed = m->killed;
	if (!answered || !m->nviews || !(ids = calloc(m->nviews, sizeof(*ids)))) {
		kg_wmsg_put(m);
		return killed;
	}
	destroy_in_kernel(m->views, m->nviews);
	for (size_t i = 0; i < m->nviews; i++)
		ids[i] = m->views[i].id;
	then.ids = ids;
	then.nids = m->nviews;
	kg_wmsg_put(m);
	m = kg_wmsg_new(KG_WMSG_KILL);
	if (m) {
		m->kill = then;
		if (kg_worker_call(w, m, 2000))
			killed += m->killed;
		else
			ids = NULL; /* the worker may still read them: leak rather than race */
		kg_wmsg_put(m);
	}
	free(ids);
	return killed;
}

unsigned kg_daemon_kill(struct kg_daemon *d, const struct kg_kill_filter *f)
{
	unsigned killed = 0;

	for (unsigned i = 0; i < d->nworkers; i++)
		killed += kill_on_worker(&d->workers[i], f);
	return killed;
}

/* kill_revoked_on_crl_update: a certificate the new CRLs revoke loses its
 * live connections now, not at its next handshake. */
static void kill_revoked(struct kg_daemon *d)
{
	struct kg_kill_filter f = { 0 };
	size_t n;

	if (!d->rt->gen->cfg.kill_revoked_on_crl_update)
		return;
	f.revoked = collect_revoked(d->rt->gen, &n);
	f.nrevoked = n;
	if (!f.revoked || !n) {
		free((void *)f.revoked);
		return;
	}
	unsigned killed = kg_daemon_kill(d, &f);
	if (killed)
		kg_log_msg(KG_LOG_WARN, "revoked_killed",
			   "closed %u live connection(s) whose certificate the CRLs now revoke", killed);
	free_revoked((struct kg_revoked *)f.revoked, n);
}

static void drop_runtime_changes(struct kg_daemon *d)
{
	struct kg_policy_override *o, *next;

	kg_overlay_clear();
	for (o = d->policies; o; o = next) {
		next = o->next;
		kg_rule_list_free(o->rules.allow, o->rules.nallow);
		kg_rule_list_free(o->rules.deny, o->rules.ndeny);
		free(o->listener);
		free(o->site);
		free(o);
	}
	d->policies = NULL;
}

/* The caller holds d->lock. */
static int rebuild_locked(struct kg_daemon *d, bool drop_runtime, char *err, size_t errlen)
{
	struct kg_gen *g;

	kg_daemon_notify("RELOADING=1\nSTATUS=building a new configuration generation");
	g = build_next(d, !drop_runtime, err, errlen);
	kg_daemon_notify("READY=1\nSTATUS=accepting connections");
	if (!g) {
		kg_log_msg(KG_LOG_ERROR, "reload_failed", "%s; still serving generation %llu", err,
			   (unsigned long long)d->gen_number);
		return -1;
	}
	if (drop_runtime)
		drop_runtime_changes(d);
	publish(d, g);
	kg_log_msg(KG_LOG_INFO, "generation", "generation %llu live (%u runtime change(s))",
		   (unsigned long long)d->gen_number, kg_daemon_runtime_changes(d));
	kill_revoked(d);
	return 0;
}

int kg_daemon_rebuild(struct kg_daemon *d, bool drop_runtime, char *err, size_t errlen)
{
	int rc;

	pthread_mutex_lock(&d->lock);
	rc = rebuild_locked(d, drop_runtime, err, errlen);
	pthread_mutex_unlock(&d->lock);
	return rc;
}

unsigned kg_daemon_runtime_changes(const struct kg_daemon *d)
{
	unsigned n = (unsigned)kg_overlay_count();

	for (const struct kg_policy_override *o = d->policies; o; o = o->next)
		n++;
	return n;
}

/* ---- transactions ---- */

static struct kg_txn **txn_find(struct kg_daemon *d, const char *kind, const char *name)
{
	for (struct kg_txn **t = &d->txns; *t; t = &(*t)->next)
		if (strcmp((*t)->kind, kind) == 0 && strcmp((*t)->name, name) == 0)
			return t;
	return NULL;
}

static bool names_file(const struct kg_file *f, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (f[i].path && strcmp(f[i].path, name) == 0)
			return true;
	return false;
}

static bool auth_names(const struct kg_auth_spec *a, const char *kind, const char *name)
{
	return strcmp(kind, "ca") == 0 ? names_file(a->client_cas, a->nclient_cas, name)
				       : names_file(a->crls, a->ncrls, name);
}

/* The identity whose certificate (or key) file is name, if any. */
static const struct kg_identity_spec *identity_named(const struct kg_config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->nlisteners; i++)
		for (size_t j = 0; j < cfg->listeners[i].nids; j++) {
			const struct kg_identity_spec *id = &cfg->listeners[i].ids[j];
			if ((id->cert.path && strcmp(id->cert.path, name) == 0) ||
			    (id->pkcs12.path && strcmp(id->pkcs12.path, name) == 0))
				return id;
		}
	return NULL;
}

static bool config_names(const struct kg_config *cfg, const char *kind, const char *name)
{
	if (strcmp(kind, "cert") == 0)
		return identity_named(cfg, name) != NULL;
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		if (auth_names(&cfg->listeners[i].auth, kind, name))
			return true;
		for (size_t j = 0; j < cfg->listeners[i].nsites; j++)
			if (auth_names(&cfg->listeners[i].sites[j].auth, kind, name))
				return true;
	}
	return false;
}

static const char *kind_files(const char *kind)
{
	return strcmp(kind, "cert") == 0 ? "a server certificate (identities: cert)"
	       : strcmp(kind, "ca") == 0 ? "a client CA bundle (client_ca)" : "a CRL (crl)";
}

int kg_txn_begin(struct kg_daemon *d, const char *kind, const char *name, char *err, size_t errlen)
{
	struct kg_txn *t;
	int rc = -1;

	pthread_mutex_lock(&d->lock);
	if (!config_names(&d->rt->gen->cfg, kind, name)) {
		snprintf(err, errlen, "%s begin %s: the configuration names no such file as %s", kind,
			 name, kind_files(kind));
	} else if (txn_find(d, kind, name)) {
		snprintf(err, errlen, "%s begin %s: a transaction is already open (commit or abort it)",
			 kind, name);
	} else if (!(t = calloc(1, sizeof(*t))) || !(t->name = strdup(name))) {
		free(t);
		snprintf(err, errlen, "out of memory");
	} else {
		snprintf(t->kind, sizeof(t->kind), "%s", kind);
		t->next = d->txns;
		d->txns = t;
		rc = 0;
	}
	pthread_mutex_unlock(&d->lock);
	return rc;
}

static bool has_block(const char *pem, const char *type)
{
	char begin[64];

	snprintf(begin, sizeof(begin), "-----BEGIN %s-----", type);
	return strstr(pem, begin) != NULL;
}

static bool has_key(const char *pem)
{
	return has_block(pem, "PRIVATE KEY") || has_block(pem, "EC PRIVATE KEY") ||
	       has_block(pem, "RSA PRIVATE KEY") || has_block(pem, "ENCRYPTED PRIVATE KEY");
}

static const char *payload_problem(const char *kind, const char *pem)
{
	if (strlen(pem) > KG_MAX_PEM)
		return "PEM payload over 1 MiB";
	if (strcmp(kind, "crl") == 0)
		return has_block(pem, "X509 CRL") ? NULL : "no CRL (-----BEGIN X509 CRL-----) in the payload";
	if (!has_block(pem, "CERTIFICATE"))
		return "no certificate (-----BEGIN CERTIFICATE-----) in the payload";
	if (strcmp(kind, "ca") == 0 && has_key(pem))
		return "a CA bundle must not carry a private key";
	return NULL;
}

int kg_txn_set(struct kg_daemon *d, const char *kind, const char *name, const char *pem,
	       char *err, size_t errlen)
{
	struct kg_txn **t;
	const char *problem = payload_problem(kind, pem);
	int rc = -1;

	pthread_mutex_lock(&d->lock);
	t = txn_find(d, kind, name);
	if (!t) {
		snprintf(err, errlen, "%s set %s: no open transaction (%s begin %s first)", kind, name,
			 kind, name);
	} else if (problem) {
		snprintf(err, errlen, "%s set %s: %s", kind, name, problem);
	} else {
		char *copy = strdup(pem);
		if (copy) {
			free((*t)->pem);
			(*t)->pem = copy;
			rc = 0;
		} else {
			snprintf(err, errlen, "out of memory");
		}
	}
	pthread_mutex_unlock(&d->lock);
	return rc;
}

static void txn_free(struct kg_txn **t)
{
	struct kg_txn *dead = *t;

	*t = dead->next;
	if (dead->pem)
		OPENSSL_cleanse(dead->pem, strlen(dead->pem)); /* may hold a private key */
	free(dead->pem);
	free(dead->name);
	free(dead);
}

/* Whether the PEM block at p ("-----BEGIN TYPE-----") is a private key. */
static bool block_is_key(const char *p)
{
	const char *type = p + strlen("-----BEGIN ");
	const char *close = strstr(type, "-----");

	return close && memmem(type, (size_t)(close - type), "PRIVATE KEY", 11) != NULL;
}

/* The PEM blocks of one family (certificates, or the key) out of a payload. */
static char *blocks(const char *pem, bool keys)
{
	char *out = calloc(1, strlen(pem) + 1);
	const char *p = pem;
	size_t n = 0;

	while (out && (p = strstr(p, "-----BEGIN "))) {
		const char *end = strstr(p, "-----END ");
		const char *eol = end ? strchr(end, '\n') : NULL;
		if (!end)
			break;
		size_t len = eol ? (size_t)(eol + 1 - p) : strlen(p);
		if (block_is_key(p) == keys) {
			memcpy(out + n, p, len);
			n += len;
		}
		p = end + strlen("-----END ");
	}
	return out;
}

/* Replaces overlays for the transaction's files; old contents go to saved. */
struct saved_overlay {
	const char *path;
	char *data;
	size_t len;
	bool had;
};

static void save_overlay(struct saved_overlay *s, const char *path)
{
	const char *cur = kg_overlay_get(path, &s->len);

	s->path = path;
	s->had = cur != NULL;
	s->data = cur ? malloc(s->len ? s->len : 1) : NULL;
	if (s->data)
		memcpy(s->data, cur, s->len);
}

static void restore_overlay(struct saved_overlay *s)
{
	if (!s->path)
		return;
	kg_overlay_set(s->path, s->had ? s->data : NULL, s->len);
	free(s->data);
}

static int set_overlay(const char *path, const char *data)
{
	return kg_overlay_set(path, data, strlen(data));
}

static int stage_txn(const struct kg_daemon *d, const struct kg_txn *t, struct saved_overlay saved[2],
		     char *err, size_t errlen)
{
	if (strcmp(t->kind, "cert") != 0) {
		save_overlay(&saved[0], t->name);
		return set_overlay(t->name, t->pem);
	}
	const struct kg_identity_spec *id = identity_named(&d->rt->gen->cfg, t->name);
	if (!id || id->pkcs12.path) {
		snprintf(err, errlen, "cert commit %s: a PKCS#12 identity is replaced by updating the file and reloading",
			 t->name);
		return -1;
	}
	char *certs = blocks(t->pem, false), *key = blocks(t->pem, true);
	int rc = certs && key ? 0 : -1;
	save_overlay(&saved[0], id->cert.path);
	if (rc == 0)
		rc = set_overlay(id->cert.path, certs);
	if (rc == 0 && key[0]) {
		save_overlay(&saved[1], id->key.path);
		rc = set_overlay(id->key.path, key);
	}
	if (key)
		OPENSSL_cleanse(key, strlen(key));
	free(certs);
	free(key);
	if (rc < 0)
		snprintf(err, errlen, "out of memory");
	return rc;
}

int kg_txn_commit(struct kg_daemon *d, const char *kind, const char *name, char *err, size_t errlen)
{
	struct saved_overlay saved[2] = { { 0 } };
	struct kg_txn **t;
	int rc = -1;

	pthread_mutex_lock(&d->lock);
	t = txn_find(d, kind, name);
	if (!t) {
		snprintf(err, errlen, "%s commit %s: no open transaction", kind, name);
	} else if (!(*t)->pem) {
		snprintf(err, errlen, "%s commit %s: nothing set (%s set %s first)", kind, name, kind, name);
	} else if (stage_txn(d, *t, saved, err, errlen) == 0 &&
		   rebuild_locked(d, false, err, errlen) == 0) {
		rc = 0;
		free(saved[0].data);
		free(saved[1].data);
		txn_free(t);
	} else {
		restore_overlay(&saved[1]); /* validation failed: nothing changes */
		restore_overlay(&saved[0]);
	}
	pthread_mutex_unlock(&d->lock);
	return rc;
}

int kg_txn_abort(struct kg_daemon *d, const char *kind, const char *name, char *err, size_t errlen)
{
	struct kg_txn **t;
	int rc = -1;

	pthread_mutex_lock(&d->lock);
	t = txn_find(d, kind, name);
	if (t) {
		txn_free(t);
		rc = 0;
	} else {
		snprintf(err, errlen, "%s abort %s: no open transaction", kind, name);
	}
	pthread_mutex_unlock(&d->lock);
	return rc;
}

/* ---- policy set ---- */

static const char *const cond_keys[KG_MATCH_COUNT] = {
	[KG_MATCH_SUBJECT] = "subject", [KG_MATCH_SUBJECT_REGEX] = "subject_regex",
	[KG_MATCH_CN] = "cn", [KG_MATCH_DNS] = "dns", [KG_MATCH_URI] = "uri",
	[KG_MATCH_EMAIL] = "email", [KG_MATCH_ISSUER] = "issuer", [KG_MATCH_SERIAL] = "serial",
	[KG_MATCH_FINGERPRINT] = "fingerprint",
};

static int cond_from_json(const char *key, json_t *v, struct kg_cond *c, char *err, size_t errlen)
{
	size_t n = json_is_array(v) ? json_array_size(v) : 1;

	c->what = KG_MATCH_COUNT;
	for (int k = 0; k < KG_MATCH_COUNT; k++)
		if (strcmp(cond_keys[k], key) == 0)
			c->what = (enum kg_match)k;
	if (c->what == KG_MATCH_COUNT)
		return snprintf(err, errlen, "policy set: unknown rule condition '%s'", key), -1;
	c->at = (struct kg_where){ .key = "policy set" };
	c->values = calloc(n ? n : 1, sizeof(char *));
	if (!c->values || !n)
		return snprintf(err, errlen, "policy set: %s: no values", key), -1;
	for (size_t i = 0; i < n; i++) {
		json_t *s = json_is_array(v) ? json_array_get(v, i) : v;
		if (!json_is_string(s))
			return snprintf(err, errlen, "policy set: %s: expected a string or a list of strings",
					key), -1;
		c->values[c->nvalues++] = strdup(json_string_value(s));
	}
	return 0;
}

static int rule_from_json(json_t *obj, struct kg_rule_spec *r, char *err, size_t errlen)
{
	const char *key;
	json_t *v;

	if (!json_is_object(obj))
		return snprintf(err, errlen, "policy set: a rule must be an object"), -1;
	r->at = (struct kg_where){ .key = "policy set" };
	r->conds = calloc(json_object_size(obj) + 1, sizeof(*r->conds));
	if (!r->conds)
		return snprintf(err, errlen, "out of memory"), -1;
	json_object_foreach(obj, key, v) {
		if (strcmp(key, "name") == 0) {
			if (!json_is_string(v))
				return snprintf(err, errlen, "policy set: name: expected a string"), -1;
			r->name = strdup(json_string_value(v));
			continue;
		}
		if (cond_from_json(key, v, &r->conds[r->nconds++], err, errlen) < 0)
			return -1;
	}
	return 0;
}

static int rules_from_json(json_t *list, const char *which, struct kg_rule_spec **out, size_t *n,
			   char *err, size_t errlen)
{
	*n = 0;
	*out = calloc(json_array_size(list) + 1, sizeof(**out));
	if (!*out)
		return snprintf(err, errlen, "out of memory"), -1;
	if (list && !json_is_array(list))
		return snprintf(err, errlen, "policy set: %s: expected a list of rules", which), -1;
	for (size_t i = 0; i < json_array_size(list); i++) {
		(*n)++;
		if (rule_from_json(json_array_get(list, i), &(*out)[i], err, errlen) < 0)
			return -1;
	}
	return 0;
}

static void override_free(struct kg_policy_override *o)
{
	kg_rule_list_free(o->rules.allow, o->rules.nallow);
	kg_rule_list_free(o->rules.deny, o->rules.ndeny);
	free(o->listener);
	free(o->site);
	free(o);
}

/* Replaces any earlier override for the same place; returns the old one. */
static struct kg_policy_override *install_override(struct kg_daemon *d, struct kg_policy_override *o)
{
	for (struct kg_policy_override **p = &d->policies; *p; p = &(*p)->next) {
		struct kg_policy_override *cur = *p;
		bool same = strcmp(cur->listener, o->listener) == 0 &&
			    ((!cur->site && !o->site) || (cur->site && o->site && !strcmp(cur->site, o->site)));
		if (!same)
			continue;
		o->next = cur->next;
		*p = o;
		cur->next = NULL;
		return cur;
	}
	o->next = d->policies;
	d->policies = o;
	return NULL;
}

static void uninstall_override(struct kg_daemon *d, struct kg_policy_override *o,
			       struct kg_policy_override *old)
{
	for (struct kg_policy_override **p = &d->policies; *p; p = &(*p)->next) {
		if (*p != o)
			continue;
		if (old) {
			old->next = o->next;
			*p = old;
		} else {
			*p = o->next;
		}
		return;
	}
}

int kg_policy_override_set(struct kg_daemon *d, const char *listener, const char *site,
			   json_t *allow, json_t *deny, char *err, size_t errlen)
{
	struct kg_policy_override *o = calloc(1, sizeof(*o)), *old;
	int rc = -1;

	if (!o || !(o->listener = strdup(listener)) || (site && !(o->site = strdup(site)))) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (rules_from_json(allow, "allow", &o->rules.allow, &o->rules.nallow, err, errlen) < 0 ||
	    rules_from_json(deny, "deny", &o->rules.deny, &o->rules.ndeny, err, errlen) < 0)
		goto fail;
	pthread_mutex_lock(&d->lock);
	old = install_override(d, o);
	rc = rebuild_locked(d, false, err, errlen);
	if (rc < 0) {
		uninstall_override(d, o, old);
		pthread_mutex_unlock(&d->lock);
		goto fail;
	}
	if (old)
		override_free(old);
	pthread_mutex_unlock(&d->lock);
	return 0;
fail:
	if (o)
		override_free(o);
	return rc;
}

void kg_daemon_free_runtime(struct kg_daemon *d)
{
	drop_runtime_changes(d);
	while (d->txns)
		txn_free(&d->txns);
}
