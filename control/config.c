/* The configuration model's defaults, its formatting of "where", and freeing. */
#include "config.h"

#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kg_auth_defaults(struct kg_auth_spec *a)
{
	memset(a, 0, sizeof(*a));
	a->client_auth = KG_AUTH_REQUIRED;
	a->crl_check = KG_CRL_CHAIN;
	a->verify_depth = 4;
	a->require_client_eku = true;
}

void kg_config_defaults(struct kg_config *c)
{
	memset(c, 0, sizeof(*c));
	c->log_format = KG_LOG_TEXT;
	c->ktls = KG_KTLS_AUTO;
	c->max_conns = 10000;
	c->handshake_timeout_ms = 10000;
	c->idle_timeout_ms = 300000;
	c->connect_timeout_ms = 5000;
	c->drain_timeout_ms = 30000;
	c->ticket_key_rotation_ms = 3600 * 1000;
	c->session_cache = 4096; /* ~28 MiB when full: ~7 KiB per parsed client leaf */
	c->session_timeout_s = 300;
	c->kill_revoked_on_crl_update = true;
	c->dpdk_memory_mb = KG_DPDK_MEMORY_MB_DEFAULT;
	c->dpdk_queue_depth = KG_DPDK_QUEUE_DEPTH_DEFAULT;
}

void kg_config_apply_overrides(struct kg_config *c, const struct kg_options *o)
{
	if (o->workers)
		c->workers = o->workers;
	if (o->log_format_set)
		c->log_format = o->log_format;
	if (o->record_engine_set) {
		c->record_engine = o->record_engine;
		c->record_engine_at = (struct kg_where){ .key = "--record-engine" };
		for (size_t i = 0; i < c->nlisteners; i++)
			c->listeners[i].record_engine = o->record_engine;
	}
	if (o->ktls_set) {
		c->ktls = o->ktls;
		for (size_t i = 0; i < c->nlisteners; i++)
			c->listeners[i].ktls = o->ktls;
	}
}

void kg_where_format(const struct kg_where *w, char *buf, size_t cap)
{
	if (!w->file)
		snprintf(buf, cap, "%s", w->key ? w->key : "command line");
	else
		snprintf(buf, cap, "%s:%u:%u: %s", w->file, w->line, w->col, w->key ? w->key : "");
}

void kg_file_format(const struct kg_file *f, char *buf, size_t cap)
{
	char where[512];

	kg_where_format(&f->at, where, sizeof(where));
	snprintf(buf, cap, f->at.file ? "%s: %s" : "%s %s", where, f->path ? f->path : "");
}

static void free_strv(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

void kg_rule_list_free(struct kg_rule_spec *r, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < r[i].nconds; j++)
			free_strv(r[i].conds[j].values, r[i].conds[j].nvalues);
		free(r[i].conds);
		free(r[i].name);
	}
	free(r);
}

void kg_file_list_free(struct kg_file *f, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(f[i].path);
	free(f);
}

void kg_auth_free(struct kg_auth_spec *a)
{
	kg_file_list_free(a->client_cas, a->nclient_cas);
	kg_file_list_free(a->crls, a->ncrls);
	kg_rule_list_free(a->rules.allow, a->rules.nallow);
	kg_rule_list_free(a->rules.deny, a->rules.ndeny);
	kg_backend_list_free(a->backends, a->nbackends);
	kg_backend_tls_free(a->backend_tls);
	memset(a, 0, sizeof(*a));
}

void kg_backend_list_free(struct kg_backend_spec *b, size_t n)
{
	for (size_t i = 0; b && i < n; i++)
		kg_backend_tls_free(b[i].tls);
	free(b);
}

const struct kg_backend_tls *kg_backend_tls_of(const struct kg_auth_spec *a, size_t backend)
{
	const struct kg_backend_spec *b = &a->backends[backend];

	if (b->plain)
		return NULL;
	return b->tls ? b->tls : a->backend_tls;
}

static int copy_strv(char ***dst, size_t *ndst, char *const *src, size_t n)
{
	*dst = n ? calloc(n, sizeof(**dst)) : NULL;
	*ndst = 0;
	if (n && !*dst)
		return -1;
	for (; *ndst < n; (*ndst)++)
		if (!((*dst)[*ndst] = strdup(src[*ndst])))
			return -1;
	return 0;
}

static int copy_files(struct kg_file **dst, size_t *ndst, const struct kg_file *src, size_t n)
{
	*dst = n ? calloc(n, sizeof(**dst)) : NULL;
	*ndst = 0;
	if (n && !*dst)
		return -1;
	for (; *ndst < n; (*ndst)++) {
		(*dst)[*ndst].at = src[*ndst].at;
		if (!((*dst)[*ndst].path = strdup(src[*ndst].path)))
			return -1;
	}
	return 0;
}

static int copy_rules(struct kg_rule_spec **dst, size_t *ndst, const struct kg_rule_spec *src,
		      size_t n)
{
	*dst = n ? calloc(n, sizeof(**dst)) : NULL;
	*ndst = 0;
	if (n && !*dst)
		return -1;
	/* Counted before filled (calloc'd), so a failure half-way is still freed. */
	while (*ndst < n) {
		struct kg_rule_spec *d = &(*dst)[*ndst];
		const struct kg_rule_spec *s = &src[(*ndst)++];

		d->at = s->at;
		if (s->name && !(d->name = strdup(s->name)))
			return -1;
		d->conds = s->nconds ? calloc(s->nconds, sizeof(*d->conds)) : NULL;
		if (s->nconds && !d->conds)
			return -1;
		while (d->nconds < s->nconds) {
			struct kg_cond *dc = &d->conds[d->nconds];
			const struct kg_cond *sc = &s->conds[d->nconds++];

			dc->what = sc->what;
			dc->at = sc->at;
			if (copy_strv(&dc->values, &dc->nvalues, sc->values, sc->nvalues) < 0)
				return -1;
		}
	}
	return 0;
}

