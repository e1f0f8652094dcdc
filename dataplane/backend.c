/* Backend connect: non-blocking through the ring, bounded by a linked timeout,
 * the next listed backend on failure (round-robin start per worker). */
#include <errno.h>
#include <openssl/err.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <unistd.h>

#include "conn.h"
#include "log.h"
#include "proxy_v2.h"

static void backend_give_up(struct kg_conn *c)
{
	c->w->stats.backend_failures++;
	c->result = "backend_unavailable";
	/* Tell the client cleanly: close_notify (if it speaks TLS), then FIN. */
	ERR_clear_error();
	if (c->ssl)
		SSL_shutdown(c->ssl);
	kg_conn_linger(c);
}

static int open_backend_socket(const struct kg_addr *a)
{
	int one = 1;
	int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd >= 0 && a->ss.ss_family != AF_UNIX)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static void close_backend_fd(struct kg_conn *c)
{
	struct io_uring_sqe *sqe;

	if (c->bfd < 0)
		return;
	sqe = kg_get_sqe(&c->w->ring);
	io_uring_prep_close(sqe, c->bfd);
	io_uring_sqe_set_data64(sqe, kg_ud(NULL, KG_OP_IGNORE));
	c->bfd = -1;
}

static void try_backend(struct kg_conn *c)
{
	const struct kg_site *site = c->route->site;
	unsigned idx = (c->backend_idx + c->backend_tries) % (unsigned)site->auth->nbackends;
	const struct kg_addr *a = &site->auth->backends[idx].addr;
	unsigned timeout_ms = c->gen->cfg.connect_timeout_ms;
	struct io_uring_sqe *sqe;

	/* Each backend is reached with its own TLS settings (or none). */
	c->up_backend = idx;
	c->up = site->backends[idx].up;
	kg_peer_set(c, KG_PEER_BACKEND, a->text);
	c->bfd = open_backend_socket(a);
	if (c->bfd < 0) {
		kg_backend_on_connect(c, -errno);
		return;
	}
	c->connect_ts.tv_sec = timeout_ms / 1000;
	c->connect_ts.tv_nsec = (long long)(timeout_ms % 1000) * 1000000;
	kg_reserve_sqes(&c->w->ring, 2);
	sqe = kg_get_sqe(&c->w->ring);
	io_uring_prep_connect(sqe, c->bfd, (const struct sockaddr *)&a->ss, a->len);
	io_uring_sqe_set_data64(sqe, kg_ud(c, KG_OP_BE_CONNECT));
	sqe->flags |= IOSQE_IO_LINK;
	/* Reserved above: a submit between the two would break the link. */
	sqe = kg_get_sqe(&c->w->ring);
	io_uring_prep_link_timeout(sqe, &c->connect_ts, 0);
	io_uring_sqe_set_data64(sqe, kg_ud(c, KG_OP_BE_TIMEOUT));
	c->inflight += 2;
}

static void start_relay(struct kg_conn *c)
{
	enum kg_record_engine e = c->lrt->spec->record_engine;

	if (c->ussl) {
		/* TLS on the backend side: kTLS on both sockets (the backend's
		 * alone for a plain client) when the kernel has both ciphers,
		 * else both sessions stay in OpenSSL. The DPDK engine does not
		 * do the backend's TLS: auto takes these paths, dpdk falls back
		 * to OpenSSL (and counts it), openssl keeps kTLS out. */
		if (e == KG_ENGINE_DPDK && c->ssl)
			c->w->stats.dpdk_fallbacks++;
		c->relay = (e == KG_ENGINE_AUTO || e == KG_ENGINE_KTLS) && kg_ktls_up_wanted(c)
				   ? &kg_relay_ktls
				   : &kg_relay_up;
	} else if ((e == KG_ENGINE_AUTO || e == KG_ENGINE_KTLS) && kg_ktls_wanted(c)) {
		c->relay = &kg_relay_ktls;
	} else if ((e == KG_ENGINE_AUTO || e == KG_ENGINE_DPDK) && kg_dpdk_wanted(c)) {
		c->relay = &kg_relay_dpdk;
	} else {
		if (e == KG_ENGINE_DPDK)
			c->w->stats.dpdk_fallbacks++; /* cipher or protocol the device lacks */
		c->relay = &kg_relay_user;
		if (c->kt)
			kg_ktls_conn_free(c); /* cipher the kernel lacks */
	}
	c->state = KG_CS_RELAY;
	c->relay->start(c);
}

