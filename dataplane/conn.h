/* One client connection: the state machine every phase (handshake, backend
 * connect, relay) plugs into. Only its worker ever touches it. */
#ifndef KG_CONN_H
#define KG_CONN_H
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "bufpool.h"
#include "dpdk.h"
#include "ktls.h"
#include "relay.h"
#include "ring.h"
#include "srclimit.h"
#include "worker.h"

enum kg_conn_state {
	KG_CS_HANDSHAKE,
	KG_CS_CONNECTING,
	KG_CS_UPSTREAM, /* TLS handshake with the backend (backend_tls) */
	KG_CS_RELAY,
	KG_CS_LINGER,  /* refusal sent: drain the client's bytes, then close */
	KG_CS_CLOSING, /* waiting for in-flight operations before freeing */
};

/* What the access log says about the client: the strings live in one
 * allocation sized to their content (an idle kTLS connection keeps nothing
 * else of its handshake). Read and written only through kg_peer_get/set. */
#define KG_SNI_MAX 256 /* a DNS name is at most 253 bytes */

enum kg_peer_field {
	KG_PEER_CLIENT,
	KG_PEER_SNI,
	KG_PEER_SUBJECT,
	KG_PEER_ISSUER,
	KG_PEER_SERIAL,
	KG_PEER_FINGERPRINT, /* SHA-256 of the leaf, hex */
	KG_PEER_DETAIL,
	KG_PEER_BACKEND,
	KG_PEER_SPIFFE,      /* the first spiffe:// SAN URI */
	KG_PEER_NFIELDS
};

#define KG_PEER_INLINE 224

struct kg_peer_info {
	char *text;                 /* the fields in enum order, each NUL-terminated */
	const char *rule;           /* the policy rule that refused */
	const char *version;
	const char *cipher;
	bool resumed;
	const char *up_version;     /* TLS towards the backend, when backend_tls is set */
	bool up_resumed;
	/* text points here when the fields fit (the usual case): no allocation
	 * of its own to pin a heap page among the handshakes' freed memory. */
	char inline_text[KG_PEER_INLINE];
};

struct kg_conn {
	struct kg_worker *w;
	struct kg_conn *prev, *next;
	uint64_t id;
	unsigned listener;
	struct kg_gen *gen;             /* reference: the generation it started on */
	const struct kg_listener_rt *lrt;
	const struct kg_route *route;   /* picked from the SNI in the ClientHello */
	int cfd, bfd;
	struct kg_src_key src;      /* counted against --max-conns-per-source */
	enum kg_conn_state state;
	unsigned inflight;          /* ring operations not yet completed */
	bool cli_recv_busy, cli_send_busy, be_recv_busy, be_send_busy;
	bool cli_eof;               /* client sent close_notify or FIN */
	bool be_eof;                /* backend sent FIN */
	bool be_shut_done;          /* our FIN to the backend went out */
	bool cli_shut_done;         /* close_notify + FIN to the client went out */
	bool be_shut_posted, cli_shut_posted;
	bool close_after_flush;

	SSL *ssl;                   /* NULL on a listen_tls: false listener */
	BIO *rbio, *wbio;           /* memory BIOs: the ring does the socket I/O */
	int verify_err;             /* first X509 error seen by the verify callback */

	SSL *ussl;                  /* TLS to the backend (backend_tls), same memory BIOs */
	BIO *urbio, *uwbio;
	int up_verify_err;          /* first X509 error about the backend's chain */
	unsigned up_backend;        /* which of the site's backends: the session cache key */
	const struct kg_upstream *up; /* that backend's TLS (site->backends[].up); NULL: plain */
	SSL_SESSION *up_kept;       /* the session last put in (or left in) the cache */
	bool up_retrying;           /* the next backend waits for the failed one's ops */
	bool up_cert_asked;         /* the backend sent a CertificateRequest */
	bool up_data_seen;          /* the backend sent application data */
	bool up_ticket_seen;        /* ... a NewSessionTicket */
	bool up_ticket_wait;        /* kTLS handoff waits for a TLS 1.3 ticket ... */
	bool up_cli_poll;           /* ... at most KG_TICKET_WAIT_MS (KG_OP_UP_TIMER) */
	bool up_wait_recv;          /* the BE_RECV in flight is that wait's */

	/* Held only while bytes are in flight (bufpool.h): cin/bin are ring
	 * buffers during a receive's completion, cout/bout go back once sent. */
	struct kg_buf cin, cout;    /* TLS bytes from / to the client */
	struct kg_buf bin, bout;    /* plaintext from / to the backend */

