/* Userspace relay with TLS towards the backend: the client side is TLS
 * (re-encryption gateway) or plain TCP (listen_tls: false, egress mode).
 * Each direction moves at most one record's worth of plaintext at a time and
 * reads nothing more from a side until the other side's output is drained:
 * bounded buffers, the same backpressure as relay_user.c.
 *   cin/cout: the client's socket bytes (TLS records, or plaintext)
 *   bin/bout: the backend's socket bytes (always TLS records) */
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <string.h>

#include "conn.h"
#include "log.h"

#define KG_PLAIN_CHUNK 16384 /* one TLS record of plaintext */

static bool backend_out_busy(const struct kg_conn *c)
{
	return c->be_send_busy || c->bout.len || BIO_ctrl_pending(c->uwbio);
}

static bool client_out_busy(const struct kg_conn *c)
{
	return c->cli_send_busy || c->cout.len || (c->ssl && BIO_ctrl_pending(c->wbio));
}

static void shut_backend(struct kg_conn *c)
{
	if (!c->be_shut_posted) {
		c->be_shut_posted = true;
		kg_conn_shutdown_wr(c, c->bfd, KG_OP_BE_SHUT);
	}
}

static void shut_client(struct kg_conn *c)
{
	if (!c->cli_shut_posted) {
		c->cli_shut_posted = true;
		kg_conn_shutdown_wr(c, c->cfd, KG_OP_CLI_SHUT);
	}
}

/* close_notify to the backend; the FIN follows once it is sent. */
static void client_done_sending(struct kg_conn *c)
{
	c->cli_eof = true;
	kg_conn_set_end(c, "client_eof");
	ERR_clear_error();
	SSL_shutdown(c->ussl);
	ERR_clear_error();
	kg_up_flush(c);
	if (!backend_out_busy(c))
		shut_backend(c);
}

static void backend_done_sending(struct kg_conn *c)
{
	c->be_eof = true;
	kg_conn_set_end(c, "backend_eof");
	if (c->ssl) {
		ERR_clear_error();
		SSL_shutdown(c->ssl); /* queues close_notify */
		ERR_clear_error();
		kg_conn_flush_tls(c);
	}
	if (!client_out_busy(c))
		shut_client(c);
}

/* Plaintext to the backend: whole, as records in uwbio, then flushed. */
static void to_backend(struct kg_conn *c, const uint8_t *p, int n)
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

/* From a TLS client: one SSL_read's worth, when the backend side is free. */
static void tls_client_to_backend(struct kg_conn *c)
{
	uint8_t pt[KG_PLAIN_CHUNK];
	int n, e;

	ERR_clear_error();
	n = SSL_read(c->ssl, pt, sizeof(pt));
	if (kg_relay_key_update_flood(c))
		goto out;
	kg_conn_flush_tls(c); /* e.g. a KeyUpdate answer */
	if (c->state == KG_CS_CLOSING)
		goto out;
	if (n > 0) {
		to_backend(c, pt, n);
		goto out;
	}
	e = SSL_get_error(c->ssl, n);
	if (e == SSL_ERROR_WANT_READ) {
		kg_conn_recv(c, c->cfd, KG_OP_CLI_RECV, &c->cin);
	} else if (e == SSL_ERROR_ZERO_RETURN) {
		client_done_sending(c);
		kg_relay_finish(c);
	} else {
		unsigned long err = ERR_peek_error();
		const char *r = err ? ERR_reason_error_string(err) : NULL;
		kg_peer_setf(c, KG_PEER_DETAIL, "TLS error from client: %s", r ? r : "unknown");
		ERR_clear_error();
		kg_conn_close(c, "client_tls_error");
	}
out:
	OPENSSL_cleanse(pt, n > 0 ? (size_t)n : 0);
}

static void client_to_backend(struct kg_conn *c)
{
	if (c->cli_eof || backend_out_busy(c) || c->state != KG_CS_RELAY)
		return;
	if (c->ssl) {
		tls_client_to_backend(c);
		return;
	}
	if (c->cin.len) { /* a plain client: its bytes as they came */
		uint32_t n = c->cin.len;
		c->cin.len = 0;
		to_backend(c, c->cin.data + c->cin.off, (int)n);
		return;
	}
	kg_conn_recv(c, c->cfd, KG_OP_CLI_RECV, &c->cin);
}

/* Plaintext to the client: records through OpenSSL, or the bytes as they are. */
static void to_client(struct kg_conn *c, const uint8_t *p, int n)
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
	memcpy(c->cout.data, p, (size_t)n);
	c->cout.off = 0;
	c->cout.len = (uint32_t)n;
	kg_conn_send(c, c->cfd, KG_OP_CLI_SEND, &c->cout);
}

/* The backend's TLS failed. Before any data it is a refusal of us (a TLS 1.3
 * server says no to our certificate only after its handshake is done). */