void kg_backend_tls_free(struct kg_backend_tls *b)
{
	if (!b)
		return;
	kg_identity_spec_free(&b->id);
	kg_file_list_free(b->cas, b->ncas);
	kg_file_list_free(b->crls, b->ncrls);
	free(b->verify_name);
	free(b->ciphers);
	free(b->ciphersuites);
	free(b);
}

static int copy_file(struct kg_file *dst, const struct kg_file *src)
{
	dst->at = src->at;
	dst->path = src->path ? strdup(src->path) : NULL;
	return src->path && !dst->path ? -1 : 0;
}

static int copy_str(char **dst, const char *src)
{
	*dst = src ? strdup(src) : NULL;
	return src && !*dst ? -1 : 0;
}

static struct kg_backend_tls *copy_backend_tls(const struct kg_backend_tls *s)
{
	struct kg_backend_tls *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	d->id.at = s->id.at;
	d->min_version = s->min_version;
	d->max_version = s->max_version;
	d->session_cache = s->session_cache;
	d->at = s->at;
	if (copy_file(&d->id.cert, &s->id.cert) < 0 || copy_file(&d->id.key, &s->id.key) < 0 ||
	    copy_file(&d->id.pkcs12, &s->id.pkcs12) < 0 ||
	    copy_file(&d->id.passphrase_file, &s->id.passphrase_file) < 0 ||
	    copy_files(&d->cas, &d->ncas, s->cas, s->ncas) < 0 ||
	    copy_files(&d->crls, &d->ncrls, s->crls, s->ncrls) < 0 ||
	    copy_str(&d->verify_name, s->verify_name) < 0 || copy_str(&d->ciphers, s->ciphers) < 0 ||
	    copy_str(&d->ciphersuites, s->ciphersuites) < 0) {
		kg_backend_tls_free(d);
		return NULL;
	}
	return d;
}

static int copy_backends(struct kg_auth_spec *dst, const struct kg_auth_spec *src)
{
	dst->backends = calloc(src->nbackends, sizeof(*dst->backends));
	if (!dst->backends)
		return -1;
	dst->nbackends = src->nbackends;
	for (size_t i = 0; i < src->nbackends; i++) {
		dst->backends[i] = src->backends[i];
		dst->backends[i].tls = NULL;
		if (src->backends[i].tls &&
		    !(dst->backends[i].tls = copy_backend_tls(src->backends[i].tls)))
			return -1;
	}
	return 0;
}

/* Sites start from their listener's settings, so every list is duplicated:
 * a site's override then frees only its own copy. */
int kg_auth_copy(struct kg_auth_spec *dst, const struct kg_auth_spec *src)
{
	*dst = *src;
	dst->client_cas = NULL, dst->nclient_cas = 0;
	dst->crls = NULL, dst->ncrls = 0;
	memset(&dst->rules, 0, sizeof(dst->rules));
	dst->backends = NULL, dst->nbackends = 0;
	dst->backend_tls = NULL;
	if (src->backend_tls && !(dst->backend_tls = copy_backend_tls(src->backend_tls)))
		goto error;
	if (copy_files(&dst->client_cas, &dst->nclient_cas, src->client_cas, src->nclient_cas) < 0 ||
	    copy_files(&dst->crls, &dst->ncrls, src->crls, src->ncrls) < 0 ||
	    copy_rules(&dst->rules.allow, &dst->rules.nallow, src->rules.allow, src->rules.nallow) < 0 ||
	    copy_rules(&dst->rules.deny, &dst->rules.ndeny, src->rules.deny, src->rules.ndeny) < 0)
		goto error;
	if (src->nbackends && copy_backends(dst, src) < 0)
		goto error;
	return 0;
error:
	kg_auth_free(dst);
	return -1;
}

void kg_identity_spec_free(struct kg_identity_spec *id)
{
	free(id->cert.path);
	free(id->key.path);
	free(id->pkcs12.path);
	free(id->passphrase_file.path);
	free_strv(id->sni, id->nsni);
}

static void free_listener(struct kg_listener_spec *l)
{
	free(l->name);
	free(l->addrs);
	free(l->ciphers);
	free(l->ciphersuites);
	free(l->groups);
	for (size_t i = 0; i < l->nids; i++)
		kg_identity_spec_free(&l->ids[i]);
	free(l->ids);
	kg_auth_free(&l->auth);
	for (size_t i = 0; i < l->nsites; i++) {
		free_strv(l->sites[i].names, l->sites[i].nnames);
		kg_auth_free(&l->sites[i].auth);
	}
	free(l->sites);
}

void kg_config_free(struct kg_config *c)
{
	for (size_t i = 0; i < c->nlisteners; i++)
		free_listener(&c->listeners[i]);
	free(c->listeners);
	free(c->cpus);
	free(c->user);
	free(c->group);
	free(c->log_file);
	free(c->control_socket);
	free(c->dpdk_vdevs);
	free(c->file);
	memset(c, 0, sizeof(*c));
}
