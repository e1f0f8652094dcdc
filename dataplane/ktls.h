/* Handoff to kernel TLS: per-connection state from the handshake (secrets,
 * record counts, record boundary) to the splice relay (pipes, steps). */
#ifndef KG_KTLS_H
#define KG_KTLS_H
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "ktls_keys.h"
#include "ring.h"
#include "tls_record.h"

struct kg_conn;

enum kg_splice_step { KG_SP_IDLE, KG_SP_POLL_IN, KG_SP_IN, KG_SP_OUT, KG_SP_POLL_OUT,
		      KG_SP_CTRL, KG_SP_CTRL_FWD, KG_SP_DONE };

struct kg_splice_dir {
	int src, dst;
	int pipe_rd, pipe_wr;
	uint32_t in_pipe;
	uint8_t step;
	bool eof;
};

#define KG_CTRL_MAX 512

struct kg_ktls_conn {
	struct kg_ktls_secrets secrets;  /* cleansed at handoff */
	struct kg_rec_tracker rx_track;  /* client bytes given to OpenSSL */
	bool handed_off;
	struct kg_splice_dir c2b, b2c;
	struct msghdr msg;               /* control records, both ways */
	struct iovec iov;
	union { char buf[CMSG_SPACE(sizeof(uint8_t))]; struct cmsghdr align; } cmsg;
	uint8_t ctrl[KG_CTRL_MAX];
	uint32_t ctrl_len, ctrl_off;
};

/* Which path a connection takes after the backend connect. */
bool kg_ktls_wanted(const struct kg_conn *c);
/* Called for every client byte chunk fed to OpenSSL before the handoff. */
void kg_ktls_track_rx(struct kg_conn *c, const uint8_t *p, size_t len);
/* Starts capturing secrets and record counts for a new connection. */
int kg_ktls_conn_new(struct kg_conn *c);
void kg_ktls_conn_free(struct kg_conn *c);

extern const struct kg_relay_ops kg_relay_ktls;

/* relay_splice.c: the data path once the kernel owns the session. */
void kg_relay_splice_begin(struct kg_conn *c);
void kg_relay_splice_on_cqe(struct kg_conn *c, enum kg_op op, int res);
#endif