/* The name OpenSSL gives a key: "RSA2048", "EC256" in HAProxy's style. */
static void key_alg_text(EVP_PKEY *key, char *buf, size_t cap)
{
	const char *type = EVP_PKEY_is_a(key, "EC") ? "EC" : EVP_PKEY_is_a(key, "RSA") ? "RSA"
			   : EVP_PKEY_get0_type_name(key);

	snprintf(buf, cap, "%s%d", type ? type : "unknown", EVP_PKEY_get_bits(key));
}

static void sig_alg_text(X509 *x, char *buf, size_t cap)
{
	int nid = X509_get_signature_nid(x);

	snprintf(buf, cap, "%s", nid != NID_undef ? OBJ_nid2sn(nid) : "unknown");
}

static ssize_t encode_proxy_header(struct kg_conn *c, uint8_t *out, size_t cap)
{
	struct sockaddr_storage src, dst;
	socklen_t slen = sizeof(src), dlen = sizeof(dst);
	X509 *peer = c->ssl ? SSL_get0_peer_certificate(c->ssl) : NULL;
	char cn[256] = "", spiffe[512] = "", key_alg[32] = "", sig_alg[64] = "";
	uint8_t fp[32];
	unsigned fplen = 0;
	struct kg_pp2_info in = {
		.sni = kg_peer_get(c, KG_PEER_SNI)[0] ? kg_peer_get(c, KG_PEER_SNI) : NULL,
		.has_cert = peer != NULL,
		.plain = c->ssl == NULL,
	};

	if (c->ssl) { /* a plain client: addresses only */
		in.version = SSL_get_version(c->ssl);
		in.cipher = SSL_CIPHER_get_name(SSL_get_current_cipher(c->ssl));
		in.resumed = SSL_session_reused(c->ssl);
	}

	if (getpeername(c->cfd, (struct sockaddr *)&src, &slen) == 0 &&
	    getsockname(c->cfd, (struct sockaddr *)&dst, &dlen) == 0) {
		in.src = (struct sockaddr *)&src;
		in.dst = (struct sockaddr *)&dst;
	}
	if (peer) {
		X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn, sizeof(cn));
		in.cn = cn[0] ? cn : NULL;
		if (kg_cert_spiffe_id(peer, spiffe, sizeof(spiffe)))
			in.spiffe = spiffe;
		if (X509_digest(peer, EVP_sha256(), fp, &fplen) == 1 && fplen == sizeof(fp))
			in.fingerprint = fp;
		key_alg_text(X509_get0_pubkey(peer), key_alg, sizeof(key_alg));
		sig_alg_text(peer, sig_alg, sizeof(sig_alg));
		in.key_alg = key_alg;
		in.sig_alg = sig_alg;
	}
	return kg_pp2_encode(&in, out, cap);
}

/* The header goes out before any client byte, so the backend reads it first. */
static void send_proxy_header(struct kg_conn *c)
{
	ssize_t n;

	if (!kg_buf_ensure(&c->bout)) {
		kg_conn_close(c, "out_of_memory");
		return;
	}
	n = encode_proxy_header(c, c->bout.data, KG_BUF_SIZE);
	if (n < 0) {
		kg_peer_set(c, KG_PEER_DETAIL, "PROXY v2 header too large");
		kg_conn_close(c, "internal_error");
		return;
	}
	c->bout.off = 0;
	c->bout.len = (uint32_t)n;
	c->pp2_pending = true;
	kg_conn_send(c, c->bfd, KG_OP_BE_SEND, &c->bout);
}

