/* Messages from the control thread to a worker: a new generation, a stats or
 * connection snapshot, a kill, a stop. The control thread never touches a
 * connection; the worker does it on its own thread when it reads the box. */
#ifndef KG_MAILBOX_H
#define KG_MAILBOX_H
#include <netinet/in.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "certtext.h"
#include "stats.h"

struct kg_gen;
struct kg_worker;

enum kg_wmsg_kind {
	KG_WMSG_STOP,     /* stop accepting and drain */
	KG_WMSG_GEN,      /* new connections start on msg->gen (a reference for the worker) */
	KG_WMSG_STATS,    /* copy the counters into msg->stats */
	KG_WMSG_CONNS,    /* describe live connections into msg->views */
	KG_WMSG_KILL,     /* close the connections msg->kill matches; count in msg->killed */
};

/* One revoked certificate: how the access log spells its issuer and serial. */
struct kg_revoked {
	const char *issuer; /* RFC 2253 text */
	const char *serial; /* uppercase hex, no leading zeros */
};

/* Which connections a kill is for: every set field must match. */
struct kg_kill_filter {
	uint64_t id;        /* 0: any */
	const char *serial; /* normalised like kg_revoked.serial */
	const char *subject;
	const char *spiffe;
	const struct kg_revoked *revoked; /* sorted by kg_revoked_cmp; NULL: not used */
	size_t nrevoked;
	const uint64_t *ids;      /* any of these ids (with nids > 0) */
	size_t nids;
	bool spare_ktls;          /* kTLS matches are described in views, not closed: the
				   * control thread resets them through SOCK_DESTROY first */
};

struct kg_conn_view {
	uint64_t id;
	unsigned worker;
	char client[64], sni[256], subject[256], serial[80], spiffe[256], backend[128];
	const char *state, *path, *version, *cipher;
	const char *up_version; /* TLS towards the backend; NULL: plain or not yet */
	uint64_t bytes_in, bytes_out, age_ms;
	struct sockaddr_storage local, peer; /* the client socket, for the kernel's view */
	bool ktls;
};

struct kg_wmsg {
	enum kg_wmsg_kind kind;
	struct kg_wmsg *next;
	atomic_int refs;           /* sender and worker each drop one */
	sem_t done;                /* posted by the worker when handled */
	struct kg_gen *gen;
	struct kg_worker_stats stats;
	struct kg_conn_view *views;
	size_t nviews, cap;
	struct kg_kill_filter kill;
	unsigned killed;
};

/* A message with two references: the caller's and the worker's. */
struct kg_wmsg *kg_wmsg_new(enum kg_wmsg_kind kind);
void kg_wmsg_put(struct kg_wmsg *m);
/* Released unhandled (the worker has stopped): wakes the sender, drops gen. */
void kg_wmsg_abandon(struct kg_wmsg *m);
/* Posts and waits up to timeout_ms for the worker; false on timeout (the
 * message stays valid for the worker, the caller must only put it). */
bool kg_worker_call(struct kg_worker *w, struct kg_wmsg *m, unsigned timeout_ms);
/* Posts without waiting (the caller's reference is handed over). */
void kg_worker_post(struct kg_worker *w, struct kg_wmsg *m);

int kg_revoked_cmp(const void *a, const void *b);
#endif
