/* The kTLS handoff for backend_tls connections: both OpenSSL sessions (the
 * client's, when it speaks TLS, and ours towards the backend) are brought to
 * a record boundary with nothing buffered, then both sockets get their keys
 * and the splice relay moves bytes kTLS <-> kTLS (or plain <-> kTLS).
 * The backend side is a TLS client: its record counts start after our
 * Finished, and the NewSessionTickets a TLS 1.3 server sends after the
 * handshake are read by OpenSSL when they arrive before the handoff (the
 * session is then kept for resumption) and dropped by the splice relay when
 * they arrive after it. TLS 1.3 tickets are used once, so the handoff
 * waits for this connection's first ticket (it follows our Finished at once)
 * for at most KG_TICKET_WAIT_MS; a backend that sent none in that time is
 * remembered (per worker, backend and generation) and not waited for again.
 * Client bytes wait in the socket meanwhile, for the kernel. */
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "ktls.h"
#include "log.h"

#define KG_PLAIN_CHUNK 16384
#define KG_TICKET_WAIT_MS 20

bool kg_ktls_up_wanted(const struct kg_conn *c)
{
	if (!c->ukt || c->lrt->spec->ktls == KG_KTLS_OFF || !kg_ktls_cipher_ok(c, c->ussl))
		return false;
	return !c->ssl || (c->kt && kg_ktls_cipher_ok(c, c->ssl));
}

int kg_ktls_up_new(struct kg_conn *c)
{
	struct kg_ktls_conn *kt = calloc(1, sizeof(*kt));

	if (!kt)
		return -1;
	c->ukt = kt;
	kg_ktls_watch(c->ussl, &kt->secrets);
	return 0;
}

void kg_ktls_up_free(struct kg_conn *c)
{
	struct kg_ktls_conn *kt = c->ukt;

	if (!kt)
		return;
	kg_ktls_unwatch(c->ussl);
	OPENSSL_cleanse(&kt->secrets, sizeof(kt->secrets));
	free(kt);
	c->ukt = NULL;
}

void kg_ktls_up_track_rx(struct kg_conn *c, const uint8_t *p, size_t len)
{
	if (c->ukt)
		kg_rec_track(&c->ukt->rx_track, p, len);
}

/* Reads exactly the rest of a partial record from one side. */
static void recv_exact(struct kg_conn *c, bool client, size_t missing)
{
	struct kg_buf *b = client ? &c->cin : &c->bin;
	struct io_uring_sqe *sqe;

	if (!kg_buf_ensure(b)) {
		kg_conn_close(c, "out_of_memory");
		return;
	}
	sqe = kg_get_sqe(&c->w->ring);
	io_uring_prep_recv(sqe, client ? c->cfd : c->bfd, b->data, missing, 0);
	io_uring_sqe_set_data64(sqe, kg_ud(c, client ? KG_OP_CLI_RECV : KG_OP_BE_RECV));
	*(client ? &c->cli_recv_busy : &c->be_recv_busy) = true;
	c->inflight++;
}

/* rk (the client's socket only): its TLS 1.3 secrets, kept where the kernel
 * can rekey, for the client's KeyUpdates. */
static int hand_off_one(struct kg_conn *c, SSL *ssl, struct kg_ktls_conn *kt, int fd,
			bool *tx_installed, struct kg_ktls_rekey **rk, char *why, size_t whylen)
{
	struct kg_ktls_params params;
	int rc;

	*tx_installed = false;
	if (kg_ktls_derive(ssl, &kt->secrets, &params, why, whylen) < 0)
		return -1;
	rc = kg_ktls_install(fd, &params, tx_installed, why, whylen);
	if (rc == 0 && rk)
		*rk = kg_ktls_keep_secrets(c, &params);
	OPENSSL_cleanse(&params, sizeof(params));
	return rc;
}

/* Backend socket first: until its TX is the kernel's, falling back to the
 * userspace relay is still possible. */
