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
 * into the record bodies, which are sealed in place and sent as one run. */
#include <errno.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "conn.h"
#include "dpdk_int.h"
#include "log.h"

#define KG_DP_PT_MAX 16384              /* record plaintext limit (2^14) */
#define KG_DP_CT_MAX (KG_DP_PT_MAX + 256) /* TLS 1.3 ciphertext limit */
#define KG_DP_SLOTS 4
#define KG_DP_SLOT (5 + 8 + KG_DP_PT_MAX + 1 + 16)
#define KG_DP_RX_CAP (4 * (5 + KG_DP_CT_MAX + 2048))
#define KG_DP_BATCH 64                  /* records per batch and direction */
#define KG_DP_TAG 16
#define KG_DP_KEY_UPDATES_PER_S 8
/* A waiting connection must always fit into an empty queue, both ways. */
_Static_assert(KG_DP_MAX_PENDING >= 2 * KG_DP_BATCH, "crypto queue smaller than two batches");

enum { DIR_RX = 0, DIR_TX = 1 };
enum { CTRL_NONE, CTRL_CLOSE_NOTIFY, CTRL_KEY_UPDATE, CTRL_ALERT };

struct kg_dp_keys {
	void *sess;
	uint8_t iv[12];   /* TLS 1.3 and ChaCha: static IV; TLS 1.2 GCM: 4-byte salt */
	uint64_t seq;
	uint8_t secret[48];
};

struct kg_dp_batch {
	unsigned n, left;          /* records in the batch, operations not back yet */
	bool busy;
	uint8_t status[KG_DP_BATCH];
	void *old_sess;            /* replaced by a KeyUpdate while ops still used it */
};

struct kg_dpdk_conn {
	struct kg_dp_keys k[2];
	struct kg_dp_batch b[2];
	bool tls13;
	int cipher;               /* TLS_CIPHER_* */
	uint8_t secret_len;
	char md[16];
	/* rx: ciphertext rx[rx_pos .. rx_len); the batch covers rx[rx_pos .. rx_end) */
	uint8_t *rx, *pt;
	uint32_t rx_len, rx_pos, rx_end;
	struct kg_buf to_be;      /* packed plaintext in pt, on its way to the backend */
	/* tx */
	uint8_t *tx;
	struct iovec iov[KG_DP_SLOTS];
	struct kg_buf to_cli;     /* sealed records in tx (or ctrl), on their way out */
	uint8_t ctrl[64];
	uint32_t tx_ready;        /* backend bytes in the slots, not sealed yet */
	uint8_t ctrl_pending, ctrl_sending, alert, alert_level;
	bool waiting;             /* on the worker's waiting list */
	uint64_t ku_window_ms;
	unsigned ku_count;
};

static unsigned hdr_len(const struct kg_dpdk_conn *d)
{
	return d->tls13 || d->cipher == TLS_CIPHER_CHACHA20_POLY1305 ? 5 : 13;
}

static void put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static void *new_session(const struct kg_dpdk_conn *d, const uint8_t *key, bool encrypt)
{
	struct rte_crypto_sym_xform x = {
		.type = RTE_CRYPTO_SYM_XFORM_AEAD,
		.aead = {
			.op = encrypt ? RTE_CRYPTO_AEAD_OP_ENCRYPT : RTE_CRYPTO_AEAD_OP_DECRYPT,
			.algo = d->cipher == TLS_CIPHER_CHACHA20_POLY1305 ?
					RTE_CRYPTO_AEAD_CHACHA20_POLY1305 : RTE_CRYPTO_AEAD_AES_GCM,
			.key = { .data = key, .length = (uint16_t)kg_ktls_key_len(d->cipher) },
			.iv = { .offset = KG_DP_IV_OFF, .length = 12 },
			.digest_length = KG_DP_TAG,
			.aad_length = d->tls13 ? 5 : 13,
		},
	};
	return rte_cryptodev_sym_session_create(kg_dpdk_g.dev, &x, kg_dpdk_g.sessions);
}

static void free_session(void *s)
{
	if (s)
		rte_cryptodev_sym_session_free(kg_dpdk_g.dev, s);
}

/* The per-record nonce: iv XOR seq (TLS 1.3, ChaCha), or salt || explicit. */
static void nonce(const struct kg_dpdk_conn *d, const struct kg_dp_keys *k, uint64_t seq,
		  const uint8_t *explicit_nonce, uint8_t out[12])
{
	if (!d->tls13 && d->cipher != TLS_CIPHER_CHACHA20_POLY1305) {
		memcpy(out, k->iv, 4);
		memcpy(out + 4, explicit_nonce, 8);
		return;
	}
	uint8_t s[8];
	put_be64(s, seq);
	memcpy(out, k->iv, 12);
	for (int i = 0; i < 8; i++)
		out[4 + i] ^= s[i];
}