	unsigned backend_idx, backend_tries;
	bool pp2_pending;           /* PROXY v2 header on its way to the backend */
	struct __kernel_timespec connect_ts;

	const struct kg_relay_ops *relay;
	struct kg_ktls_conn *kt;    /* handshake-time key capture: freed at handoff */
	struct kg_ktls_conn *ukt;   /* the same for the backend's TLS (ussl) */
	struct kg_splice_conn *sp;  /* the kTLS splice relay (&splice) from the handoff on */
	struct kg_splice_conn splice;
	struct kg_dpdk_conn *dp;    /* the DPDK record engine, from the handoff on */
	uint64_t start_ms, deadline_ms;
	uint64_t start_us;          /* handshake latency is measured from accept */
	uint64_t bytes_in, bytes_out;
	uint64_t key_update_window_ms; /* every relay: KeyUpdates from the client */
	unsigned key_updates;          /* ... seen in the second starting there */
	const char *result;         /* "ok" or the refusal reason */
	const char *end;            /* how a relayed connection ended */
	struct kg_peer_info peer;
} KG_ALIGNED;

struct kg_conn *kg_conn_new(struct kg_worker *w, int fd, unsigned listener);
void kg_conn_on_cqe(struct kg_conn *c, enum kg_op op, int res, unsigned flags);
/* Starts the end of the connection; freed once no operation is in flight. */
void kg_conn_close(struct kg_conn *c, const char *end);
/* Frees c->ssl, keeping a verified session resumable. */
void kg_conn_free_ssl(struct kg_conn *c);
/* Called by the worker tick for expired deadlines. */
void kg_conn_on_deadline(struct kg_conn *c);
void kg_conn_touch(struct kg_conn *c, unsigned timeout_ms);
/* Flush what OpenSSL queued (an alert, close_notify), send FIN, drain, close. */
void kg_conn_linger(struct kg_conn *c);

/* Peer info for the access log (peer.c): get never returns NULL; set keeps
 * at most the field's cap (the old fixed sizes) and is a no-op without memory. */
