/* The DPDK record engine's relay: after the same key extraction as the kTLS
 * handoff, the worker frames and protects TLS records itself and has a
 * cryptodev queue pair (one per worker) do the AEAD. Connections queue their
 * records as crypto operations; the worker submits everything queued in one
 * burst after each round of ring completions (kg_dpdk_flush) and every batch
 * comes back here as a KG_OP_CRYPTO_RX/TX completion.
 *
 * Buffers: rx holds client ciphertext; records are decrypted out of place
 * into pt at the same offsets (the ciphertext stays intact, so records that
 * follow a KeyUpdate in the same batch can be redone under the new key),
 * then the plaintexts are packed at the front of pt and sent to the backend.
 * tx holds up to KG_DP_SLOTS records: the backend recv scatters plaintext
 * into the record bodies, which are sealed in place and sent as one run.
 *
 * A connection holds its buffers only while bytes are in flight: an empty
 * side waits with a poll, takes a buffer from the worker's spares when the
 * socket is readable, and gives it back once the burst is out. An idle
 * connection holds none. */
#include <errno.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "conn.h"
#include "dpdk_int.h"
#include "log.h"

#define KG_DP_SLOTS 4
#define KG_DP_SLOT (5 + 8 + KG_DP_PT_MAX + 1 + 16)
#define KG_DP_CTRL_OFF (KG_DP_SLOTS * KG_DP_SLOT) /* control records, after the slots */
#define KG_DP_BATCH 64                  /* records per batch and direction */
_Static_assert(KG_DP_CTRL_OFF + 64 <= KG_DP_BUF_SIZE, "tx slots and ctrl exceed a buffer");
/* A waiting connection must always fit into an empty queue, both ways. */
_Static_assert(KG_DP_MAX_PENDING >= 2 * KG_DP_BATCH, "crypto queue smaller than two batches");

enum { DIR_RX = 0, DIR_TX = 1 };
enum { CTRL_NONE, CTRL_CLOSE_NOTIFY, CTRL_KEY_UPDATE, CTRL_ALERT };

struct kg_dp_batch {
	unsigned n, left;          /* records in the batch, operations not back yet */
	bool busy;
	uint8_t status[KG_DP_BATCH];
	void *old_sess;            /* replaced by a KeyUpdate while ops still used it */
};

struct kg_dpdk_conn {
	struct kg_dp_keys k[2];
	struct kg_dp_batch b[2];
	struct kg_dp_suite s;
	uint8_t secret_len;
	char md[16];
	/* rx: ciphertext rx[rx_pos .. rx_len); the batch covers rx[rx_pos .. rx_end) */
	struct kg_dp_buf rxb, ptb, txb; /* heap, or DMA-safe mempool objects; p NULL: none */
	uint32_t rx_len, rx_pos, rx_end;
	struct kg_buf to_be;      /* packed plaintext in pt, on its way to the backend */
	/* tx: txb holds KG_DP_SLOTS record slots, then ctrl (KG_DP_CTRL_OFF) */
	struct iovec iov[KG_DP_SLOTS];
	struct kg_buf to_cli;     /* sealed records in tx (or ctrl), on their way out */
	uint32_t tx_ready;        /* backend bytes in the slots, not sealed yet */
	uint8_t ctrl_pending, ctrl_sending, alert, alert_level;
	bool waiting;             /* on the worker's waiting list */
	/* The receive in flight is a poll (no buffer held), or one came back. */
	bool cli_polling, be_polling, cli_readable, be_readable;
};

static unsigned hdr_len(const struct kg_dpdk_conn *d)
{
	return kg_dp_hdr_len(&d->s);
}

static void *new_session(const struct kg_dpdk_conn *d, const uint8_t *key, bool encrypt)
{
	return kg_dp_session_new(kg_dpdk_g.dev, kg_dpdk_g.sessions, &d->s, key, encrypt);
}

static void free_session(void *s)
{
	kg_dp_session_free(kg_dpdk_g.dev, s);
}

/* One operation on one record: rec in buffer sb, out of place (decrypt) into
 * dst, at the same offset in db. Returns -1 when the pools are dry. */