/* One operation on one record: m_src points at the record, m_dst (decrypt)
 * at the same place in pt. Returns -1 when the pools are dry. */
static int queue_op(struct kg_conn *c, int dir, uint16_t idx, uint8_t *rec, uint8_t *dst,
		    uint32_t body_off, uint32_t body_len, const uint8_t *aad, unsigned aad_len,
		    uint64_t seq)
{
	struct kg_dpdk_conn *d = c->dp;
	struct kg_dpdk_worker *dw = c->w->dp;
	struct rte_crypto_op *op;
	struct rte_mbuf *m[2] = { NULL, NULL };
	unsigned nm = dst ? 2 : 1;

	if (dw->npending >= KG_DP_MAX_PENDING ||
	    rte_crypto_op_bulk_alloc(dw->ops, RTE_CRYPTO_OP_TYPE_SYMMETRIC, &op, 1) != 1)
		return -1;
	if (rte_pktmbuf_alloc_bulk(dw->mbufs, m, nm) != 0) {
		rte_crypto_op_free(op);
		return -1;
	}
	struct kg_dp_op_priv *p = kg_dp_priv(op);
	p->c = c;
	p->dir = (uint8_t)dir;
	p->idx = idx;
	p->orig_buf = m[0]->buf_addr;
	p->orig_iova = m[0]->buf_iova;
	uint32_t total = body_off + body_len + KG_DP_TAG;
	for (unsigned i = 0; i < nm; i++) {
		m[i]->buf_addr = i ? dst : rec;
		m[i]->buf_iova = (rte_iova_t)(uintptr_t)(i ? dst : rec); /* IOVA as VA */
		m[i]->buf_len = (uint16_t)total;
		m[i]->data_off = 0;
		m[i]->data_len = (uint16_t)total;
		m[i]->pkt_len = total;
	}
	memcpy(p->aad, aad, aad_len);
	nonce(d, &d->k[dir], seq, rec + 5, p->iv);
	rte_crypto_op_attach_sym_session(op, d->k[dir].sess);
	op->sym->m_src = m[0];
	op->sym->m_dst = m[1];
	op->sym->aead.data.offset = body_off;
	op->sym->aead.data.length = body_len;
	op->sym->aead.digest.data = rec + body_off + body_len;
	op->sym->aead.digest.phys_addr = (rte_iova_t)(uintptr_t)op->sym->aead.digest.data;
	op->sym->aead.aad.data = p->aad;
	op->sym->aead.aad.phys_addr = rte_crypto_op_ctophys_offset(op, KG_DP_IV_OFF + 16);
	dw->pending[dw->npending++] = op;
	return 0;
}

static void restore_mbuf(struct rte_mbuf *m, void *buf, rte_iova_t iova)
{
	if (!m)
		return;
	m->buf_addr = buf;
	m->buf_iova = iova;
	m->buf_len = 0;
	m->data_off = 0;
	rte_pktmbuf_free(m);
}

void kg_dp_op_done(struct kg_worker *w, struct rte_crypto_op *op)
{
	struct kg_dp_op_priv *p = kg_dp_priv(op);
	struct kg_conn *c = p->c;
	struct kg_dpdk_conn *d = c->dp;
	int dir = p->dir;

	/* Both mbufs came from the same header-only pool: same own buffer layout. */
	struct rte_mbuf *dst = op->sym->m_dst;
	restore_mbuf(op->sym->m_src, p->orig_buf, p->orig_iova);
	if (dst)
		restore_mbuf(dst, (char *)dst + sizeof(*dst),
			     rte_mempool_virt2iova(dst) + sizeof(*dst));
	if (d) {
		d->b[dir].status[p->idx] = op->status;
		if (--d->b[dir].left == 0)
			kg_conn_on_cqe(c, dir == DIR_RX ? KG_OP_CRYPTO_RX : KG_OP_CRYPTO_TX, 0, 0);
	}
	rte_crypto_op_free(op);
}

static void set_end(struct kg_conn *c, const char *end)
{
	if (!c->end)
		c->end = end;
}

