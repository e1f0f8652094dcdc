/* What the control thread and the signal loop share: the workers, the
 * current generation and how to replace it, runtime changes made through
 * the control socket (file overlays, policy overrides, transactions). */
#ifndef KG_DAEMON_H
#define KG_DAEMON_H
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "generation.h"
#include "options.h"
#include "worker.h"

struct kg_policy_override;
struct kg_txn;

struct kg_daemon {
	const struct kg_options *opt;
	struct kg_runtime *rt;        /* rt->gen: the current generation, the daemon's reference */
	struct kg_worker *workers;
	unsigned nworkers;
	time_t started;
	char ktls_desc[256];
	bool ktls_available;
	char engine_desc[256];  /* the record engine chosen at start, and why */
	pthread_mutex_t lock;         /* one change of generation at a time */
	uint64_t gen_number;
	time_t gen_built;
	struct kg_policy_override *policies;
	struct kg_txn *txns;
};

/* Re-reads the configuration source. drop_runtime: forget overlays and
 * policy overrides first (reload, SIGHUP); else keep them (commit, policy
 * set). On success the new generation is live for new connections; on
 * failure nothing changed and err says why. Takes d->lock. */
int kg_daemon_rebuild(struct kg_daemon *d, bool drop_runtime, char *err, size_t errlen);

/* Transactions on a file the configuration names (kind: "cert", "ca", "crl"). */
int kg_txn_begin(struct kg_daemon *d, const char *kind, const char *name, char *err, size_t errlen);
int kg_txn_set(struct kg_daemon *d, const char *kind, const char *name, const char *pem,
	       char *err, size_t errlen);
int kg_txn_commit(struct kg_daemon *d, const char *kind, const char *name, char *err, size_t errlen);
int kg_txn_abort(struct kg_daemon *d, const char *kind, const char *name, char *err, size_t errlen);

/* Replaces the rules of a listener (site NULL) or of one of its SNI sites. */
int kg_policy_override_set(struct kg_daemon *d, const char *listener, const char *site,
			   json_t *allow, json_t *deny, char *err, size_t errlen);

unsigned kg_daemon_runtime_changes(const struct kg_daemon *d);
/* sd_notify when built with libsystemd (Type=notify units), else nothing. */
void kg_daemon_notify(const char *state);
/* Closes (resets) connections matching f on every worker; how many. */
unsigned kg_daemon_kill(struct kg_daemon *d, const struct kg_kill_filter *f);
void kg_daemon_free_runtime(struct kg_daemon *d);
#endif
