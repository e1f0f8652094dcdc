/* The handoff: bring OpenSSL to a record boundary with nothing buffered,
 * derive the keys with the right sequence numbers, give them to the kernel,
 * free the SSL object and wipe every key copy. Before the kernel owns TX,
 * any problem falls back to the userspace relay; after, it closes. */
#include "ktls.h"

#include <errno.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conn.h"
#include "log.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

static unsigned cipher_bit(int cipher)
{
	switch (cipher) {
	case TLS_CIPHER_AES_GCM_128: return KG_KTLS_BIT_AES_128_GCM;
	case TLS_CIPHER_AES_GCM_256: return KG_KTLS_BIT_AES_256_GCM;
	case TLS_CIPHER_CHACHA20_POLY1305: return KG_KTLS_BIT_CHACHA20_POLY1305;
	default: return 0;
	}
}

bool kg_ktls_cipher_ok(const struct kg_conn *c, const SSL *ssl)
{
	return (c->w->rt->ktls_ciphers & cipher_bit(kg_ktls_cipher_of(ssl))) != 0;
}

bool kg_ktls_wanted(const struct kg_conn *c)
{
	return c->kt && c->lrt->spec->ktls != KG_KTLS_OFF &&
	       (c->w->rt->ktls_ciphers & cipher_bit(kg_ktls_cipher_of(c->ssl)));
}

void kg_ktls_track_rx(struct kg_conn *c, const uint8_t *p, size_t len)
{
	if (c->kt)
		kg_rec_track(&c->kt->rx_track, p, len);
}

int kg_ktls_conn_new(struct kg_conn *c)
{
	struct kg_ktls_conn *kt = calloc(1, sizeof(*kt));

	if (!kt)
		return -1;
	c->kt = kt;
	kg_ktls_watch(c->ssl, &kt->secrets);
	return 0;
}

void kg_ktls_conn_free(struct kg_conn *c)
{
	struct kg_ktls_conn *kt = c->kt;

	if (!kt)
		return;
	kg_ktls_unwatch(c->ssl);
	OPENSSL_cleanse(&kt->secrets, sizeof(kt->secrets));
	free(kt);
	c->kt = NULL;
}

/* Logs each distinct fallback reason once per worker, not once per connection. */
void kg_ktls_fallback(struct kg_conn *c, const char *why)
{
	static __thread char last[160];

	if (strcmp(last, why) != 0) {
		snprintf(last, sizeof(last), "%s", why);
		struct kg_field f[] = { KG_S("reason", why), KG_I("worker", c->w->id),
					KG_I("conn", c->id) };
		kg_log_event(KG_LOG_WARN, "ktls_fallback", f, KG_NFIELDS(f));
	}
	kg_ktls_conn_free(c); /* the secrets are no use to the userspace relay */
	kg_ktls_up_free(c);
	c->relay = c->ussl ? &kg_relay_up : &kg_relay_user;
	c->relay->start(c);
}

int kg_ktls_install(int fd, const struct kg_ktls_params *p, bool *tx_installed, char *why,
		    size_t whylen)
{
	int one = 1;

	*tx_installed = false;
	if (setsockopt(fd, SOL_TCP, TCP_ULP, "tls", sizeof("tls")) < 0) {
		snprintf(why, whylen, "TCP_ULP tls: %s", strerror(errno));
		return -1;
	}
	if (setsockopt(fd, SOL_TLS, TLS_TX, &p->tx, p->len) < 0) {
		snprintf(why, whylen, "TLS_TX: %s", strerror(errno));
		return -1;
	}
	*tx_installed = true;
	if (setsockopt(fd, SOL_TLS, TLS_RX, &p->rx, p->len) < 0) {
		snprintf(why, whylen, "TLS_RX: %s", strerror(errno));
		return -1;
	}
#ifdef TLS_RX_EXPECT_NO_PAD
	/* TLS 1.3 records from real clients carry no padding: lets the kernel
	 * decrypt in place (6.0+); older kernels refuse it harmlessly. */
	if (p->tls13)
		setsockopt(fd, SOL_TLS, TLS_RX_EXPECT_NO_PAD, &one, sizeof(one));
#endif
	return 0;
}