static void maybe_finish(struct kg_conn *c)
{
	if (c->cli_eof && c->be_shut_done && c->be_eof && c->cli_shut_done)
		kg_conn_close(c, NULL);
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
	unsigned h = hdr_len(d), inner = blen + (d->tls13 ? 1 : 0);
	uint8_t *r = d->ctrl, aad[13];
	uint32_t rec_len = (h - 5) + inner + KG_DP_TAG;

	r[0] = d->tls13 ? 23 : (uint8_t)type;
	r[1] = 3, r[2] = 3, r[3] = (uint8_t)(rec_len >> 8), r[4] = (uint8_t)rec_len;
	if (h == 13)
		put_be64(r + 5, d->k[DIR_TX].seq);
	memcpy(r + h, body, blen);
	if (d->tls13) {
		r[h + blen] = (uint8_t)type;
		memcpy(aad, r, 5);
	} else {
		put_be64(aad, d->k[DIR_TX].seq);
		aad[8] = (uint8_t)type, aad[9] = 3, aad[10] = 3;
		aad[11] = (uint8_t)(inner >> 8), aad[12] = (uint8_t)inner;
	}
	if (queue_op(c, DIR_TX, 0, r, NULL, h, inner, aad, d->tls13 ? 5 : 13,
		     d->k[DIR_TX].seq) < 0) {
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
		uint8_t key[32];
		d->b[DIR_TX].old_sess = d->k[DIR_TX].sess;
		d->k[DIR_TX].sess = NULL;
		if (kg_tls13_step_secret(d->md, d->k[DIR_TX].secret, d->secret_len) == 0 &&
		    kg_tls13_key_iv_md(d->md, d->k[DIR_TX].secret, d->secret_len, key,
				       kg_ktls_key_len(d->cipher), d->k[DIR_TX].iv) == 0)
			d->k[DIR_TX].sess = new_session(d, key, true);
		OPENSSL_cleanse(key, sizeof(key));
		d->k[DIR_TX].seq = 0;
		if (!d->k[DIR_TX].sess)
			kg_conn_close(c, "dpdk_rekey_failed");
	}
}

