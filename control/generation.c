/* Builds a generation: per listener, loads identities, per site trust and
 * policy, then one SSL_CTX per distinct (site, identity set) a name can
 * reach, and a sorted name table to find it during the ClientHello. */
#include "generation.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KG_MAX_IDS 64 /* identities per listener: a route's set is a 64-bit mask */

static bool strv_has(char *const *v, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcasecmp(v[i], name) == 0)
			return true;
	return false;
}

/* "*.example.com" for "api.example.com"; empty when name has no dot. */
static void wildcard_of(const char *name, char *buf, size_t cap)
{
	const char *dot = strchr(name, '.');

	buf[0] = '\0';
	if (dot && dot[1])
		snprintf(buf, cap, "*%s", dot);
}

static uint64_t ids_serving(const struct kg_listener_rt *l, const char *pattern)
{
	uint64_t mask = 0;

	for (size_t i = 0; i < l->nids; i++)
		if (strv_has(l->ids[i].spec->sni, l->ids[i].spec->nsni, pattern))
			mask |= 1ull << i;
	return mask;
}

static bool same_names(const struct kg_identity_spec *a, const struct kg_identity_spec *b)
{
	if (a->nsni != b->nsni)
		return false;
	for (size_t i = 0; i < a->nsni; i++)
		if (!strv_has(b->sni, b->nsni, a->sni[i]))
			return false;
	return true;
}

/* The default identity, with its partners of other key types for the same
 * names: an ECDSA + RSA pair stays a pair for clients that send no SNI. */
static uint64_t default_ids(const struct kg_listener_rt *l)
{
	uint64_t mask = 0;
	size_t d = 0;

	for (size_t i = 0; i < l->nids; i++)
		if (l->ids[i].spec->is_default)
			mask |= 1ull << (d = i);
	if (!mask)
		mask = 1; /* the parser makes one default; be safe anyway */
	for (size_t i = 0; i < l->nids; i++)
		if (!l->ids[i].spec->is_default && same_names(l->ids[i].spec, l->ids[d].spec) &&
		    strcmp(l->ids[i].type, l->ids[d].type) != 0)
			mask |= 1ull << i;
	return mask;
}

/* Exact name first, then its wildcard, then the defaults. */
static uint64_t ids_for(const struct kg_listener_rt *l, const char *name)
{
	char wild[300];
	uint64_t mask = ids_serving(l, name);

	if (!mask && name[0] != '*') {
		wildcard_of(name, wild, sizeof(wild));
		mask = wild[0] ? ids_serving(l, wild) : 0;
	}
	return mask ? mask : default_ids(l);
}

static unsigned site_serving(const struct kg_listener_rt *l, const char *pattern)
{
	for (size_t i = 1; i < l->nsites; i++) {
		const struct kg_site_spec *s = &l->spec->sites[i - 1];
		if (strv_has(s->names, s->nnames, pattern))
			return (unsigned)i;
	}
	return 0;
}

static unsigned site_for(const struct kg_listener_rt *l, const char *name)
{
	char wild[300];
	unsigned site = site_serving(l, name);

	if (!site && name[0] != '*') {
		wildcard_of(name, wild, sizeof(wild));
		site = wild[0] ? site_serving(l, wild) : 0;
	}
	return site;
}

static int load_identities(struct kg_listener_rt *l, char *err, size_t errlen)
{
	const struct kg_listener_spec *s = l->spec;
	char where[512];

	if (s->nids > KG_MAX_IDS) {
		kg_where_format(&s->at, where, sizeof(where));
		snprintf(err, errlen, "%s: at most %d identities per listener", where, KG_MAX_IDS);
		return -1;
	}
	l->ids = calloc(s->nids ? s->nids : 1, sizeof(*l->ids));
	if (!l->ids)
		return snprintf(err, errlen, "out of memory"), -1;
	for (size_t i = 0; i < s->nids; i++) {
		if (kg_tls_load_identity(&s->ids[i], &l->ids[i], err, errlen) < 0)
			return -1;
		l->nids = i + 1;
	}
	return 0;
}

static struct kg_upstream *upstream_new(const struct kg_backend_tls *b, char *err, size_t errlen)
{
	struct kg_upstream *up = calloc(1, sizeof(*up));

	if (!up)
		return snprintf(err, errlen, "out of memory"), NULL;
	if (kg_tls_upstream_new(b, up, err, errlen) < 0) {
		free(up);
		return NULL;
	}
	return up;
}

/* Each backend with TLS gets the site's context (backend_tls) or its own,
 * and a session cache slot of its own: sessions never cross backends. */
