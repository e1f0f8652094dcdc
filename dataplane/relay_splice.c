/* kTLS relay: the kernel decrypts and encrypts; bytes move socket -> pipe ->
 * socket with IORING_OP_SPLICE and never enter userspace. Each direction is a
 * small step machine (poll, splice in, splice out) with one operation in
 * flight; non-data records from a kTLS socket are read with recvmsg + cmsg.
 * Either socket may be plain (mTLS in -> plain out, plain in -> mTLS out). */
#include <errno.h>
#include <fcntl.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conn.h"
#include "ktls.h"
#include "log.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

#define KG_SPLICE_CHUNK (64 * 1024)
#define TLS_RT_ALERT 21
#define TLS_RT_HANDSHAKE 22
#define TLS_RT_DATA 23
#define TLS_HS_KEY_UPDATE 24

static enum kg_op dir_op(struct kg_conn *c, struct kg_splice_dir *d)
{
	/* One op code per direction; d->step says which operation it was. */
	return d == &c->sp->c2b ? KG_OP_CLI_RECV : KG_OP_BE_RECV;
}

static struct io_uring_sqe *dir_sqe(struct kg_conn *c, struct kg_splice_dir *d, uint8_t step)
{
	struct io_uring_sqe *sqe = kg_get_sqe(&c->w->ring);

	d->step = step;
	io_uring_sqe_set_data64(sqe, kg_ud(c, dir_op(c, d)));
	c->inflight++;
	return sqe;
}

static void poll_fd(struct kg_conn *c, struct kg_splice_dir *d, int fd, unsigned events,
		    uint8_t step)
{
	struct io_uring_sqe *sqe = kg_get_sqe(&c->w->ring);

	io_uring_prep_poll_add(sqe, fd, events);
	d->step = step;
	io_uring_sqe_set_data64(sqe, kg_ud(c, dir_op(c, d)));
	c->inflight++;
}

