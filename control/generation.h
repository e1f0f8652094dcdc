/* A generation: everything built from one configuration (identities, client
 * trust, policies, one SSL_CTX per listener x SNI route), immutable once
 * built. Workers take a reference per connection, so a reload can publish a
 * new generation while established connections keep theirs (DESIGN §1). */
#ifndef KG_GENERATION_H
#define KG_GENERATION_H
#include <openssl/ssl.h>
#include <stdatomic.h>
#include <stdint.h>

#include "config.h"
#include "policy.h"
#include "tlsctx.h"

/* How one of a site's backends is reached. */
struct kg_backend_rt {
	struct kg_upstream *up; /* NULL: plain TCP; the site's up, or the backend's own */
	unsigned cache_slot;    /* its session cache, unique in the generation */
};

/* The listener's own auth block, or one of its per-SNI sites. */
struct kg_site {
	const struct kg_auth_spec *auth;
	struct kg_client_trust trust;
	struct kg_policy *policy;
	const char *label; /* the site's first name, or "default" */
	struct kg_upstream *up; /* backend_tls; NULL: none (a backend may have its own) */
	struct kg_backend_rt *backends; /* [auth->nbackends] */
	unsigned index;    /* in its listener's sites[] */
};

struct kg_listener_rt;

/* Where a client asking for a name lands: one site, one set of identities. */
struct kg_route {
	SSL_CTX *ctx;
	const struct kg_site *site;
	struct kg_listener_rt *listener;
	uint64_t idmask; /* which of the listener's identities the context serves */
};

struct kg_name_route {
	char *name; /* lowercase; exact or "*.suffix" */
	unsigned route;
};

struct kg_listener_rt {
	const struct kg_listener_spec *spec;
	unsigned index;
	struct kg_gen *gen;
	struct kg_server_id *ids;
	size_t nids;
	struct kg_site *sites; /* [0]: the listener's own auth */
	size_t nsites;
	struct kg_route *routes; /* [0]: no SNI, or a name nobody serves */
	size_t nroutes;
	struct kg_name_route *names; /* sorted by name */
	size_t nnames;
};

struct kg_gen {
	atomic_uint refs;
	uint64_t number;
	struct kg_config cfg;
	struct kg_listener_rt *listeners;
	size_t nlisteners;
	unsigned nup_slots; /* backends reached over TLS: the size of a worker's session cache */
};

/* Called for every context built: the dataplane installs its callbacks.
 * route is NULL for a site's client context towards its backends. */
typedef void (*kg_prepare_ctx_fn)(SSL_CTX *ctx, struct kg_route *route);

/* Builds a generation from cfg, which it takes over (cfg is emptied, even on
 * failure). NULL with one line in err naming the value that is wrong. */
struct kg_gen *kg_gen_build(struct kg_config *cfg, uint64_t number, kg_prepare_ctx_fn prepare,
			    char *err, size_t errlen);
void kg_gen_ref(struct kg_gen *g);
void kg_gen_unref(struct kg_gen *g);

/* The route for a client's SNI (NULL or unknown: the default route). */
const struct kg_route *kg_listener_route(const struct kg_listener_rt *l, const char *sni);
#endif
