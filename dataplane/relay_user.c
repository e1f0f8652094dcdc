/* Userspace relay: OpenSSL decrypts client records into bout and encrypts
 * backend bytes from bin. One buffer in flight per direction is the
 * backpressure: nothing is read from a side whose peer is not keeping up. */
#include <openssl/err.h>
#include <string.h>

#include "conn.h"
#include "log.h"

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

/* Counts the KeyUpdates OpenSSL decrypts, per one-second window. */
static void key_update_cb(int write_p, int version, int content_type, const void *buf,
			  size_t len, SSL *ssl, void *arg)
{
	struct kg_conn *c = arg;
	uint64_t now;

	if (write_p || content_type != SSL3_RT_HANDSHAKE || len < 1 ||
	    ((const uint8_t *)buf)[0] != SSL3_MT_KEY_UPDATE)
		return;
	now = kg_now_ms();
	if (now - c->key_update_window_ms >= 1000) {
		c->key_update_window_ms = now;
		c->key_updates = 0;
	}
	c->key_updates++;
}

bool kg_relay_key_update_flood(struct kg_conn *c)
{
	if (c->key_updates <= KG_MAX_KEY_UPDATES_PER_S)
		return false;
	kg_peer_setf(c, KG_PEER_DETAIL, "more than %d TLS KeyUpdates in one second",
		     KG_MAX_KEY_UPDATES_PER_S);
	kg_conn_close(c, "key_update_flood");
	return true;
}

static void client_done_sending(struct kg_conn *c)
{
	c->cli_eof = true;
	kg_conn_set_end(c, "client_eof");
	if (c->bout.len == 0 && !c->be_send_busy)
		shut_backend(c);
}

/* Decrypts what the client sent into bout while bout is free. */
static void client_to_backend(struct kg_conn *c)
{
	int n, e;

	if (c->cli_eof || c->bout.len || c->be_send_busy)
		return;
	if (!kg_buf_ensure(&c->bout)) {
		kg_conn_close(c, "out_of_memory");
		return;
	}
	ERR_clear_error();
	n = SSL_read(c->ssl, c->bout.data, KG_BUF_SIZE);
	if (kg_relay_key_update_flood(c))
		return;
	kg_conn_flush_tls(c); /* e.g. a KeyUpdate answer */
	if (c->state == KG_CS_CLOSING)
		return;
	if (n > 0) {
		c->bout.off = 0;
		c->bout.len = (uint32_t)n;
		c->bytes_in += (uint64_t)n;
		kg_conn_send(c, c->bfd, KG_OP_BE_SEND, &c->bout);
		return;
	}
	kg_buf_release(&c->bout); /* nothing decrypted: not held while waiting */
	e = SSL_get_error(c->ssl, n);
	if (e == SSL_ERROR_WANT_READ) {
		kg_conn_recv(c, c->cfd, KG_OP_CLI_RECV, &c->cin);
	} else if (e == SSL_ERROR_ZERO_RETURN) {
		client_done_sending(c);
		kg_relay_finish(c);
	} else {
		unsigned long err = ERR_peek_error();
		const char *r = err ? ERR_reason_error_string(err) : NULL;
		kg_peer_setf(c, KG_PEER_DETAIL, "TLS error from client: %s",
			 r ? r : "unknown");
		ERR_clear_error();
		kg_conn_close(c, "client_tls_error");
	}
}

static void backend_to_client(struct kg_conn *c)
{
	if (c->be_eof || c->cout.len || c->cli_send_busy || BIO_ctrl_pending(c->wbio))
		return;
	kg_conn_recv(c, c->bfd, KG_OP_BE_RECV, &c->bin);
}

static void on_client_recv(struct kg_conn *c, int res)
{
	c->cli_recv_busy = false;
	if (res < 0) {
		kg_conn_close(c, c->cli_eof ? "client_eof" : "client_reset");
		return;
	}
	if (res == 0) {
		/* FIN without close_notify: treated as end of input, like HAProxy. */
		client_done_sending(c);
		kg_relay_finish(c);
		return;
	}
	kg_conn_touch(c, c->gen->cfg.idle_timeout_ms);
	BIO_write(c->rbio, c->cin.data, res);
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
		c->be_eof = true;
		kg_conn_set_end(c, "backend_eof");
		ERR_clear_error();
		SSL_shutdown(c->ssl); /* queues close_notify */
		kg_conn_flush_tls(c);
		if (!c->cli_send_busy)
			shut_client(c);
		return;
	}
	kg_conn_touch(c, c->gen->cfg.idle_timeout_ms);
	ERR_clear_error();
	/* Memory BIO: the whole buffer becomes records at once. */
	if (SSL_write(c->ssl, c->bin.data, res) != res) {
		kg_conn_close(c, "client_tls_error");
		return;
	}
	c->bytes_out += (uint64_t)res;
	kg_conn_flush_tls(c);
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

static void user_on_cqe(struct kg_conn *c, enum kg_op op, int res)
{
	kg_relay_dispatch(c, op, res, &handlers);
}

void kg_relay_watch_key_updates(struct kg_conn *c)
{
	/* Replaces the kTLS record counter, which this path no longer needs. */
	SSL_set_msg_callback(c->ssl, key_update_cb);
	SSL_set_msg_callback_arg(c->ssl, c);
}

static void user_start(struct kg_conn *c)
{
	kg_relay_watch_key_updates(c);
	kg_conn_touch(c, c->gen->cfg.idle_timeout_ms);
	/* Application bytes may have arrived with the client's Finished. */
	client_to_backend(c);
	if (c->state == KG_CS_CLOSING)
		return;
	backend_to_client(c);
	kg_conn_trim_handshake(c);
}

const struct kg_relay_ops kg_relay_user = {
	.name = "user",
	.start = user_start,
	.on_cqe = user_on_cqe,
};