static int queue_op(struct kg_conn *c, int dir, uint16_t idx, const struct kg_dp_buf *sb,
		    uint8_t *rec, const struct kg_dp_buf *db, uint8_t *dst, uint32_t body_len,
		    const uint8_t *aad, uint64_t seq)
{
	struct kg_dpdk_conn *d = c->dp;
	struct kg_dpdk_worker *dw = c->w->dp;
	struct rte_crypto_op *op;
	struct rte_mbuf *m[2] = { NULL, NULL };
	uint8_t iv[12];

	if (dw->npending >= KG_DP_MAX_PENDING ||
	    rte_crypto_op_bulk_alloc(dw->ops, RTE_CRYPTO_OP_TYPE_SYMMETRIC, &op, 1) != 1)
		return -1;
	if (rte_pktmbuf_alloc_bulk(dw->mbufs, m, dst ? 2 : 1) != 0) {
		rte_crypto_op_free(op);
		return -1;
	}
	struct kg_dp_op_priv *p = kg_dp_priv(op);
	p->owner = c;
	p->dir = (uint8_t)dir;
	p->idx = idx;
	kg_dp_nonce(&d->s, &d->k[dir], seq, rec + 5, iv);
	kg_dp_op_setup(op, m[0], m[1], d->k[dir].sess, sb, rec, db, dst, hdr_len(d), body_len,
		       aad, kg_dp_aad_len(&d->s), iv);
	dw->pending[dw->npending++] = op;
	return 0;
}

void kg_dp_op_done(struct kg_worker *w, struct rte_crypto_op *op)
{
	struct kg_dp_op_priv *p = kg_dp_priv(op);
	struct kg_conn *c = p->owner;
	struct kg_dpdk_conn *d = c->dp;
	int dir = p->dir;

	kg_dp_op_release(op);
	if (d) {
		d->b[dir].status[p->idx] = op->status;
		if (--d->b[dir].left == 0)
			kg_conn_on_cqe(c, dir == DIR_RX ? KG_OP_CRYPTO_RX : KG_OP_CRYPTO_TX, 0, 0);
	}
	rte_crypto_op_free(op);
}

/* A buffer for b now (kept if held); closes the connection when there is none. */
static bool take(struct kg_conn *c, struct kg_dp_buf *b)
{
	struct kg_dpdk_worker *dw = c->w->dp;

	if (kg_dp_spare_take(&dw->spare, b, dw->bufs) == 0)
		return true;
	kg_conn_close(c, dw->bufs ? "dpdk_no_buffers" : "out_of_memory");
	return false;
}

static void give(struct kg_conn *c, struct kg_dp_buf *b)
{
	kg_dp_spare_give(&c->w->dp->spare, b);
}

/* Waits for fd to be readable without a buffer: the completion comes back
 * as op (the receive's) with the poll mask, and the relay receives then. */
static void poll_in(struct kg_conn *c, int fd, enum kg_op op)
{
	struct io_uring_sqe *sqe = kg_get_sqe(&c->w->ring);

	io_uring_prep_poll_add(sqe, fd, POLLIN);
	io_uring_sqe_set_data64(sqe, kg_ud(c, op));
	if (op == KG_OP_CLI_RECV) {
		c->cli_recv_busy = true;
		c->dp->cli_polling = true;
	} else {
		c->be_recv_busy = true;
		c->dp->be_polling = true;
	}
	c->inflight++;
}

static void shut(struct kg_conn *c, bool client)
{
	bool *posted = client ? &c->cli_shut_posted : &c->be_shut_posted;

	if (!*posted) {
		*posted = true;
		kg_conn_shutdown_wr(c, client ? c->cfd : c->bfd,
				    client ? KG_OP_CLI_SHUT : KG_OP_BE_SHUT);
	}
}

/* Room for a whole batch in the worker's queue; if not, the connection waits
 * (one inflight count) and is resumed by kg_dpdk_flush. */