static void backend_tls_error(struct kg_conn *c)
{
	if (!c->up_data_seen) {
		kg_up_refuse(c, kg_up_late_reason(c));
		return;
	}
	unsigned long err = ERR_peek_error();
	const char *r = err ? ERR_reason_error_string(err) : NULL;
	kg_peer_setf(c, KG_PEER_DETAIL, "TLS error from backend: %s", r ? r : "unknown");
	ERR_clear_error();
	kg_conn_close(c, "backend_tls_error");
}

static void backend_to_client(struct kg_conn *c)
{
	uint8_t pt[KG_PLAIN_CHUNK];
	int n, e;

	if (c->be_eof || client_out_busy(c) || c->state != KG_CS_RELAY)
		return;
	if (!c->ssl && !kg_buf_ensure(&c->cout)) {
		kg_conn_close(c, "out_of_memory");
		return;
	}
	ERR_clear_error();
	n = SSL_read(c->ussl, pt, sizeof(pt));
	kg_up_keep_session(c); /* a TLS 1.3 ticket may have come in */
	kg_up_flush(c);        /* e.g. a KeyUpdate answer */
	if (c->state == KG_CS_CLOSING)
		goto out;
	if (n > 0) {
		c->up_data_seen = true;
		to_client(c, pt, n);
		goto out;
	}
	e = SSL_get_error(c->ussl, n);
	if (e == SSL_ERROR_WANT_READ)
		kg_conn_recv(c, c->bfd, KG_OP_BE_RECV, &c->bin);
	else if (e == SSL_ERROR_ZERO_RETURN)
		backend_done_sending(c);
	else
		backend_tls_error(c);
out:
	OPENSSL_cleanse(pt, n > 0 ? (size_t)n : 0);
}

static void on_client_recv(struct kg_conn *c, int res)
{
	c->cli_recv_busy = false;
	if (res < 0) {
		kg_conn_close(c, c->cli_eof ? "client_eof" : "client_reset");
		return;
	}
	if (res == 0) {
		/* FIN: end of input (without close_notify, like relay_user.c). */
		client_done_sending(c);
		kg_relay_finish(c);
		return;
	}
	kg_conn_touch(c, c->gen->cfg.idle_timeout_ms);
	if (c->ssl) {
		BIO_write(c->rbio, c->cin.data, res);
	} else {
		c->cin.off = 0;
		c->cin.len = (uint32_t)res;
	}
	client_to_backend(c);
}

static void on_backend_recv(struct kg_conn *c, int res)
{
	c->be_recv_busy = false;
	if (res < 0) {
		kg_conn_close(c, "backend_reset");
		return;
	}
	if (res == 0) {
		/* FIN without close_notify: before any data, the backend refused us. */
		if (!c->up_data_seen && c->up_cert_asked) {
			backend_tls_error(c);
			return;
		}
		backend_done_sending(c);
		kg_relay_finish(c);
		return;
	}
	kg_conn_touch(c, c->gen->cfg.idle_timeout_ms);
	BIO_write(c->urbio, c->bin.data, res);
	backend_to_client(c);
}

static void on_client_drained(struct kg_conn *c)
{
	if (c->be_eof) {
		shut_client(c);
		return;
	}
	backend_to_client(c);
}

static void on_backend_drained(struct kg_conn *c)
{
	kg_up_flush(c); /* a large write leaves more than one buffer in uwbio */
	if (backend_out_busy(c))
		return;
	if (c->cli_eof) {
		shut_backend(c);
		return;
	}
	client_to_backend(c);
}

static const struct kg_relay_handlers handlers = {
	.client_recv = on_client_recv,
	.backend_recv = on_backend_recv,
	.client_drained = on_client_drained,
	.backend_drained = on_backend_drained,
	.finish = kg_relay_finish,
};

static void up_on_cqe(struct kg_conn *c, enum kg_op op, int res)
{
	kg_relay_dispatch(c, op, res, &handlers);
}

static void up_start(struct kg_conn *c)
{
	kg_ktls_conn_free(c); /* no handoff on this path: drop the key copies */
	kg_ktls_up_free(c);
	if (c->ssl)
		kg_relay_watch_key_updates(c);
	kg_conn_touch(c, c->gen->cfg.idle_timeout_ms);
	kg_up_flush(c); /* our Finished, a PROXY v2 header */
	if (c->state == KG_CS_CLOSING)
		return;
	/* Application bytes may have arrived with either side's Finished. */
	client_to_backend(c);
	if (c->state != KG_CS_RELAY)
		return;
	backend_to_client(c);
	kg_conn_trim_handshake(c);
}

const struct kg_relay_ops kg_relay_up = {
	.name = "user",
	.start = up_start,
	.on_cqe = up_on_cqe,
};