static int build_backends(struct kg_gen *g, struct kg_site *site, char *err, size_t errlen)
{
	const struct kg_auth_spec *auth = site->auth;

	site->backends = calloc(auth->nbackends ? auth->nbackends : 1, sizeof(*site->backends));
	if (!site->backends)
		return snprintf(err, errlen, "out of memory"), -1;
	for (size_t i = 0; i < auth->nbackends; i++) {
		const struct kg_backend_tls *b = kg_backend_tls_of(auth, i);
		struct kg_backend_rt *be = &site->backends[i];

		if (!b)
			continue;
		be->up = b == auth->backend_tls ? site->up : upstream_new(b, err, errlen);
		if (!be->up)
			return -1;
		be->cache_slot = g->nup_slots++;
	}
	return 0;
}

static int build_site(struct kg_gen *g, struct kg_site *site, const struct kg_auth_spec *auth,
		      const char *label, char *err, size_t errlen)
{
	site->auth = auth;
	site->label = label;
	if (kg_tls_trust_new(auth, &site->trust, err, errlen) < 0)
		return -1;
	if (auth->backend_tls && !(site->up = upstream_new(auth->backend_tls, err, errlen)))
		return -1;
	if (build_backends(g, site, err, errlen) < 0)
		return -1;
	site->policy = kg_policy_compile(&auth->rules, err, errlen);
	return site->policy ? 0 : -1;
}

static int build_sites(struct kg_listener_rt *l, char *err, size_t errlen)
{
	const struct kg_listener_spec *s = l->spec;

	l->sites = calloc(s->nsites + 1, sizeof(*l->sites));
	if (!l->sites)
		return snprintf(err, errlen, "out of memory"), -1;
	/* Counted before it is built: a half-built site is freed with the rest. */
	l->nsites = 1;
	for (size_t i = 0; i <= s->nsites; i++)
		l->sites[i].index = (unsigned)i;
	if (build_site(l->gen, &l->sites[0], &s->auth, "default", err, errlen) < 0)
		return -1;
	for (size_t i = 0; i < s->nsites; i++) {
		const struct kg_site_spec *site = &s->sites[i];
		l->nsites = i + 2;
		if (build_site(l->gen, &l->sites[i + 1], &site->auth,
			       site->nnames ? site->names[0] : "site", err, errlen) < 0)
			return -1;
	}
	return 0;
}

/* The route for (site, identity set), building its context the first time. */
static int route_index(struct kg_listener_rt *l, unsigned site, uint64_t mask,
		       kg_prepare_ctx_fn prepare, char *err, size_t errlen)
{
	const struct kg_server_id *ids[KG_MAX_IDS];
	size_t n = 0;

	for (size_t i = 0; i < l->nroutes; i++)
		if (l->routes[i].site == &l->sites[site] && l->routes[i].idmask == mask)
			return (int)i;
	for (size_t i = 0; i < l->nids; i++)
		if (mask & (1ull << i))
			ids[n++] = &l->ids[i];
	struct kg_route *r = &l->routes[l->nroutes];
	r->ctx = kg_tls_ctx_new(l->spec, l->sites[site].auth, &l->sites[site].trust, ids, n,
				err, errlen);
	if (!r->ctx)
		return -1;
	r->site = &l->sites[site];
	r->listener = l;
	r->idmask = mask;
	if (prepare)
		prepare(r->ctx, r);
	return (int)l->nroutes++;
}