static bool room(struct kg_conn *c)
{
	struct kg_dpdk_worker *dw = c->w->dp;
	struct kg_dpdk_conn *d = c->dp;

	if (dw->npending + KG_DP_BATCH <= KG_DP_MAX_PENDING)
		return true;
	if (d->waiting)
		return false;
	if (dw->nwaiters == KG_DP_MAX_WAITERS) {
		c->w->stats.dpdk_fallbacks++;
		kg_conn_close(c, "crypto_queue_full");
		return false;
	}
	d->waiting = true;
	c->w->stats.dpdk_queue_waits++;
	dw->waiters[dw->nwaiters++] = c;
	c->inflight++;
	return false;
}

static bool start_batch(struct kg_conn *c, int dir, unsigned n)
{
	struct kg_dp_batch *b = &c->dp->b[dir];

	b->n = b->left = n;
	b->busy = true;
	c->inflight++; /* the batch comes back as one completion */
	return true;
}

/* ---- backend -> client ---- */

static void tx_pump(struct kg_conn *c);

/* Seals a control record (alert, KeyUpdate) alone, from ctrl. */
static void tx_ctrl(struct kg_conn *c)
{
	struct kg_dpdk_conn *d = c->dp;
	uint8_t body[8];
	unsigned blen, type;

	if (d->ctrl_pending == CTRL_KEY_UPDATE) {
		memcpy(body, (uint8_t[]){ 24, 0, 0, 1, 0 }, 5); /* update_not_requested */
		blen = 5;
		type = 22;
	} else {
		body[0] = d->ctrl_pending == CTRL_CLOSE_NOTIFY ? 1 : d->alert_level;
		body[1] = d->ctrl_pending == CTRL_CLOSE_NOTIFY ? 0 : d->alert;
		blen = 2;
		type = 21;
	}
	if (!take(c, &d->txb))
		return;
	uint8_t *r = d->txb.p + KG_DP_CTRL_OFF, aad[13];

	memcpy(r + hdr_len(d), body, blen);
	uint32_t inner = kg_dp_seal_frame(&d->s, r, blen, (uint8_t)type, d->k[DIR_TX].seq, aad);
	uint32_t rec_len = kg_dp_rec_len(&d->s, inner);
	if (queue_op(c, DIR_TX, 0, &d->txb, r, NULL, NULL, inner, aad, d->k[DIR_TX].seq) < 0) {
		kg_conn_close(c, "crypto_queue_full");
		return;
	}
	d->k[DIR_TX].seq++;
	d->ctrl_sending = d->ctrl_pending;
	d->ctrl_pending = CTRL_NONE;
	d->to_cli = (struct kg_buf){ .data = r, .off = 0, .len = 5 + rec_len };
	start_batch(c, DIR_TX, 1);
	if (d->ctrl_sending == CTRL_KEY_UPDATE) {
		/* Our later records use the next key; the op above keeps the old one. */
		if (kg_dp_rekey(kg_dpdk_g.dev, kg_dpdk_g.sessions, &d->s, d->md, d->secret_len,
				&d->k[DIR_TX], true, &d->b[DIR_TX].old_sess) < 0)
			kg_conn_close(c, "dpdk_rekey_failed");
	}
}

/* Backend plaintext in the slots -> records sealed in place. */
static void tx_seal(struct kg_conn *c, uint32_t n)
{
	struct kg_dpdk_conn *d = c->dp;
	unsigned h = hdr_len(d), trail = (d->s.tls13 ? 1 : 0) + KG_DP_TAG;
	uint32_t slot = h + KG_DP_PT_MAX + trail, out = 0;
	uint16_t idx = 0;

	for (uint32_t done = 0; done < n; done += KG_DP_PT_MAX, idx++) {
		uint32_t pt = n - done < KG_DP_PT_MAX ? n - done : KG_DP_PT_MAX;
		uint8_t *r = d->txb.p + idx * slot, aad[13];
		uint64_t seq = d->k[DIR_TX].seq++;
		uint32_t inner = kg_dp_seal_frame(&d->s, r, pt, 23, seq, aad);
		uint32_t rec_len = kg_dp_rec_len(&d->s, inner);

		if (queue_op(c, DIR_TX, idx, &d->txb, r, NULL, NULL, inner, aad, seq) < 0) {
			if (idx)
				start_batch(c, DIR_TX, idx); /* queued ones still come back */
			c->w->stats.dpdk_fallbacks++;
			kg_conn_close(c, "crypto_queue_full");
			return;
		}
		out += 5 + rec_len;
		c->w->stats.dpdk_records_tx++;
	}
	c->w->stats.dpdk_bytes_tx += n;
	c->bytes_out += n;
	d->to_cli = (struct kg_buf){ .data = d->txb.p, .off = 0, .len = out };
	start_batch(c, DIR_TX, idx);
}