const char *kg_peer_get(const struct kg_conn *c, enum kg_peer_field f);
void kg_peer_set(struct kg_conn *c, enum kg_peer_field f, const char *s);
void kg_peer_setf(struct kg_conn *c, enum kg_peer_field f, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void kg_peer_free(struct kg_conn *c);

/* Ring helpers for the phases. */
void kg_conn_recv(struct kg_conn *c, int fd, enum kg_op op, struct kg_buf *b);
void kg_conn_send(struct kg_conn *c, int fd, enum kg_op op, struct kg_buf *b);
void kg_conn_shutdown_wr(struct kg_conn *c, int fd, enum kg_op op);
/* Accounts a CLI_SEND/BE_SEND completion, resends the rest; true once drained. */
bool kg_conn_send_progress(struct kg_conn *c, enum kg_op op, int res);
/* Cancels every in-flight operation of this connection of that kind. */
void kg_conn_cancel(struct kg_conn *c, enum kg_op op);
/* A buffered relay (user, up) between bursts: gives back the capacity its
 * memory BIOs grew to. Drops nothing pending. */
void kg_conn_trim_tls(struct kg_conn *c);
/* Once, when a buffered relay starts: also drops the parsed client chain. */
void kg_conn_trim_handshake(struct kg_conn *c);
/* Gives back every relay buffer (ring or spare list), e.g. at a kTLS handoff. */
void kg_conn_release_buffers(struct kg_conn *c);
/* Moves what OpenSSL wrote into the wbio to cout and sends it. */
void kg_conn_flush_tls(struct kg_conn *c);

/* What a buffered relay (userspace, backend TLS) does per completion. */
struct kg_relay_handlers {
	void (*client_recv)(struct kg_conn *c, int res);
	void (*backend_recv)(struct kg_conn *c, int res);
	void (*client_drained)(struct kg_conn *c);
	void (*backend_drained)(struct kg_conn *c);
	void (*finish)(struct kg_conn *c); /* after a shutdown went out */
};
/* The completion switch those relays share: sends are accounted (and the
 * rest resent) here, the relay only hears when a direction has drained. */
void kg_relay_dispatch(struct kg_conn *c, enum kg_op op, int res,
		       const struct kg_relay_handlers *h);

/* For the control thread, on the worker's thread (mailbox.h). */
void kg_conn_describe_all(struct kg_worker *w, struct kg_wmsg *m);
unsigned kg_conn_kill_matching(struct kg_worker *w, const struct kg_kill_filter *f,
				struct kg_wmsg *m);
uint64_t kg_now_us(void);

/* Phases (handshake.c, backend.c). */
int kg_hs_start(struct kg_conn *c);
void kg_hs_on_client_bytes(struct kg_conn *c);
void kg_hs_refuse(struct kg_conn *c, const char *reason);
void kg_backend_connect(struct kg_conn *c);
void kg_backend_on_connect(struct kg_conn *c, int res);
/* The PROXY v2 header went out (or failed): start relaying. */
void kg_backend_on_header_sent(struct kg_conn *c, int res);
/* The backend is connected (and its TLS handshake done): PROXY v2, relay. */
void kg_backend_ready(struct kg_conn *c);
/* The attempt on this backend failed before any client byte went to it:
 * false when every backend has been tried, else the next one is tried. */
bool kg_backend_retry(struct kg_conn *c);
/* connecting_on_cqe: a cancelled backend op of the failed attempt is back. */
void kg_backend_on_stale_op(struct kg_conn *c, enum kg_op op);

/* TLS towards the backend (upstream.c). */
void kg_up_start(struct kg_conn *c);
void kg_up_on_cqe(struct kg_conn *c, enum kg_op op, int res);
/* Moves what OpenSSL wrote for the backend into bout and sends it. */
void kg_up_flush(struct kg_conn *c);
/* Keeps the backend's newest resumable session for the next connection. */
void kg_up_keep_session(struct kg_conn *c);
/* Refuses: result=upstream_*, one log line, close_notify/FIN to the client. */
void kg_up_refuse(struct kg_conn *c, const char *reason);
/* The same after the kTLS handoff: logs and counts; the caller closes. */
void kg_up_refuse_ktls(struct kg_conn *c, const char *reason);
/* Counts one failed backend attempt under its reason (upstream_<reason>). */
void kg_up_count_refusal(struct kg_worker *w, const char *reason);
/* Drops the backend TLS state of a failed attempt (before a retry). */
void kg_up_reset(struct kg_conn *c);
/* A TLS error from the backend before its first byte of data: why. */
const char *kg_up_late_reason(struct kg_conn *c);
void kg_up_cache_free(struct kg_worker *w);
/* A TLS 1.3 backend that sent no ticket in time, or one whose sessions are
 * not kept (session_cache: 0): the kTLS handoff does not wait for a ticket. */
bool kg_up_sends_no_tickets(struct kg_conn *c);
void kg_up_note_no_tickets(struct kg_conn *c);
/* handshake.c: the access log's reason for an X509 verify error. */
const char *kg_hs_verify_reason(int e);
/* The end of a relay that handles its own completions (kTLS splice, DPDK):
 * a FIN went out (KG_OP_CLI_SHUT / KG_OP_BE_SHUT); once both directions have
 * ended (cli_eof, be_eof) and both FINs are out, the connection closes. */
void kg_relay_on_shut(struct kg_conn *c, enum kg_op op);
void kg_relay_finish(struct kg_conn *c);
/* The first reason a relayed connection ended wins (the access log's end=). */
void kg_conn_set_end(struct kg_conn *c, const char *end);
/* The relays that see each client KeyUpdate themselves (kTLS splice, DPDK):
 * counts it; past KG_MAX_KEY_UPDATES_PER_S in one second, closes and says true. */
bool kg_conn_key_update_flood(struct kg_conn *c);
/* Each TLS 1.3 KeyUpdate costs us two key derivations (~30 us here) for ~27
 * bytes from the client: a stream of them keeps a worker busy. Real clients
 * update once per many gigabytes. Every relay holds clients to this. */
#define KG_MAX_KEY_UPDATES_PER_S 8
/* relay_user.c: TLS 1.3 KeyUpdate flood guard, shared with relay_up.c. */
void kg_relay_watch_key_updates(struct kg_conn *c);
bool kg_relay_key_update_flood(struct kg_conn *c);

/* Installs the dataplane's handshake callbacks on a generation's context. */
void kg_hs_prepare_ctx(SSL_CTX *ctx, struct kg_route *route);
/* Drops the worker's verification caches: its generation changed, or it stops. */
void kg_hs_vcache_reset(struct kg_worker *w);
#endif