/* Backend plaintext in the slots -> records sealed in place. */
static void tx_seal(struct kg_conn *c, uint32_t n)
{
	struct kg_dpdk_conn *d = c->dp;
	unsigned h = hdr_len(d), trail = (d->tls13 ? 1 : 0) + KG_DP_TAG;
	uint32_t slot = h + KG_DP_PT_MAX + trail, out = 0;
	uint16_t idx = 0;

	for (uint32_t done = 0; done < n; done += KG_DP_PT_MAX, idx++) {
		uint32_t pt = n - done < KG_DP_PT_MAX ? n - done : KG_DP_PT_MAX;
		uint8_t *r = d->tx + idx * slot, aad[13];
		uint32_t inner = pt + (d->tls13 ? 1 : 0), rec_len = (h - 5) + inner + KG_DP_TAG;
		uint64_t seq = d->k[DIR_TX].seq++;

		r[0] = 23, r[1] = 3, r[2] = 3;
		r[3] = (uint8_t)(rec_len >> 8), r[4] = (uint8_t)rec_len;
		if (h == 13)
			put_be64(r + 5, seq);
		if (d->tls13) {
			r[h + pt] = 23; /* inner content type, no padding */
			memcpy(aad, r, 5);
		} else {
			put_be64(aad, seq);
			aad[8] = 23, aad[9] = 3, aad[10] = 3;
			aad[11] = (uint8_t)(pt >> 8), aad[12] = (uint8_t)pt;
		}
		if (queue_op(c, DIR_TX, idx, r, NULL, h, inner, aad, d->tls13 ? 5 : 13, seq) < 0) {
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
	d->to_cli = (struct kg_buf){ .data = d->tx, .off = 0, .len = out };
	start_batch(c, DIR_TX, idx);
}

static void tx_recv(struct kg_conn *c)
{
	struct kg_dpdk_conn *d = c->dp;
	unsigned h = hdr_len(d), trail = (d->tls13 ? 1 : 0) + KG_DP_TAG;
	struct io_uring_sqe *sqe;

	for (unsigned i = 0; i < KG_DP_SLOTS; i++) {
		d->iov[i].iov_base = d->tx + i * (h + KG_DP_PT_MAX + trail) + h;
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
	if (c->be_eof || c->be_recv_busy || c->cli_shut_posted)
		return;
	tx_recv(c);
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
	set_end(c, end);
	c->cli_eof = true;
	queue_ctrl(c, CTRL_ALERT, alert, level);
}

static void fatal(struct kg_conn *c, uint8_t alert, const char *end, const char *detail)
{
	fatal_at(c, 2, alert, end, detail);
}

static void on_backend_recv(struct kg_conn *c, int res)
{
	c->be_recv_busy = false;
	if (res < 0) {
		kg_conn_close(c, "backend_reset");
		return;
	}
	if (res == 0) {
		c->be_eof = true;
		set_end(c, "backend_eof");
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

	if (d->rx_pos) { /* keep the partial record, at the front */
		memmove(d->rx, d->rx + d->rx_pos, d->rx_len - d->rx_pos);
		d->rx_len -= d->rx_pos;
		d->rx_pos = 0;
	}
	sqe = kg_get_sqe(&c->w->ring);
	io_uring_prep_recv(sqe, c->cfd, d->rx + d->rx_len, KG_DP_RX_CAP - d->rx_len, 0);
	io_uring_sqe_set_data64(sqe, kg_ud(c, KG_OP_CLI_RECV));
	c->cli_recv_busy = true;
	c->inflight++;
}

/* Queues the complete records from rx_pos (at most a batch); how many. */
static unsigned rx_open(struct kg_conn *c)
{
	struct kg_dpdk_conn *d = c->dp;
	unsigned h = hdr_len(d), n = 0, ct_max = d->tls13 ? KG_DP_CT_MAX : KG_DP_PT_MAX + 2048;
	uint32_t pos = d->rx_pos;

	if (d->rx_len - pos >= 5 && !room(c))
		return 1; /* resumed by kg_dpdk_flush; nothing else to do meanwhile */
	while (n < KG_DP_BATCH && d->rx_len - pos >= 5) {
		uint8_t *r = d->rx + pos, aad[13];
		uint32_t len = (uint32_t)r[3] << 8 | r[4];

		if (len > ct_max || len < (h - 5) + KG_DP_TAG + (d->tls13 ? 1 : 0)) {
			if (!n)
				fatal(c, 22, "record_overflow", "client record of bad length");
			break; /* the records before it first */
		}
		if (r[1] != 3 || (d->tls13 && r[0] != 23) || r[0] < 20 || r[0] > 23) {
			if (!n)
				fatal(c, 10, "unexpected_message", "client record of unexpected type");
			break;
		}
		if (d->rx_len - pos < 5 + len)
			break;
		uint32_t body = len - (h - 5) - KG_DP_TAG;
		uint64_t seq = d->k[DIR_RX].seq + n;
		if (d->tls13) {
			memcpy(aad, r, 5);
		} else {
			put_be64(aad, seq);
			aad[8] = r[0], aad[9] = r[1], aad[10] = r[2];
			aad[11] = (uint8_t)(body >> 8), aad[12] = (uint8_t)body;
		}
		if (queue_op(c, DIR_RX, (uint16_t)n, r, d->pt + pos, h, body, aad,
			     d->tls13 ? 5 : 13, seq) < 0) {
			if (n)
				start_batch(c, DIR_RX, n);
			c->w->stats.dpdk_fallbacks++;
			kg_conn_close(c, "crypto_queue_full");
			return 0;
		}
		pos += 5 + len;
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
	rx_recv(c);
}

static void client_done_sending(struct kg_conn *c, const char *end)
{
	c->cli_eof = true;
	set_end(c, end);
	if (c->dp->to_be.len == 0 && !c->be_send_busy)
		shut(c, false);
	maybe_finish(c);
}

static bool key_update_flood(struct kg_conn *c)
{
	struct kg_dpdk_conn *d = c->dp;
	uint64_t now = kg_now_ms();

	if (now - d->ku_window_ms >= 1000) {
		d->ku_window_ms = now;
		d->ku_count = 0;
	}
	if (++d->ku_count <= KG_DP_KEY_UPDATES_PER_S)
		return false;
	kg_peer_setf(c, KG_PEER_DETAIL, "more than %d TLS KeyUpdates in one second",
		     KG_DP_KEY_UPDATES_PER_S);
	kg_conn_close(c, "key_update_flood");
	return true;
}

/* The client's KeyUpdate: next receive key; answer if it asks us to update. */
static int rx_key_update(struct kg_conn *c, const uint8_t *m, uint32_t len)
{
	struct kg_dpdk_conn *d = c->dp;
	uint8_t key[32];
	int rc = -1;

	if (len != 5 || m[1] || m[2] || m[3] != 1 || m[4] > 1) {
		fatal(c, 50, "client_tls_error", "malformed KeyUpdate");
		return -1;
	}
	if (key_update_flood(c))
		return -1;
	c->w->stats.dpdk_key_updates++;
	free_session(d->k[DIR_RX].sess);
	d->k[DIR_RX].sess = NULL;
	if (kg_tls13_step_secret(d->md, d->k[DIR_RX].secret, d->secret_len) == 0 &&
	    kg_tls13_key_iv_md(d->md, d->k[DIR_RX].secret, d->secret_len, key,
			       kg_ktls_key_len(d->cipher), d->k[DIR_RX].iv) == 0)
		d->k[DIR_RX].sess = new_session(d, key, false);
	OPENSSL_cleanse(key, sizeof(key));
	d->k[DIR_RX].seq = 0;
	if (!d->k[DIR_RX].sess) {
		kg_conn_close(c, "dpdk_rekey_failed");
		return -1;
	}
	if (m[4] == 1) /* update_requested: ours goes out before any later data */
		queue_ctrl(c, CTRL_KEY_UPDATE, 0, 0);
	rc = 0;
	return rc;
}

/* One opened record: 1 to go on, 0 to stop this batch here, -1 closed. */
static int rx_record(struct kg_conn *c, uint8_t *r, uint8_t *pt, uint32_t *packed)
{
	struct kg_dpdk_conn *d = c->dp;
	unsigned h = hdr_len(d);
	uint32_t len = ((uint32_t)r[3] << 8 | r[4]) - (h - 5) - KG_DP_TAG;
	uint8_t *body = pt + h, type = r[0];

	if (d->tls13) { /* strip any padding; the last non-zero byte is the type */
		while (len && body[len - 1] == 0)
			len--;
		if (!len) {
			fatal(c, 10, "unexpected_message", "TLS 1.3 record without content type");
			return -1;
		}
		type = body[--len];
	}
	c->w->stats.dpdk_records_rx++;
	switch (type) {
	case 23:
		if (len > KG_DP_PT_MAX) {
			fatal(c, 22, "record_overflow", "client plaintext over 16 KiB");
			return -1;
		}
		memmove(d->pt + *packed, body, len);
		*packed += len;
		return 1;
	case 21:
		if (len == 2 && body[1] == 0) { /* close_notify: the client is done sending */
			c->cli_eof = true;
			set_end(c, "client_eof");
			return 0;
		}
		kg_peer_setf(c, KG_PEER_DETAIL, "client sent alert %u", len == 2 ? body[1] : 0);
		kg_conn_close(c, "client_alert");
		return -1;
	case 22:
		if (d->tls13 && len >= 1 && body[0] == 24)
			return rx_key_update(c, body, len) < 0 ? -1 : 0;
		if (!d->tls13) { /* renegotiation: refused with a warning, as OpenSSL does */
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
		uint8_t *r = d->rx + pos;
		uint32_t total = 5 + ((uint32_t)r[3] << 8 | r[4]);

		if (b->status[i] != RTE_CRYPTO_OP_STATUS_SUCCESS) {
			fatal(c, 20, "bad_record_mac", "client record failed authentication");
			return;
		}
		d->k[DIR_RX].seq++;
		int rc = rx_record(c, r, d->pt + pos, &packed);
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
		d->to_be = (struct kg_buf){ .data = d->pt, .off = 0, .len = packed };
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
		c->cli_shut_done = true;
		maybe_finish(c);
		return;
	case KG_OP_BE_SHUT:
		c->be_shut_done = true;
		maybe_finish(c);
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

	switch (d->cipher) {
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
	d->tls13 = p->tls13;
	d->cipher = p->tx.info.cipher_type;
	d->secret_len = s->secret_len;
	snprintf(d->md, sizeof(d->md), "%s", md ? md : "");
	d->rx = malloc(KG_DP_RX_CAP);
	d->pt = malloc(KG_DP_RX_CAP);
	d->tx = malloc(KG_DP_SLOTS * KG_DP_SLOT);
	if (!d->rx || !d->pt || !d->tx) {
		snprintf(why, whylen, "out of memory");
		goto fail;
	}
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
	if (d->pt)
		OPENSSL_cleanse(d->pt, KG_DP_RX_CAP);
	if (d->tx)
		OPENSSL_cleanse(d->tx, KG_DP_SLOTS * KG_DP_SLOT);
	free(d->rx);
	free(d->pt);
	free(d->tx);
	OPENSSL_cleanse(d, sizeof(*d));
	free(d);
	c->dp = NULL;
}