static void tx_recv(struct kg_conn *c)
{
	struct kg_dpdk_conn *d = c->dp;
	unsigned h = hdr_len(d), trail = (d->s.tls13 ? 1 : 0) + KG_DP_TAG;
	struct io_uring_sqe *sqe;

	if (!take(c, &d->txb))
		return;
	for (unsigned i = 0; i < KG_DP_SLOTS; i++) {
		d->iov[i].iov_base = d->txb.p + i * (h + KG_DP_PT_MAX + trail) + h;
		d->iov[i].iov_len = KG_DP_PT_MAX;
	}
	sqe = kg_get_sqe(&c->w->ring);
	io_uring_prep_readv(sqe, c->bfd, d->iov, KG_DP_SLOTS, 0);
	io_uring_sqe_set_data64(sqe, kg_ud(c, KG_OP_BE_RECV));
	c->be_recv_busy = true;
	c->inflight++;
}

static void tx_pump(struct kg_conn *c)
{
	struct kg_dpdk_conn *d = c->dp;

	if (c->state == KG_CS_CLOSING || d->b[DIR_TX].busy || c->cli_send_busy || d->to_cli.len)
		return;
	if ((d->ctrl_pending || d->tx_ready) && !room(c))
		return;
	if (d->ctrl_pending) {
		tx_ctrl(c);
		return;
	}
	if (d->tx_ready) {
		uint32_t n = d->tx_ready;
		d->tx_ready = 0;
		tx_seal(c, n);
		return;
	}
	if (c->be_recv_busy && !d->be_polling)
		return; /* a readv fills the slots */
	if (!d->be_readable)
		give(c, &d->txb); /* everything sealed is out: idle until the backend sends */
	if (c->be_eof || c->be_recv_busy || c->cli_shut_posted)
		return;
	if (d->be_readable) {
		d->be_readable = false;
		tx_recv(c);
		return;
	}
	poll_in(c, c->bfd, KG_OP_BE_RECV);
}

static void queue_ctrl(struct kg_conn *c, uint8_t what, uint8_t alert, uint8_t level)
{
	struct kg_dpdk_conn *d = c->dp;

	if (d->ctrl_pending == CTRL_ALERT)
		return; /* a fatal alert goes first and last */
	d->ctrl_pending = what;
	d->alert = alert;
	d->alert_level = level;
	tx_pump(c);
}

/* A fatal problem with the client's records: alert, then close. */
static void fatal_at(struct kg_conn *c, uint8_t level, uint8_t alert, const char *end,
		     const char *detail)
{
	kg_peer_setf(c, KG_PEER_DETAIL, "%s", detail);
	kg_conn_set_end(c, end);
	c->cli_eof = true;
	queue_ctrl(c, CTRL_ALERT, alert, level);
}

static void fatal(struct kg_conn *c, uint8_t alert, const char *end, const char *detail)
{
	fatal_at(c, 2, alert, end, detail);
}

/* The receive that came back was poll_in's and the socket is readable (or
 * at EOF, or has an error: the receive that follows says which). */
static bool polled_readable(bool *polling, bool *readable, int res)
{
	bool was = *polling;

	*polling = false;
	*readable = was && res >= 0;
	return *readable;
}

static void on_backend_recv(struct kg_conn *c, int res)
{
	c->be_recv_busy = false;
	if (polled_readable(&c->dp->be_polling, &c->dp->be_readable, res)) {
		tx_pump(c); /* readv now */
		return;
	}
	if (res < 0) {
		kg_conn_close(c, "backend_reset");
		return;
	}
	if (res == 0) {
		c->be_eof = true;
		kg_conn_set_end(c, "backend_eof");
		queue_ctrl(c, CTRL_CLOSE_NOTIFY, 0, 1);
		return;
	}
	kg_conn_touch(c, c->gen->cfg.idle_timeout_ms);
	if (c->dp->ctrl_pending == CTRL_ALERT || c->dp->ctrl_sending == CTRL_ALERT)
		return; /* closing: the alert goes instead */
	c->dp->tx_ready = (uint32_t)res; /* sealed once a control record in flight is out */
	tx_pump(c);
}