static void hand_off(struct kg_conn *c)
{
	struct kg_ktls_rekey *rk = NULL;
	char why[160];
	bool tx;

	if (hand_off_one(c, c->ussl, c->ukt, c->bfd, &tx, NULL, why, sizeof(why)) < 0) {
		if (!tx) {
			kg_ktls_fallback(c, why);
			return;
		}
		goto fail;
	}
	if (c->ssl && hand_off_one(c, c->ssl, c->kt, c->cfd, &tx, &rk, why, sizeof(why)) < 0)
		goto fail;
	kg_ktls_conn_free(c);
	kg_ktls_up_free(c);
	/* The kernel owns both sessions now. */
	bool cli_ktls = c->ssl != NULL;
	/* Freed without a TLS shutdown, OpenSSL would mark the session (kept
	 * for resumption) not resumable: it is not bad, the kernel has it. */
	SSL_set_shutdown(c->ussl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	kg_conn_free_ssl(c);
	SSL_free(c->ussl);
	c->ussl = NULL;
	c->urbio = c->uwbio = NULL;
	kg_relay_splice_begin(c, cli_ktls, true, rk);
	return;
fail:
	kg_peer_setf(c, KG_PEER_DETAIL, "kTLS handoff: %s", why);
	kg_conn_close(c, "ktls_error");
}

static void plaintext_to_client(struct kg_conn *c, const uint8_t *p, int n)
{
	c->bytes_out += (uint64_t)n;
	if (c->ssl) {
		ERR_clear_error();
		if (SSL_write(c->ssl, p, n) != n) {
			ERR_clear_error();
			kg_conn_close(c, "client_tls_error");
			return;
		}
		kg_conn_flush_tls(c);
		return;
	}
	if (!kg_buf_ensure(&c->cout)) {
		kg_conn_close(c, "out_of_memory");
		return;
	}
	memcpy(c->cout.data, p, (size_t)n);
	c->cout.off = 0;
	c->cout.len = (uint32_t)n;
	kg_conn_send(c, c->cfd, KG_OP_CLI_SEND, &c->cout);
}

static void plaintext_to_backend(struct kg_conn *c, const uint8_t *p, int n)
{
	ERR_clear_error();
	if (SSL_write(c->ussl, p, n) != n) {
		ERR_clear_error();
		kg_conn_close(c, "backend_tls_error");
		return;
	}
	c->bytes_in += (uint64_t)n;
	kg_up_flush(c);
}

/* 1: the client side is at a record boundary with nothing buffered; 0: an
 * operation is on its way; -1: handled (fallback or close). */
static int drain_client(struct kg_conn *c, uint8_t *pt)
{
	int n;

	if (!c->ssl)
		return 1;
	ERR_clear_error();
	n = SSL_read(c->ssl, pt, KG_PLAIN_CHUNK);
	if (n > 0) { /* plaintext that came with the handshake goes first */
		plaintext_to_backend(c, pt, n);
		OPENSSL_cleanse(pt, (size_t)n);
		return 0;
	}
	if (SSL_get_error(c->ssl, n) != SSL_ERROR_WANT_READ) {
		ERR_clear_error();
		kg_ktls_fallback(c, "client closed or sent a non-data record before the handoff");
		return -1;
	}
	size_t missing = kg_rec_missing(&c->kt->rx_track);
	if (missing) {
		recv_exact(c, true, missing);
		return 0;
	}
	if (BIO_ctrl_pending(c->rbio) || SSL_has_pending(c->ssl)) {
		kg_ktls_fallback(c, "OpenSSL still buffers client bytes at a record boundary");
		return -1;
	}
	return 1;
}

static int drain_backend(struct kg_conn *c, uint8_t *pt)
{
	int n;

	ERR_clear_error();
	n = SSL_read(c->ussl, pt, KG_PLAIN_CHUNK);
	kg_up_keep_session(c); /* tickets that came before the handoff */
	kg_up_flush(c);
	if (c->state == KG_CS_CLOSING)
		return -1;
	if (n > 0) {
		c->up_data_seen = true;
		plaintext_to_client(c, pt, n);
		OPENSSL_cleanse(pt, (size_t)n);
		return 0;
	}
	if (SSL_get_error(c->ussl, n) != SSL_ERROR_WANT_READ) {
		if (!c->up_data_seen) { /* e.g. certificate_required from a TLS 1.3 server */
			kg_up_refuse(c, kg_up_late_reason(c));
			return -1;
		}
		ERR_clear_error();
		kg_ktls_fallback(c, "backend closed or sent a non-data record before the handoff");
		return -1;
	}
	size_t missing = kg_rec_missing(&c->ukt->rx_track);
	if (missing) {
		recv_exact(c, false, missing);
		return 0;
	}
	if (BIO_ctrl_pending(c->urbio) || SSL_has_pending(c->ussl)) {
		kg_ktls_fallback(c, "OpenSSL still buffers backend bytes at a record boundary");
		return -1;
	}
	return 1;
}

static void cancel(struct kg_conn *c, enum kg_op op)
{
	struct io_uring_sqe *sqe = kg_get_sqe(&c->w->ring);

	io_uring_prep_cancel64(sqe, kg_ud(c, op), 0);
	io_uring_sqe_set_data64(sqe, kg_ud(c, KG_OP_CANCEL));
	c->inflight++;
}

/* True while the handoff should still wait for a TLS 1.3 ticket: then a
 * backend read and a timeout are both in flight. */
static bool wait_for_ticket(struct kg_conn *c)
{
	struct io_uring_sqe *sqe;

	if (c->up_ticket_wait && (c->up_ticket_seen || c->up_data_seen))
		c->up_ticket_wait = false;
	if (!c->up_ticket_wait) {
		if (c->up_cli_poll)
			cancel(c, KG_OP_UP_TIMER);
		if (c->up_wait_recv)
			cancel(c, KG_OP_BE_RECV);
		return c->up_cli_poll || c->up_wait_recv;
	}
	if (!c->be_recv_busy) {
		kg_conn_recv(c, c->bfd, KG_OP_BE_RECV, &c->bin);
		c->up_wait_recv = true;
	}
	if (!c->up_cli_poll) {
		/* connect_ts is free again once the backend is connected. */
		c->connect_ts.tv_sec = 0;
		c->connect_ts.tv_nsec = KG_TICKET_WAIT_MS * 1000000LL;
		sqe = kg_get_sqe(&c->w->ring);
		io_uring_prep_timeout(sqe, &c->connect_ts, 0, 0);
		io_uring_sqe_set_data64(sqe, kg_ud(c, KG_OP_UP_TIMER));
		c->up_cli_poll = true;
		c->inflight++;
	}
	return true;
}

/* Step until neither OpenSSL holds bytes and everything either wrote is sent. */
static void prepare(struct kg_conn *c)
{
	uint8_t pt[KG_PLAIN_CHUNK];

	if (c->cli_send_busy || c->be_send_busy || c->cli_recv_busy)
		return; /* a completion brings us back */
	if (c->be_recv_busy && !c->up_wait_recv)
		return; /* the rest of a backend record */
	if (c->up_wait_recv || c->up_cli_poll) { /* waiting for a ticket */
		if (!c->up_ticket_wait) {
			wait_for_ticket(c); /* cancels what is left */
			return;
		}
		if (c->be_recv_busy)
			return;
		/* backend bytes came in (the poll is still out): read them */
	}
	if (c->cout.len || (c->ssl && BIO_ctrl_pending(c->wbio))) {
		kg_conn_flush_tls(c);
		return;
	}
	if (c->bout.len || BIO_ctrl_pending(c->uwbio)) {
		kg_up_flush(c);
		return;
	}
	if (drain_client(c, pt) != 1 || drain_backend(c, pt) != 1)
		return;
	if (wait_for_ticket(c))
		return;
	hand_off(c);
}

void kg_ktls_up_prep_start(struct kg_conn *c)
{
	kg_conn_touch(c, c->gen->cfg.idle_timeout_ms);
	c->up_ticket_wait = SSL_version(c->ussl) == TLS1_3_VERSION && !c->up_ticket_seen &&
			    !kg_up_sends_no_tickets(c);
	prepare(c);
}

static void on_recv(struct kg_conn *c, bool client, int res)
{
	*(client ? &c->cli_recv_busy : &c->be_recv_busy) = false;
	if (!client && c->up_wait_recv) {
		c->up_wait_recv = false;
		if (res == -ECANCELED) { /* the wait ended the other way */
			prepare(c);
			return;
		}
	}
	if (res <= 0) {
		if (!client && !c->up_data_seen && c->up_cert_asked) {
			kg_up_refuse(c, kg_up_late_reason(c));
			return;
		}
		kg_conn_close(c, client ? (res == 0 ? "client_eof" : "client_reset")
					: (res == 0 ? "backend_eof" : "backend_reset"));
		return;
	}
	if (client) {
		kg_ktls_track_rx(c, c->cin.data, (size_t)res);
		BIO_write(c->rbio, c->cin.data, res);
	} else {
		kg_ktls_up_track_rx(c, c->bin.data, (size_t)res);
		BIO_write(c->urbio, c->bin.data, res);
	}
	prepare(c);
}

void kg_ktls_up_prep_on_cqe(struct kg_conn *c, enum kg_op op, int res)
{
	switch (op) {
	case KG_OP_CLI_SEND:
	case KG_OP_BE_SEND:
		if (!kg_conn_send_progress(c, op, res))
			return;
		if (op == KG_OP_BE_SEND)
			kg_up_flush(c);
		prepare(c);
		return;
	case KG_OP_CLI_RECV:
		on_recv(c, true, res);
		return;
	case KG_OP_UP_TIMER: /* the wait timed out (or was cancelled) */
		c->up_cli_poll = false;
		if (res == -ETIME && !c->up_ticket_seen && !c->up_data_seen)
			kg_up_note_no_tickets(c);
		c->up_ticket_wait = false;
		prepare(c);
		return;
	case KG_OP_BE_RECV:
		on_recv(c, false, res);
		return;
	default:
		return;
	}
}
