/* Handoff to kernel TLS: per-connection state from the handshake (secrets,
 * record counts, record boundary) to the splice relay (pipes, steps). */
#ifndef KG_KTLS_H
#define KG_KTLS_H
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "ktls_keys.h"
#include "ktls_rekey.h"
#include "ring.h"
#include "tls_record.h"

struct kg_conn;

enum kg_splice_step { KG_SP_IDLE, KG_SP_POLL_IN, KG_SP_IN, KG_SP_OUT, KG_SP_POLL_OUT,
		      KG_SP_CTRL, KG_SP_CTRL_FWD, KG_SP_DONE,
		      KG_SP_POLL_REKEY /* b2c: room to send our KeyUpdate */ };

struct kg_splice_dir {
	int src, dst;
	int pipe_rd, pipe_wr;
	uint32_t in_pipe;
	uint8_t step;
	bool eof;
};

#define KG_CTRL_MAX 512

/* One control record (close_notify out, an alert or KeyUpdate in): rare, so
 * allocated on first use instead of carried by every idle connection. */
struct kg_ktls_ctrl {
	struct msghdr msg;               /* control records, both ways */
	struct iovec iov;
	/* Aligned for a cmsghdr without embedding one: glibc's struct cmsghdr
	 * ends in a flexible array, which clang rejects inside a union that is
	 * not last (-Wgnu-variable-sized-type-not-at-end). */
	struct { _Alignas(struct cmsghdr) char buf[CMSG_SPACE(sizeof(uint8_t))]; } cmsg;
	uint32_t len, off;
	uint8_t data[KG_CTRL_MAX];
};

/* Handshake-time state for a possible handoff: lives from SSL_new until the
 * handoff (or the userspace fallback), then is cleansed and freed. */
struct kg_ktls_conn {
	struct kg_ktls_secrets secrets;
	struct kg_rec_tracker rx_track;  /* client bytes given to OpenSSL */
};

/* What a connection keeps once the kernel owns the session. */
struct kg_splice_conn {
	struct kg_splice_dir c2b, b2c;
	/* Per direction: records read from its source, close_notify to its
	 * destination. NULL until one is seen or sent. */
	struct kg_ktls_ctrl *ctrl, *ctrl_b2c;
	struct kg_ktls_rekey *rekey;     /* client's TLS 1.3 secrets, only where the kernel can rekey */
	bool cli_ktls, be_ktls;          /* which sockets the kernel does TLS on */
	uint32_t ticket_left;            /* bytes of a backend's ticket still to drop */
};

/* Which path a connection takes after the backend connect. */
bool kg_ktls_wanted(const struct kg_conn *c);
/* Called for every client byte chunk fed to OpenSSL before the handoff. */
void kg_ktls_track_rx(struct kg_conn *c, const uint8_t *p, size_t len);
/* Starts capturing secrets and record counts for a new connection. */
int kg_ktls_conn_new(struct kg_conn *c);
/* Cleanses the secrets and detaches OpenSSL's callbacks from them. */
void kg_ktls_conn_free(struct kg_conn *c);

extern const struct kg_relay_ops kg_relay_ktls;

/* Shared with ktls_up.c. */
bool kg_ktls_cipher_ok(const struct kg_conn *c, const SSL *ssl);
void kg_ktls_fallback(struct kg_conn *c, const char *why);
int kg_ktls_install(int fd, const struct kg_ktls_params *p, bool *tx_installed, char *why,
		    size_t whylen);
/* The client's TLS 1.3 secrets for a later KeyUpdate, on a kernel that can
 * rekey (from c->kt, before it is freed); NULL anywhere else. */
struct kg_ktls_rekey *kg_ktls_keep_secrets(struct kg_conn *c, const struct kg_ktls_params *p);

/* ktls_up.c: backend_tls connections, kTLS on the backend socket too (and on
 * the client's when it speaks TLS). */
bool kg_ktls_up_wanted(const struct kg_conn *c);
int kg_ktls_up_new(struct kg_conn *c);
void kg_ktls_up_free(struct kg_conn *c);
void kg_ktls_up_track_rx(struct kg_conn *c, const uint8_t *p, size_t len);
void kg_ktls_up_prep_start(struct kg_conn *c);
void kg_ktls_up_prep_on_cqe(struct kg_conn *c, enum kg_op op, int res);

/* relay_splice.c: the data path once the kernel owns the session. */
/* cli_ktls / be_ktls: which sockets the kernel does TLS on (the other is plain).
 * Takes rk (may be NULL: the kernel cannot rekey, TLS 1.2, or no kTLS on the
 * client's socket): the client's secrets, for its KeyUpdates. */
void kg_relay_splice_begin(struct kg_conn *c, bool cli_ktls, bool be_ktls,
			   struct kg_ktls_rekey *rk);
void kg_relay_splice_on_cqe(struct kg_conn *c, enum kg_op op, int res);
/* Closes the pipes (if still open) and frees the relay state. */
void kg_splice_conn_free(struct kg_conn *c);
#endif