static int add_name(struct kg_listener_rt *l, const char *pattern)
{
	for (size_t i = 0; i < l->nnames; i++)
		if (strcmp(l->names[i].name, pattern) == 0)
			return 0;
	char *lower = strdup(pattern);
	if (!lower)
		return -1;
	for (char *p = lower; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	l->names[l->nnames++].name = lower;
	return 0;
}

static size_t count_patterns(const struct kg_listener_spec *s)
{
	size_t n = 0;

	for (size_t i = 0; i < s->nids; i++)
		n += s->ids[i].nsni;
	for (size_t i = 0; i < s->nsites; i++)
		n += s->sites[i].nnames;
	return n;
}

static int collect_names(struct kg_listener_rt *l)
{
	const struct kg_listener_spec *s = l->spec;

	l->names = calloc(count_patterns(s) + 1, sizeof(*l->names));
	if (!l->names)
		return -1;
	for (size_t i = 0; i < s->nids; i++)
		for (size_t j = 0; j < s->ids[i].nsni; j++)
			if (add_name(l, s->ids[i].sni[j]) < 0)
				return -1;
	for (size_t i = 0; i < s->nsites; i++)
		for (size_t j = 0; j < s->sites[i].nnames; j++)
			if (add_name(l, s->sites[i].names[j]) < 0)
				return -1;
	return 0;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(((const struct kg_name_route *)a)->name, ((const struct kg_name_route *)b)->name);
}

static int build_routes(struct kg_listener_rt *l, kg_prepare_ctx_fn prepare, char *err,
			size_t errlen)
{
	int r;

	if (collect_names(l) < 0)
		return snprintf(err, errlen, "out of memory"), -1;
	l->routes = calloc(l->nnames + 1, sizeof(*l->routes));
	if (!l->routes)
		return snprintf(err, errlen, "out of memory"), -1;
	if (route_index(l, 0, default_ids(l), prepare, err, errlen) < 0)
		return -1;
	for (size_t i = 0; i < l->nnames; i++) {
		const char *name = l->names[i].name;
		r = route_index(l, site_for(l, name), ids_for(l, name), prepare, err, errlen);
		if (r < 0)
			return -1;
		l->names[i].route = (unsigned)r;
	}
	qsort(l->names, l->nnames, sizeof(*l->names), cmp_names);
	return 0;
}

/* Every client context once: the site's, then each backend's own. */
static void prepare_upstreams(const struct kg_site *site, kg_prepare_ctx_fn prepare)
{
	if (site->up)
		prepare(site->up->ctx, NULL);
	for (size_t i = 0; i < site->auth->nbackends; i++)
		if (site->backends[i].up && site->backends[i].up != site->up)
			prepare(site->backends[i].up->ctx, NULL);
}

static void free_site(struct kg_site *site)
{
	kg_tls_trust_free(&site->trust);
	kg_policy_free(site->policy);
	for (size_t i = 0; site->backends && i < site->auth->nbackends; i++) {
		struct kg_upstream *up = site->backends[i].up;
		if (up && up != site->up) {
			kg_tls_upstream_free(up);
			free(up);
		}
	}
	free(site->backends);
	if (site->up)
		kg_tls_upstream_free(site->up);
	free(site->up);
}

static int build_listener(struct kg_gen *g, unsigned index, kg_prepare_ctx_fn prepare, char *err,
			  size_t errlen)
{
	struct kg_listener_rt *l = &g->listeners[index];

	l->spec = &g->cfg.listeners[index];
	l->index = index;
	l->gen = g;
	if (load_identities(l, err, errlen) < 0 || build_sites(l, err, errlen) < 0)
		return -1;
	for (size_t i = 0; prepare && i < l->nsites; i++)
		prepare_upstreams(&l->sites[i], prepare);
	return build_routes(l, prepare, err, errlen);
}

static void free_listener(struct kg_listener_rt *l)
{
	for (size_t i = 0; i < l->nroutes; i++)
		SSL_CTX_free(l->routes[i].ctx);
	free(l->routes);
	for (size_t i = 0; i < l->nnames; i++)
		free(l->names[i].name);
	free(l->names);
	for (size_t i = 0; i < l->nsites; i++)
		free_site(&l->sites[i]);
	free(l->sites);
	for (size_t i = 0; i < l->nids; i++)
		kg_tls_identity_free(&l->ids[i]);
	free(l->ids);
}

static void gen_free(struct kg_gen *g)
{
	for (size_t i = 0; i < g->nlisteners; i++)
		free_listener(&g->listeners[i]);
	free(g->listeners);
	kg_config_free(&g->cfg);
	free(g);
}

struct kg_gen *kg_gen_build(struct kg_config *cfg, uint64_t number, kg_prepare_ctx_fn prepare,
			    char *err, size_t errlen)
{
	struct kg_gen *g = calloc(1, sizeof(*g));

	if (!g) {
		kg_config_free(cfg);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	/* Moved, not copied: kg_where pointers into cfg->file stay valid. */
	g->cfg = *cfg;
	memset(cfg, 0, sizeof(*cfg));
	atomic_init(&g->refs, 1);
	g->number = number;
	g->listeners = calloc(g->cfg.nlisteners ? g->cfg.nlisteners : 1, sizeof(*g->listeners));
	if (!g->listeners) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < g->cfg.nlisteners; i++) {
		g->nlisteners = i + 1;
		if (build_listener(g, (unsigned)i, prepare, err, errlen) < 0)
			goto fail;
	}
	kg_tls_build_cache_clear();
	return g;
fail:
	kg_tls_build_cache_clear();
	gen_free(g);
	return NULL;
}

void kg_gen_ref(struct kg_gen *g)
{
	atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
}

void kg_gen_unref(struct kg_gen *g)
{
	if (g && atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) == 1)
		gen_free(g);
}

const struct kg_route *kg_listener_route(const struct kg_listener_rt *l, const char *sni)
{
	char name[256], wild[260];
	struct kg_name_route key = { .name = name }, *hit;
	size_t n;

	if (!sni || !l->nnames)
		return &l->routes[0];
	n = strnlen(sni, sizeof(name) - 1);
	for (size_t i = 0; i < n; i++)
		name[i] = (char)tolower((unsigned char)sni[i]);
	name[n] = '\0';
	if (n && name[n - 1] == '.') /* "example.com." names the same host */
		name[n - 1] = '\0';
	hit = bsearch(&key, l->names, l->nnames, sizeof(*l->names), cmp_names);
	if (!hit) {
		wildcard_of(name, wild, sizeof(wild));
		key.name = wild;
		hit = wild[0] ? bsearch(&key, l->names, l->nnames, sizeof(*l->names), cmp_names) : NULL;
	}
	return &l->routes[hit ? hit->route : 0];
}