/* With backend_tls the header is the first thing inside the TLS stream. */
static void write_proxy_header_tls(struct kg_conn *c)
{
	uint8_t hdr[KG_BUF_SIZE];
	ssize_t n = encode_proxy_header(c, hdr, sizeof(hdr));

	if (n < 0) {
		kg_peer_set(c, KG_PEER_DETAIL, "PROXY v2 header too large");
		kg_conn_close(c, "internal_error");
		return;
	}
	ERR_clear_error();
	if (SSL_write(c->ussl, hdr, (int)n) != (int)n) {
		ERR_clear_error();
		kg_conn_close(c, "internal_error");
		return;
	}
	start_relay(c);
}

void kg_backend_ready(struct kg_conn *c)
{
	if (!c->route->site->auth->proxy_v2)
		start_relay(c);
	else if (c->ussl)
		write_proxy_header_tls(c);
	else
		send_proxy_header(c);
}

void kg_backend_on_header_sent(struct kg_conn *c, int res)
{
	if (!kg_conn_send_progress(c, KG_OP_BE_SEND, res))
		return; /* more to send, or the connection is closing */
	c->pp2_pending = false;
	start_relay(c);
}

void kg_backend_connect(struct kg_conn *c)
{
	c->backend_idx = c->w->backend_rr++ % c->route->site->auth->nbackends;
	c->backend_tries = 0;
	try_backend(c);
}

void kg_backend_on_connect(struct kg_conn *c, int res)
{
	if (res == 0) {
		if (c->up)
			kg_up_start(c);
		else
			kg_backend_ready(c);
		return;
	}
	if (res == -ECANCELED) {
		c->w->stats.connect_timeouts++;
		res = -ETIMEDOUT;
	}
	struct kg_field f[] = {
		KG_S("backend", kg_peer_get(c, KG_PEER_BACKEND)),
		KG_S("reason", strerror(-res)),
		KG_I("conn", c->id),
		KG_I("worker", c->w->id),
	};
	kg_log_event(KG_LOG_WARN, "backend_connect_failed", f, KG_NFIELDS(f));
	kg_up_count_refusal(c->w, "connect_error");
	kg_peer_setf(c, KG_PEER_DETAIL, "%s: %s", kg_peer_get(c, KG_PEER_BACKEND),
		     strerror(-res));
	close_backend_fd(c);
	if (++c->backend_tries < c->route->site->auth->nbackends) {
		try_backend(c);
		return;
	}
	kg_peer_set(c, KG_PEER_BACKEND, "");
	backend_give_up(c);
}

/* The failed attempt's fd goes once none of its operations is in flight:
 * a completion of the old socket must never be read as the new one's. */
static void retry_when_idle(struct kg_conn *c)
{
	if (c->be_send_busy || c->be_recv_busy)
		return;
	close_backend_fd(c);
	c->up_retrying = false;
	try_backend(c);
}

bool kg_backend_retry(struct kg_conn *c)
{
	if (c->backend_tries + 1 >= c->route->site->auth->nbackends)
		return false;
	c->backend_tries++;
	kg_up_reset(c);
	kg_peer_set(c, KG_PEER_DETAIL, "");
	c->state = KG_CS_CONNECTING;
	kg_conn_touch(c, c->gen->cfg.idle_timeout_ms); /* as after the client handshake */
	c->up_retrying = true;
	if (c->be_send_busy)
		kg_conn_cancel(c, KG_OP_BE_SEND);
	if (c->be_recv_busy)
		kg_conn_cancel(c, KG_OP_BE_RECV);
	retry_when_idle(c);
	return true;
}

void kg_backend_on_stale_op(struct kg_conn *c, enum kg_op op)
{
	if (op == KG_OP_BE_SEND)
		c->be_send_busy = false;
	else
		c->be_recv_busy = false;
	retry_when_idle(c);
}