/* TLS 1.3 on a kernel that can rekey: the traffic secrets stay (in their
 * own allocation, cleansed on free) so a client KeyUpdate can be followed.
 * Anywhere else nothing outlives the handoff. */
struct kg_ktls_rekey *kg_ktls_keep_secrets(struct kg_conn *c, const struct kg_ktls_params *p)
{
	const struct kg_ktls_secrets *s = &c->kt->secrets;

	if (!c->w->rt->ktls_rekey || !p->tls13)
		return NULL;
	return kg_ktls_rekey_new(p->tx.info.cipher_type, s->client, s->server, s->secret_len);
}

bool kg_dpdk_wanted(const struct kg_conn *c)
{
	int v = c->ssl ? SSL_version(c->ssl) : 0;

	/* backend_tls (c->ussl): the engine does no TLS towards a backend. */
	return KG_DPDK_BUILT && c->kt && !c->ussl && c->w->dp &&
	       (v == TLS1_2_VERSION || v == TLS1_3_VERSION) &&
	       (c->w->rt->dpdk_ciphers & cipher_bit(kg_ktls_cipher_of(c->ssl)));
}

#ifdef KG_HAVE_DPDK
void kg_relay_dpdk_begin(struct kg_conn *c);

/* The same keys and sequence numbers as the kernel would get, to the
 * cryptodev sessions of the DPDK engine instead. */
static void hand_off_dpdk(struct kg_conn *c, struct kg_ktls_params *params)
{
	char why[160];
	int rc = kg_dpdk_hand_off(c, params, &c->kt->secrets, kg_tls13_digest_name(c->ssl), why,
				  sizeof(why));

	OPENSSL_cleanse(params, sizeof(*params));
	if (rc < 0) {
		c->w->stats.dpdk_fallbacks++;
		kg_ktls_fallback(c, why);
		return;
	}
	kg_ktls_conn_free(c);
	/* A cached session outlives the SSL: its parsed chain is not needed. */
	kg_conn_trim_handshake(c);
	kg_conn_free_ssl(c); /* the worker owns the record layer now */
	kg_conn_release_buffers(c); /* the engine has its own from here on */
	kg_relay_dpdk_begin(c);
}
#endif

static void hand_off(struct kg_conn *c)
{
	struct kg_ktls_params params;
	struct kg_ktls_rekey *rk;
	char why[160];
	bool tx_installed;

	if (kg_ktls_derive(c->ssl, &c->kt->secrets, &params, why, sizeof(why)) < 0) {
		if (c->relay == &kg_relay_dpdk)
			c->w->stats.dpdk_fallbacks++;
		kg_ktls_fallback(c, why);
		return;
	}
#ifdef KG_HAVE_DPDK
	if (c->relay == &kg_relay_dpdk) {
		hand_off_dpdk(c, &params);
		return;
	}
#endif
	int rc = kg_ktls_install(c->cfd, &params, &tx_installed, why, sizeof(why));
	rk = rc == 0 ? kg_ktls_keep_secrets(c, &params) : NULL;
	OPENSSL_cleanse(&params, sizeof(params));
	kg_ktls_conn_free(c); /* cleanses the secrets, detaches the callbacks */
	if (rc < 0 && !tx_installed) {
		kg_ktls_fallback(c, why);
		return;
	}
	if (rc < 0) {
		kg_peer_setf(c, KG_PEER_DETAIL, "kTLS handoff: %s", why);
		kg_conn_close(c, "ktls_error");
		return;
	}
	kg_conn_free_ssl(c); /* the kernel owns the session now */
	kg_relay_splice_begin(c, true, false, rk);
}

/* Reads exactly the rest of a partial record, so the socket is left at a
 * record boundary for the kernel. */