static void on_tx_sealed(struct kg_conn *c)
{
	struct kg_dpdk_conn *d = c->dp;
	struct kg_dp_batch *b = &d->b[DIR_TX];

	b->busy = false;
	free_session(b->old_sess);
	b->old_sess = NULL;
	for (unsigned i = 0; i < b->n; i++)
		if (b->status[i] != RTE_CRYPTO_OP_STATUS_SUCCESS) {
			kg_peer_setf(c, KG_PEER_DETAIL, "cryptodev encrypt status %u", b->status[i]);
			kg_conn_close(c, "dpdk_crypto_error");
			return;
		}
	kg_conn_send(c, c->cfd, KG_OP_CLI_SEND, &d->to_cli);
}

static void on_client_sent(struct kg_conn *c, int res)
{
	struct kg_dpdk_conn *d = c->dp;

	c->cli_send_busy = false;
	if (res < 0) {
		kg_conn_close(c, c->cli_eof ? "client_eof" : "client_reset");
		return;
	}
	d->to_cli.off += (uint32_t)res;
	d->to_cli.len -= (uint32_t)res;
	if (d->to_cli.len) {
		kg_conn_send(c, c->cfd, KG_OP_CLI_SEND, &d->to_cli);
		return;
	}
	uint8_t sent = d->ctrl_sending;
	d->ctrl_sending = CTRL_NONE;
	if (sent == CTRL_ALERT) {
		kg_conn_close(c, c->end ? c->end : "alert_sent");
		return;
	}
	if (sent == CTRL_CLOSE_NOTIFY) {
		shut(c, true);
		return;
	}
	tx_pump(c);
}

/* ---- client -> backend ---- */

static void rx_pump(struct kg_conn *c);

static void rx_recv(struct kg_conn *c)
{
	struct kg_dpdk_conn *d = c->dp;
	struct io_uring_sqe *sqe;

	if (!take(c, &d->rxb))
		return;
	if (d->rx_pos) { /* keep the partial record, at the front */
		memmove(d->rxb.p, d->rxb.p + d->rx_pos, d->rx_len - d->rx_pos);
		d->rx_len -= d->rx_pos;
		d->rx_pos = 0;
	}
	sqe = kg_get_sqe(&c->w->ring);
	io_uring_prep_recv(sqe, c->cfd, d->rxb.p + d->rx_len, KG_DP_RX_CAP - d->rx_len, 0);
	io_uring_sqe_set_data64(sqe, kg_ud(c, KG_OP_CLI_RECV));
	c->cli_recv_busy = true;
	c->inflight++;
}

/* Queues the complete records from rx_pos (at most a batch); how many. */
static unsigned rx_open(struct kg_conn *c)
{
	struct kg_dpdk_conn *d = c->dp;
	unsigned n = 0;
	uint32_t pos = d->rx_pos;

	if (d->rx_len - pos >= 5 && !room(c))
		return 1; /* resumed by kg_dpdk_flush; nothing else to do meanwhile */
	while (n < KG_DP_BATCH && d->rx_len - pos >= 5) {
		uint8_t *r = d->rxb.p + pos, aad[13];
		uint64_t seq = d->k[DIR_RX].seq + n;
		uint32_t body;
		int total = kg_dp_open_frame(&d->s, r, d->rx_len - pos, seq, &body, aad);

		if (total == KG_DP_REC_BAD_LEN) {
			if (!n)
				fatal(c, 22, "record_overflow", "client record of bad length");
			break; /* the records before it first */
		}
		if (total == KG_DP_REC_BAD_TYPE) {
			if (!n)
				fatal(c, 10, "unexpected_message", "client record of unexpected type");
			break;
		}
		if (total == KG_DP_REC_SHORT)
			break;
		if (!n && !take(c, &d->ptb))
			return 0;
		if (queue_op(c, DIR_RX, (uint16_t)n, &d->rxb, r, &d->ptb, d->ptb.p + pos, body, aad,
			     seq) < 0) {
			if (n)
				start_batch(c, DIR_RX, n);
			c->w->stats.dpdk_fallbacks++;
			kg_conn_close(c, "crypto_queue_full");
			return 0;
		}
		pos += (uint32_t)total;
		n++;
	}
	if (n) {
		d->rx_end = pos;
		start_batch(c, DIR_RX, n);
	}
	return n;
}