static void splice_in(struct kg_conn *c, struct kg_splice_dir *d)
{
	struct io_uring_sqe *sqe = dir_sqe(c, d, KG_SP_IN);

	/* Non-blocking so an idle peer never parks an io-wq thread: we poll first. */
	io_uring_prep_splice(sqe, d->src, -1, d->pipe_wr, -1, KG_SPLICE_CHUNK,
			     SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
}

static void splice_out(struct kg_conn *c, struct kg_splice_dir *d)
{
	struct io_uring_sqe *sqe = dir_sqe(c, d, KG_SP_OUT);

	io_uring_prep_splice(sqe, d->pipe_rd, -1, d->dst, -1, d->in_pipe,
			     SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
}

static void wait_readable(struct kg_conn *c, struct kg_splice_dir *d)
{
	poll_fd(c, d, d->src, POLLIN | POLLRDHUP, KG_SP_POLL_IN);
}

/* A direction's control record buffer, allocated the first time one is needed. */
static struct kg_ktls_ctrl *ctrl_of(struct kg_conn *c, struct kg_splice_dir *d)
{
	struct kg_ktls_ctrl **cr = d == &c->sp->c2b ? &c->sp->ctrl : &c->sp->ctrl_b2c;

	if (!*cr)
		*cr = calloc(1, sizeof(**cr));
	if (!*cr)
		kg_conn_close(c, "out_of_memory");
	return *cr;
}

/* close_notify as a kTLS control record; the FIN follows on its completion. */
static void send_close_notify(struct kg_conn *c, struct kg_splice_dir *d)
{
	bool to_client = d == &c->sp->b2c;
	struct kg_ktls_ctrl *cr;
	struct cmsghdr *cm;
	struct io_uring_sqe *sqe;

	cr = ctrl_of(c, d);
	if (!cr)
		return;
	cr->data[0] = 1; /* warning */
	cr->data[1] = 0; /* close_notify */
	cr->iov = (struct iovec){ .iov_base = cr->data, .iov_len = 2 };
	memset(&cr->msg, 0, sizeof(cr->msg));
	cr->msg.msg_iov = &cr->iov;
	cr->msg.msg_iovlen = 1;
	cr->msg.msg_control = cr->cmsg.buf;
	cr->msg.msg_controllen = sizeof(cr->cmsg.buf);
	cm = CMSG_FIRSTHDR(&cr->msg);
	cm->cmsg_level = SOL_TLS;
	cm->cmsg_type = TLS_SET_RECORD_TYPE;
	cm->cmsg_len = CMSG_LEN(sizeof(uint8_t));
	*CMSG_DATA(cm) = TLS_RT_ALERT;
	sqe = kg_get_sqe(&c->w->ring);
	io_uring_prep_sendmsg(sqe, to_client ? c->cfd : c->bfd, &cr->msg, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, kg_ud(c, to_client ? KG_OP_CLI_SEND : KG_OP_BE_SEND));
	c->inflight++;
}

/* Client finished sending (close_notify or FIN): pass it on. */
static void c2b_eof(struct kg_conn *c)
{
	c->sp->c2b.step = KG_SP_DONE;
	c->cli_eof = true;
	kg_conn_set_end(c, "client_eof");
	if (c->sp->be_ktls)
		send_close_notify(c, &c->sp->c2b);
	else
		kg_conn_shutdown_wr(c, c->bfd, KG_OP_BE_SHUT);
}

/* Backend finished: close_notify to a TLS client, then FIN. */
static void b2c_eof(struct kg_conn *c)
{
	c->sp->b2c.step = KG_SP_DONE;
	c->be_eof = true;
	kg_conn_set_end(c, "backend_eof");
	if (c->sp->cli_ktls)
		send_close_notify(c, &c->sp->b2c);
	else
		kg_conn_shutdown_wr(c, c->cfd, KG_OP_CLI_SHUT);
}

static void read_control_record(struct kg_conn *c, struct kg_splice_dir *d)
{
	struct kg_ktls_ctrl *cr = ctrl_of(c, d);
	struct io_uring_sqe *sqe;

	if (!cr)
		return;
	sqe = dir_sqe(c, d, KG_SP_CTRL);
	cr->iov = (struct iovec){ .iov_base = cr->data, .iov_len = sizeof(cr->data) };
	memset(&cr->msg, 0, sizeof(cr->msg));
	cr->msg.msg_iov = &cr->iov;
	cr->msg.msg_iovlen = 1;
	cr->msg.msg_control = cr->cmsg.buf;
	cr->msg.msg_controllen = sizeof(cr->cmsg.buf);
	io_uring_prep_recvmsg(sqe, d->src, &cr->msg, 0);
}

static int record_type(struct msghdr *msg)
{
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(msg); cm; cm = CMSG_NXTHDR(msg, cm))
		if (cm->cmsg_level == SOL_TLS && cm->cmsg_type == TLS_GET_RECORD_TYPE)
			return *CMSG_DATA(cm);
	return TLS_RT_DATA;
}

static void rekey_failed(struct kg_conn *c, const char *why)
{
	kg_peer_setf(c, KG_PEER_DETAIL, "client %s", why);
	kg_log_msg(KG_LOG_WARN, "ktls_control", "conn %llu: %s", (unsigned long long)c->id,
		   kg_peer_get(c, KG_PEER_DETAIL));
	kg_conn_close(c, "ktls_error");
}

/* Our KeyUpdate goes out only while nothing of ours is on its way to the
 * client: between two pipe loads of the backend direction. True when done
 * (or no longer needed), false to be retried by the backend direction. */
static bool send_our_key_update(struct kg_conn *c)
{
	struct kg_ktls_rekey *rk = c->sp->rekey;
	uint8_t step = c->sp->b2c.step;
	char why[160];
	int rc;

	if (!rk || !rk->tx_wanted)
		return true;
	if (step == KG_SP_DONE) { /* close_notify is ours already: no more records */
		rk->tx_wanted = false;
		return true;
	}
	if (step == KG_SP_OUT || step == KG_SP_POLL_OUT || step == KG_SP_CTRL_FWD)
		return false; /* mid-load: the next pipe load sends it first */
	rc = kg_ktls_rekey_tx(rk, c->cfd, &kg_ktls_sys_real, why, sizeof(why));
	if (rc == -EAGAIN)
		return false;
	if (rc < 0) {
		rekey_failed(c, why);
		return false;
	}
	return true;
}

/* Linux >= 6.14: the kernel paused decryption after this record (reads
 * fail with EKEYEXPIRED) until TLS_RX gets the client's next key. */
static void client_key_update(struct kg_conn *c, size_t len)
{
	struct kg_ktls_rekey *rk = c->sp->rekey;
	bool requested;
	char why[160];

	if (kg_conn_key_update_flood(c))
		return;
	if (kg_ktls_key_update_parse(c->sp->ctrl->data, len, &requested) < 0) {
		rekey_failed(c, "KeyUpdate: malformed message");
		return;
	}
	if (kg_ktls_rekey_rx(rk, c->cfd, &kg_ktls_sys_real, why, sizeof(why)) < 0) {
		rekey_failed(c, why);
		return;
	}
	if (requested)
		rk->tx_wanted = true;
	if (!send_our_key_update(c) && c->state == KG_CS_CLOSING)
		return;
	splice_in(c, &c->sp->c2b);
}

static void client_control_record(struct kg_conn *c, int res)
{
	struct kg_ktls_ctrl *cr = c->sp->ctrl;
	int type = record_type(&cr->msg);

	if (res <= 0) {
		if (res == 0)
			c2b_eof(c);
		else
			kg_conn_close(c, "client_reset");
		return;
	}
	if (type == TLS_RT_DATA) { /* raced with new data: forward it as is */
		cr->len = (uint32_t)res;
		cr->off = 0;
		struct io_uring_sqe *sqe = dir_sqe(c, &c->sp->c2b, KG_SP_CTRL_FWD);
		io_uring_prep_send(sqe, c->bfd, cr->data, cr->len, MSG_NOSIGNAL);
		return;
	}
	if (type == TLS_RT_ALERT && res >= 2 && cr->data[1] == 0) {
		c2b_eof(c); /* close_notify */
		return;
	}
	if (type == TLS_RT_HANDSHAKE && cr->data[0] == TLS_HS_KEY_UPDATE && c->sp->rekey) {
		client_key_update(c, (size_t)res);
		return;
	}
	if (type == TLS_RT_ALERT && res >= 2)
		kg_peer_setf(c, KG_PEER_DETAIL, "client alert %u (level %u)",
			 cr->data[1], cr->data[0]);
	else if (type == TLS_RT_HANDSHAKE && cr->data[0] == TLS_HS_KEY_UPDATE)
		kg_peer_setf(c, KG_PEER_DETAIL, "client KeyUpdate: kernel cannot rekey RX");
	else
		kg_peer_setf(c, KG_PEER_DETAIL, "unexpected TLS record type %d from client", type);
	kg_log_msg(KG_LOG_INFO, "ktls_control", "conn %llu: %s", (unsigned long long)c->id,
		   kg_peer_get(c, KG_PEER_DETAIL));
	kg_conn_close(c, type == TLS_RT_ALERT ? "client_alert" : "client_keyupdate");
}

/* A fresh pipe load for the client: our KeyUpdate, if owed, goes first. */
static void b2c_load_out(struct kg_conn *c, struct kg_splice_dir *d)
{
	d->step = KG_SP_IDLE; /* nothing of ours in flight to the client */
	if (send_our_key_update(c)) {
		splice_out(c, d);
		return;
	}
	if (c->state != KG_CS_CLOSING)
		poll_fd(c, d, c->cfd, POLLOUT, KG_SP_POLL_REKEY);
}

#define TLS_HS_NEW_SESSION_TICKET 4
#define TLS_ALERT_CERTIFICATE_REQUIRED 116

/* A fatal alert before the backend sent a byte: it refused us (a TLS 1.3
 * server judges our certificate after its handshake, so after the handoff). */
static const char *backend_alert_reason(struct kg_conn *c, uint8_t alert)
{
	if (c->bytes_out)
		return NULL;
	if (alert == TLS_ALERT_CERTIFICATE_REQUIRED)
		return "upstream_no_client_cert";
	if (alert >= 42 && alert <= 48)
		return "upstream_client_cert_rejected";
	return "upstream_handshake_failed";
}

/* Walks the handshake messages of a chunk (a ticket carrying a client
 * certificate outgrows one read): true while they are all NewSessionTickets. */
static bool skip_tickets(struct kg_splice_conn *sp, const uint8_t *p, uint32_t n)
{
	uint32_t pos = sp->ticket_left < n ? sp->ticket_left : n;

	sp->ticket_left -= pos;
	while (pos < n) {
		if (n - pos < 4 || p[pos] != TLS_HS_NEW_SESSION_TICKET)
			return false;
		uint32_t len = 4 + ((uint32_t)p[pos + 1] << 16 | (uint32_t)p[pos + 2] << 8 | p[pos + 3]);
		if (len > n - pos) {
			sp->ticket_left = len - (n - pos);
			return true;
		}
		pos += len;
	}
	return true;
}

static void backend_control_record(struct kg_conn *c, int res)
{
	struct kg_ktls_ctrl *cr = c->sp->ctrl_b2c;
	int type = record_type(&cr->msg);
	const char *reason;

	if (res <= 0) {
		if (res == 0)
			b2c_eof(c);
		else
			kg_conn_close(c, "backend_reset");
		return;
	}
	if (type == TLS_RT_DATA) {
		cr->len = (uint32_t)res;
		cr->off = 0;
		struct io_uring_sqe *sqe = dir_sqe(c, &c->sp->b2c, KG_SP_CTRL_FWD);
		io_uring_prep_send(sqe, c->cfd, cr->data, cr->len, MSG_NOSIGNAL);
		return;
	}
	if (type == TLS_RT_ALERT && res >= 2 && cr->data[1] == 0) {
		b2c_eof(c); /* close_notify */
		return;
	}
	/* Tickets that came after the handoff: the kernel read them, OpenSSL
	 * can no longer use them. Dropped; resumption needs one from before. */
	if (type == TLS_RT_HANDSHAKE && skip_tickets(c->sp, cr->data, (uint32_t)res)) {
		if (c->sp->ticket_left)
			read_control_record(c, &c->sp->b2c); /* the rest of a long one */
		else
			splice_in(c, &c->sp->b2c);
		return;
	}
	if (type == TLS_RT_ALERT && res >= 2 && (reason = backend_alert_reason(c, cr->data[1]))) {
		kg_peer_setf(c, KG_PEER_DETAIL, "backend sent alert %u after its handshake%s",
			     cr->data[1], cr->data[1] == TLS_ALERT_CERTIFICATE_REQUIRED
			     ? " (certificate required)" : "");
		kg_up_refuse_ktls(c, reason);
		b2c_eof(c);
		return;
	}
	if (type == TLS_RT_ALERT && res >= 2)
		kg_peer_setf(c, KG_PEER_DETAIL, "backend alert %u (level %u)", cr->data[1], cr->data[0]);
	else if (type == TLS_RT_HANDSHAKE && cr->data[0] == TLS_HS_KEY_UPDATE)
		kg_peer_setf(c, KG_PEER_DETAIL, "backend KeyUpdate: kernel cannot rekey RX");
	else
		kg_peer_setf(c, KG_PEER_DETAIL, "unexpected TLS record type %d from backend "
			     "(%d bytes, first %u)", type, res, cr->data[0]);
	kg_log_msg(KG_LOG_INFO, "ktls_control", "conn %llu: %s", (unsigned long long)c->id,
		   kg_peer_get(c, KG_PEER_DETAIL));
	kg_conn_close(c, type == TLS_RT_ALERT ? "backend_alert" : "backend_keyupdate");
}

static void on_splice_in(struct kg_conn *c, struct kg_splice_dir *d, int res)
{
	bool from_client = d == &c->sp->c2b;

	if (res > 0) {
		d->in_pipe = (uint32_t)res;
		if (from_client)
			splice_out(c, d);
		else
			b2c_load_out(c, d);
	} else if (res == 0) {
		from_client ? c2b_eof(c) : b2c_eof(c);
	} else if (res == -EAGAIN) {
		wait_readable(c, d);
	} else if (from_client && c->sp->cli_ktls && res == -EKEYEXPIRED) {
		/* 6.14+: a KeyUpdate we did not see (cannot happen: we read it). */
		rekey_failed(c, "KeyUpdate: RX key expired before it was read");
	} else if ((from_client ? c->sp->cli_ktls : c->sp->be_ktls) &&
		   (res == -EINVAL || res == -EIO)) {
		read_control_record(c, d); /* kTLS stops splicing at a non-data record */
	} else {
		kg_peer_setf(c, KG_PEER_DETAIL, "splice from %s: %s",
			 from_client ? "client" : "backend", strerror(-res));
		kg_conn_close(c, from_client ? "client_reset" : "backend_reset");
	}
}

/* Linux 6.1 kTLS, sendpage path: a splice that fills a record on a pipe
 * buffer flagged MSG_SENDPAGE_NOTLAST queues that record in TCP without a
 * push, and if the next buffer then finds the send buffer full (TCP memory
 * pressure shrinks sk_sndbuf to half of what is queued) the splice returns
 * early or EAGAIN. The record stays corked with nothing in flight: no ACK
 * will come, so the socket never turns writable and POLLOUT never fires.
 * Setting TCP_NODELAY (again) runs tcp_push_pending_frames(): the record
 * leaves, its ACK frees the space and wakes our poll. */
static void push_corked(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void on_splice_out(struct kg_conn *c, struct kg_splice_dir *d, int res)
{
	bool to_backend = d == &c->sp->c2b;

	if (res == -EAGAIN) {
		/* Only a kTLS socket: plain TCP pushes before it reports EAGAIN. */
		if (to_backend ? c->sp->be_ktls : c->sp->cli_ktls)
			push_corked(d->dst);
		poll_fd(c, d, d->dst, POLLOUT, KG_SP_POLL_OUT);
		return;
	}
	if (res <= 0) {
		kg_peer_setf(c, KG_PEER_DETAIL, "splice to %s: %s",
			 to_backend ? "backend" : "client", res ? strerror(-res) : "closed");
		kg_conn_close(c, to_backend ? "backend_reset" : "client_reset");
		return;
	}
	*(to_backend ? &c->bytes_in : &c->bytes_out) += (uint64_t)res;
	kg_conn_touch(c, c->gen->cfg.idle_timeout_ms);
	d->in_pipe -= (uint32_t)res;
	if (d->in_pipe)
		splice_out(c, d);
	else
		splice_in(c, d); /* data is likely waiting: skip the poll */
}

static void on_ctrl_forwarded(struct kg_conn *c, struct kg_splice_dir *d, int res)
{
	bool to_backend = d == &c->sp->c2b;
	struct kg_ktls_ctrl *cr = to_backend ? c->sp->ctrl : c->sp->ctrl_b2c;

	if (res <= 0) {
		kg_conn_close(c, to_backend ? "backend_reset" : "client_reset");
		return;
	}
	*(to_backend ? &c->bytes_in : &c->bytes_out) += (uint64_t)res;
	cr->off += (uint32_t)res;
	if (cr->off < cr->len) {
		struct io_uring_sqe *sqe = dir_sqe(c, d, KG_SP_CTRL_FWD);
		io_uring_prep_send(sqe, d->dst, cr->data + cr->off, cr->len - cr->off, MSG_NOSIGNAL);
		return;
	}
	splice_in(c, d);
}

static void on_dir_cqe(struct kg_conn *c, struct kg_splice_dir *d, int res)
{
	switch (d->step) {
	case KG_SP_POLL_IN:
		if (res < 0 && res != -EINTR) {
			kg_conn_close(c, d == &c->sp->c2b ? "client_reset" : "backend_reset");
			return;
		}
		splice_in(c, d);
		return;
	case KG_SP_POLL_OUT:
		splice_out(c, d);
		return;
	case KG_SP_IN:
		on_splice_in(c, d, res);
		return;
	case KG_SP_OUT:
		on_splice_out(c, d, res);
		return;
	case KG_SP_CTRL:
		if (d == &c->sp->c2b)
			client_control_record(c, res);
		else
			backend_control_record(c, res);
		return;
	case KG_SP_CTRL_FWD:
		on_ctrl_forwarded(c, d, res);
		return;
	case KG_SP_POLL_REKEY:
		b2c_load_out(c, d);
		return;
	default:
		return;
	}
}

void kg_relay_splice_on_cqe(struct kg_conn *c, enum kg_op op, int res)
{
	switch (op) {
	case KG_OP_CLI_RECV:
		on_dir_cqe(c, &c->sp->c2b, res);
		return;
	case KG_OP_BE_RECV:
		on_dir_cqe(c, &c->sp->b2c, res);
		return;
	case KG_OP_CLI_SEND: /* close_notify went out (or could not) */
		kg_conn_shutdown_wr(c, c->cfd, KG_OP_CLI_SHUT);
		return;
	case KG_OP_BE_SEND:
		kg_conn_shutdown_wr(c, c->bfd, KG_OP_BE_SHUT);
		return;
	case KG_OP_CLI_SHUT:
	case KG_OP_BE_SHUT:
		kg_relay_on_shut(c, op);
		return;
	default:
		return;
	}
}

static int make_pipe(struct kg_splice_dir *d)
{
	int fds[2];

	if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
		return -1;
	d->pipe_rd = fds[0];
	d->pipe_wr = fds[1];
	return 0;
}

void kg_splice_conn_free(struct kg_conn *c)
{
	struct kg_splice_conn *sp = c->sp;
	int fds[] = { sp->c2b.pipe_rd, sp->c2b.pipe_wr, sp->b2c.pipe_rd, sp->b2c.pipe_wr };

	for (size_t i = 0; i < 4; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	if (sp->ctrl)
		OPENSSL_cleanse(sp->ctrl, sizeof(*sp->ctrl)); /* may hold client plaintext */
	if (sp->ctrl_b2c)
		OPENSSL_cleanse(sp->ctrl_b2c, sizeof(*sp->ctrl_b2c));
	free(sp->ctrl);
	free(sp->ctrl_b2c);
	kg_ktls_rekey_free(sp->rekey); /* cleanses the secrets */
	sp->rekey = NULL;
	c->sp = NULL;
}

void kg_relay_splice_begin(struct kg_conn *c, bool cli_ktls, bool be_ktls,
			   struct kg_ktls_rekey *rk)
{
	struct kg_splice_conn *sp = &c->splice;

	kg_conn_release_buffers(c); /* no byte passes through userspace from now on */
	c->sp = sp;
	/* Inline in the connection: nothing left from an earlier use. */
	*sp = (struct kg_splice_conn){ .cli_ktls = cli_ktls, .be_ktls = be_ktls };
	/* The secrets are for the client's kTLS socket (its KeyUpdates). */
	if (cli_ktls)
		sp->rekey = rk;
	else
		kg_ktls_rekey_free(rk);
	sp->c2b = (struct kg_splice_dir){ .src = c->cfd, .dst = c->bfd, .pipe_rd = -1, .pipe_wr = -1 };
	sp->b2c = (struct kg_splice_dir){ .src = c->bfd, .dst = c->cfd, .pipe_rd = -1, .pipe_wr = -1 };
	if (make_pipe(&sp->c2b) < 0 || make_pipe(&sp->b2c) < 0) {
		kg_peer_setf(c, KG_PEER_DETAIL, "pipe: %s", strerror(errno));
		kg_conn_close(c, "out_of_fds");
		return;
	}
	/* Splice first, poll only on EAGAIN: records that arrived before TLS_RX
	 * was installed may never raise a new readiness event. */
	splice_in(c, &sp->c2b);
	splice_in(c, &sp->b2c);
}