static void recv_rest_of_record(struct kg_conn *c, size_t missing)
{
	struct io_uring_sqe *sqe;

	if (!kg_buf_ensure(&c->cin)) {
		kg_conn_close(c, "out_of_memory");
		return;
	}
	sqe = kg_get_sqe(&c->w->ring);
	io_uring_prep_recv(sqe, c->cfd, c->cin.data, missing, 0);
	io_uring_sqe_set_data64(sqe, kg_ud(c, KG_OP_CLI_RECV));
	c->cli_recv_busy = true;
	c->inflight++;
}

/* Step until OpenSSL holds no client bytes and we sent all it wrote. */
static void prepare(struct kg_conn *c)
{
	int n;

	if (c->cli_send_busy || c->be_send_busy || c->cli_recv_busy)
		return; /* a completion brings us back */
	if (c->cout.len || BIO_ctrl_pending(c->wbio)) {
		kg_conn_flush_tls(c);
		return;
	}
	if (!kg_buf_ensure(&c->bout)) { /* a drained send gave it back */
		kg_conn_close(c, "out_of_memory");
		return;
	}
	ERR_clear_error();
	n = SSL_read(c->ssl, c->bout.data, KG_BUF_SIZE);
	if (n > 0) { /* plaintext that came with the handshake goes first */
		c->bout.off = 0;
		c->bout.len = (uint32_t)n;
		c->bytes_in += (uint64_t)n;
		kg_conn_send(c, c->bfd, KG_OP_BE_SEND, &c->bout);
		return;
	}
	if (SSL_get_error(c->ssl, n) != SSL_ERROR_WANT_READ) {
		ERR_clear_error();
		kg_ktls_fallback(c, "client closed or sent a non-data record before the handoff");
		return;
	}
	size_t missing = kg_rec_missing(&c->kt->rx_track);
	if (missing) {
		recv_rest_of_record(c, missing);
		return;
	}
	if (BIO_ctrl_pending(c->rbio) || SSL_has_pending(c->ssl)) {
		kg_ktls_fallback(c, "OpenSSL still buffers client bytes at a record boundary");
		return;
	}
	hand_off(c);
}

static void prep_start(struct kg_conn *c)
{
	if (c->ussl) {
		kg_ktls_up_prep_start(c);
		return;
	}
	kg_conn_touch(c, c->gen->cfg.idle_timeout_ms);
	if (!kg_buf_ensure(&c->bout)) {
		kg_conn_close(c, "out_of_memory");
		return;
	}
	prepare(c);
}

static void prep_on_cqe(struct kg_conn *c, enum kg_op op, int res)
{
	if (c->sp) { /* handed off: the splice relay owns the completions */
		kg_relay_splice_on_cqe(c, op, res);
		return;
	}
	if (c->ussl) {
		kg_ktls_up_prep_on_cqe(c, op, res);
		return;
	}
#ifdef KG_HAVE_DPDK
	if (c->dp) { /* handed off to the DPDK record engine */
		kg_relay_dpdk_on_cqe(c, op, res);
		return;
	}
#endif
	switch (op) {
	case KG_OP_CLI_SEND:
	case KG_OP_BE_SEND:
		if (!kg_conn_send_progress(c, op, res))
			return;
		break;
	case KG_OP_CLI_RECV:
		c->cli_recv_busy = false;
		if (res <= 0) {
			kg_conn_close(c, res == 0 ? "client_eof" : "client_reset");
			return;
		}
		kg_ktls_track_rx(c, c->cin.data, (size_t)res);
		BIO_write(c->rbio, c->cin.data, res);
		break;
	default:
		return;
	}
	prepare(c);
}

const struct kg_relay_ops kg_relay_ktls = {
	.name = "ktls",
	.start = prep_start,
	.on_cqe = prep_on_cqe,
};

/* The DPDK engine prepares the handoff exactly like kTLS (record boundary,
 * nothing buffered in OpenSSL), then keeps the record layer in the worker. */
const struct kg_relay_ops kg_relay_dpdk = {
	.name = "dpdk",
	.start = prep_start,
	.on_cqe = prep_on_cqe,
};