static void rx_pump(struct kg_conn *c)
{
	struct kg_dpdk_conn *d = c->dp;

	if (c->state == KG_CS_CLOSING || d->b[DIR_RX].busy || c->be_send_busy || d->to_be.len ||
	    c->cli_eof || c->cli_recv_busy)
		return;
	if (rx_open(c) || c->state == KG_CS_CLOSING || c->cli_eof)
		return;
	if (d->rx_len - d->rx_pos >= KG_DP_RX_CAP) {
		kg_conn_close(c, "client_record_too_big");
		return;
	}
	give(c, &d->ptb); /* the plaintext went to the backend */
	if (d->rx_pos == d->rx_len && !d->cli_readable) {
		/* Not even part of a record kept: idle until the client sends. */
		d->rx_pos = d->rx_len = 0;
		give(c, &d->rxb);
		poll_in(c, c->cfd, KG_OP_CLI_RECV);
		return;
	}
	d->cli_readable = false;
	rx_recv(c);
}

static void client_done_sending(struct kg_conn *c, const char *end)
{
	c->cli_eof = true;
	kg_conn_set_end(c, end);
	if (c->dp->to_be.len == 0 && !c->be_send_busy)
		shut(c, false);
	kg_relay_finish(c);
}

/* The client's KeyUpdate: next receive key; answer if it asks us to update. */
static int rx_key_update(struct kg_conn *c, const uint8_t *m, uint32_t len)
{
	struct kg_dpdk_conn *d = c->dp;
	void *old;

	if (len != 5 || m[1] || m[2] || m[3] != 1 || m[4] > 1) {
		fatal(c, 50, "client_tls_error", "malformed KeyUpdate");
		return -1;
	}
	if (kg_conn_key_update_flood(c))
		return -1;
	c->w->stats.dpdk_key_updates++;
	/* The batch is back: no operation uses the old session any more. */
	int rc = kg_dp_rekey(kg_dpdk_g.dev, kg_dpdk_g.sessions, &d->s, d->md, d->secret_len,
			     &d->k[DIR_RX], false, &old);
	free_session(old);
	if (rc < 0) {
		kg_conn_close(c, "dpdk_rekey_failed");
		return -1;
	}
	if (m[4] == 1) /* update_requested: ours goes out before any later data */
		queue_ctrl(c, CTRL_KEY_UPDATE, 0, 0);
	return 0;
}

/* One opened record: 1 to go on, 0 to stop this batch here, -1 closed. */
static int rx_record(struct kg_conn *c, uint8_t *r, uint8_t *pt, uint32_t *packed)
{
	struct kg_dpdk_conn *d = c->dp;
	unsigned h = hdr_len(d);
	uint32_t len, body_len = ((uint32_t)r[3] << 8 | r[4]) - (h - 5) - KG_DP_TAG;
	uint8_t *body = pt + h, type;
	int rc = kg_dp_inner(&d->s, r[0], body, body_len, &len, &type);

	if (rc == KG_DP_INNER_NO_TYPE) {
		fatal(c, 10, "unexpected_message", "TLS 1.3 record without content type");
		return -1;
	}
	if (rc == KG_DP_INNER_OVERFLOW) {
		fatal(c, 22, "record_overflow", "client plaintext over 16 KiB");
		return -1;
	}
	c->w->stats.dpdk_records_rx++;
	switch (type) {
	case 23:
		memmove(d->ptb.p + *packed, body, len);
		*packed += len;
		return 1;
	case 21:
		if (len == 2 && body[1] == 0) { /* close_notify: the client is done sending */
			c->cli_eof = true;
			kg_conn_set_end(c, "client_eof");
			return 0;
		}
		kg_peer_setf(c, KG_PEER_DETAIL, "client sent alert %u", len == 2 ? body[1] : 0);
		kg_conn_close(c, "client_alert");
		return -1;
	case 22:
		if (d->s.tls13 && len >= 1 && body[0] == 24)
			return rx_key_update(c, body, len) < 0 ? -1 : 0;
		if (!d->s.tls13) { /* renegotiation: refused with a warning, as OpenSSL does */
			fatal_at(c, 1, 100, "client_tls_error", "client tried to renegotiate");
			return -1;
		}
		fatal(c, 10, "unexpected_message", "client handshake message after handoff");
		return -1;
	default:
		fatal(c, 10, "unexpected_message", "client record of unexpected type");
		return -1;
	}
}

static void on_rx_opened(struct kg_conn *c)
{
	struct kg_dpdk_conn *d = c->dp;
	struct kg_dp_batch *b = &d->b[DIR_RX];
	uint32_t pos = d->rx_pos, packed = 0;

	b->busy = false;
	for (unsigned i = 0; i < b->n; i++) {
		uint8_t *r = d->rxb.p + pos;
		uint32_t total = 5 + ((uint32_t)r[3] << 8 | r[4]);

		if (b->status[i] != RTE_CRYPTO_OP_STATUS_SUCCESS) {
			fatal(c, 20, "bad_record_mac", "client record failed authentication");
			return;
		}
		d->k[DIR_RX].seq++;
		int rc = rx_record(c, r, d->ptb.p + pos, &packed);
		pos += total;
		if (rc < 0)
			return;
		if (rc == 0)
			break; /* later records: new keys (KeyUpdate) or after close_notify */
	}
	d->rx_pos = pos;
	c->w->stats.dpdk_bytes_rx += packed;
	c->bytes_in += packed;
	if (packed) { /* after it, on_backend_sent shuts the backend on close_notify */
		d->to_be = (struct kg_buf){ .data = d->ptb.p, .off = 0, .len = packed };
		kg_conn_send(c, c->bfd, KG_OP_BE_SEND, &d->to_be);
		return;
	}
	if (c->cli_eof) {
		client_done_sending(c, "client_eof");
		return;
	}
	rx_pump(c);
}

static void on_client_recv(struct kg_conn *c, int res)
{
	c->cli_recv_busy = false;
	if (polled_readable(&c->dp->cli_polling, &c->dp->cli_readable, res)) {
		rx_pump(c); /* recv now */
		return;
	}
	if (res < 0) {
		kg_conn_close(c, c->cli_eof ? "client_eof" : "client_reset");
		return;
	}
	if (res == 0) { /* FIN without close_notify: end of input, as the user relay */
		client_done_sending(c, "client_eof");
		return;
	}
	kg_conn_touch(c, c->gen->cfg.idle_timeout_ms);
	c->dp->rx_len += (uint32_t)res;
	rx_pump(c);
}

static void on_backend_sent(struct kg_conn *c, int res)
{
	struct kg_dpdk_conn *d = c->dp;

	c->be_send_busy = false;
	if (res < 0) {
		kg_conn_close(c, "backend_reset");
		return;
	}
	d->to_be.off += (uint32_t)res;
	d->to_be.len -= (uint32_t)res;
	if (d->to_be.len) {
		kg_conn_send(c, c->bfd, KG_OP_BE_SEND, &d->to_be);
		return;
	}
	if (c->cli_eof) {
		shut(c, false);
		return;
	}
	rx_pump(c);
}

void kg_relay_dpdk_on_cqe(struct kg_conn *c, int op, int res)
{
	switch (op) {
	case KG_OP_CLI_RECV:
		on_client_recv(c, res);
		return;
	case KG_OP_BE_RECV:
		on_backend_recv(c, res);
		return;
	case KG_OP_CLI_SEND:
		on_client_sent(c, res);
		return;
	case KG_OP_BE_SEND:
		on_backend_sent(c, res);
		return;
	case KG_OP_CRYPTO_RX:
		on_rx_opened(c);
		return;
	case KG_OP_CRYPTO_TX:
		on_tx_sealed(c);
		return;
	case KG_OP_CRYPTO_WAIT:
		c->dp->waiting = false;
		rx_pump(c);
		if (c->state != KG_CS_CLOSING)
			tx_pump(c);
		return;
	case KG_OP_CLI_SHUT:
	case KG_OP_BE_SHUT:
		kg_relay_on_shut(c, op);
		return;
	default:
		return;
	}
}

/* ---- handoff ---- */

static int keys_from(struct kg_dpdk_conn *d, int dir, const union kg_crypto_info *ci,
		     const uint8_t *secret)
{
	const uint8_t *key, *seq;

	switch (d->s.cipher) {
	case TLS_CIPHER_AES_GCM_128:
		key = ci->aes128.key, seq = ci->aes128.rec_seq;
		memcpy(d->k[dir].iv, ci->aes128.salt, 4);
		memcpy(d->k[dir].iv + 4, ci->aes128.iv, 8);
		break;
	case TLS_CIPHER_AES_GCM_256:
		key = ci->aes256.key, seq = ci->aes256.rec_seq;
		memcpy(d->k[dir].iv, ci->aes256.salt, 4);
		memcpy(d->k[dir].iv + 4, ci->aes256.iv, 8);
		break;
	default:
		key = ci->chacha.key, seq = ci->chacha.rec_seq;
		memcpy(d->k[dir].iv, ci->chacha.iv, 12);
		break;
	}
	d->k[dir].seq = 0;
	for (int i = 0; i < 8; i++)
		d->k[dir].seq = d->k[dir].seq << 8 | seq[i];
	if (secret)
		memcpy(d->k[dir].secret, secret, d->secret_len);
	d->k[dir].sess = new_session(d, key, dir == DIR_TX);
	return d->k[dir].sess ? 0 : -1;
}

int kg_dpdk_hand_off(struct kg_conn *c, const struct kg_ktls_params *p,
		     const struct kg_ktls_secrets *s, const char *md, char *why, size_t whylen)
{
	struct kg_dpdk_conn *d;

	if (!c->w->dp) {
		snprintf(why, whylen, "worker %u has no cryptodev queue pair", c->w->id);
		return -1;
	}
	d = calloc(1, sizeof(*d));
	if (!d) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	c->dp = d;
	d->s.tls13 = p->tls13;
	d->s.cipher = p->tx.info.cipher_type;
	d->secret_len = s->secret_len;
	snprintf(d->md, sizeof(d->md), "%s", md ? md : "");
	/* No record buffers yet: they are taken when bytes arrive (take). */
	if (keys_from(d, DIR_TX, &p->tx, p->tls13 ? s->server : NULL) < 0 ||
	    keys_from(d, DIR_RX, &p->rx, p->tls13 ? s->client : NULL) < 0) {
		snprintf(why, whylen, "cryptodev session: %s", rte_strerror(rte_errno));
		goto fail;
	}
	return 0;
fail:
	kg_dpdk_conn_free(c);
	return -1;
}

/* Called by the handoff once the SSL object is gone: start both directions. */
void kg_relay_dpdk_begin(struct kg_conn *c);
void kg_relay_dpdk_begin(struct kg_conn *c)
{
	kg_conn_touch(c, c->gen->cfg.idle_timeout_ms);
	rx_pump(c);
	if (c->state != KG_CS_CLOSING)
		tx_pump(c);
}

void kg_dpdk_conn_free(struct kg_conn *c)
{
	struct kg_dpdk_conn *d = c->dp;

	if (!d)
		return;
	for (int i = 0; i < 2; i++) {
		free_session(d->k[i].sess);
		free_session(d->b[i].old_sess);
	}
	/* Nothing is in flight any more: the buffers can serve others. */
	struct kg_dp_buf *bufs[] = { &d->rxb, &d->ptb, &d->txb };
	for (size_t i = 0; i < 3; i++) {
		if (c->w->dp)
			give(c, bufs[i]);
		else
			kg_dp_buf_put(bufs[i]);
	}
	OPENSSL_cleanse(d, sizeof(*d));
	free(d);
	c->dp = NULL;
}
