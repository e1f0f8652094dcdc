#include "conn.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/buffer.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"

/* Connection objects come from per-worker slabs of 64 KiB, away from the
 * heap where handshakes churn: an idle connection's block then never pins a
 * heap page that the handshakes' freed memory could give back. Slabs are
 * kept for reuse (a peak of 10,000 connections keeps ~6 MiB). Under ASan each
 * connection is its own allocation so that use-after-free is still caught. */
#define KG_CONN_SLAB_BYTES (64 * 1024)

static struct kg_conn *conn_alloc(struct kg_worker *w)
{
#ifdef __SANITIZE_ADDRESS__
	(void)w;
	return aligned_alloc(16, sizeof(struct kg_conn));
#else
	struct kg_conn *c;

	if (!w->conn_pool) {
		char *slab = mmap(NULL, KG_CONN_SLAB_BYTES, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (slab == MAP_FAILED)
			return NULL;
		for (size_t i = 0; i + sizeof(*c) <= KG_CONN_SLAB_BYTES; i += sizeof(*c)) {
			c = (struct kg_conn *)(slab + i);
			c->next = w->conn_pool;
			w->conn_pool = c;
		}
	}
	c = w->conn_pool;
	w->conn_pool = c->next;
	return c;
#endif
}

static void conn_release(struct kg_worker *w, struct kg_conn *c)
{
#ifdef __SANITIZE_ADDRESS__
	(void)w;
	free(c);
#else
	c->next = w->conn_pool;
	w->conn_pool = c;
#endif
}

struct kg_conn *kg_conn_new(struct kg_worker *w, int fd, unsigned listener)
{
	struct kg_conn *c = conn_alloc(w);
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	int one = 1;

	if (!c)
		return NULL;
	memset(c, 0, sizeof(*c));
	c->w = w;
	c->id = ++w->next_conn_id;
	c->listener = listener;
	c->gen = w->gen;
	kg_gen_ref(c->gen);
	c->lrt = &c->gen->listeners[listener];
	c->route = &c->lrt->routes[0];
	c->cfd = fd;
	c->bfd = -1;
	c->start_ms = kg_now_ms();
	c->start_us = kg_now_us();
	if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0) {
		char client[64];
		kg_addr_format((struct sockaddr *)&ss, len, client, sizeof(client));
		kg_peer_set(c, KG_PEER_CLIENT, client);
	}
	/* Handshake flights and relayed writes are latency-bound. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	w->nconns++;
	w->stats.conns_total++;
	w->stats.conns_active++;
	return c;
}

/* A memory BIO keeps the capacity its biggest burst grew it to: an empty
 * one is swapped for a fresh one (set0 frees the old). */
static BIO *fresh_if_grown(BIO *b)
{
	BUF_MEM *m = NULL;

	if (!b || BIO_ctrl_pending(b) || BIO_get_mem_ptr(b, &m) <= 0 || !m || m->max == 0)
		return NULL;
	return BIO_new(BIO_s_mem());
}

static void trim_session(SSL *s, BIO **rb, BIO **wb)
{
	BIO *n;

	/* OpenSSL's own record buffers need nothing: SSL_MODE_RELEASE_BUFFERS
	 * frees them whenever they are empty. */
	if (!s)
		return;
	if ((n = fresh_if_grown(*rb)) != NULL) {
		SSL_set0_rbio(s, n);
		*rb = n;
	}
	if ((n = fresh_if_grown(*wb)) != NULL) {
		SSL_set0_wbio(s, n);
		*wb = n;
	}
}

void kg_conn_trim_tls(struct kg_conn *c)
{
	if (c->state != KG_CS_RELAY || (c->relay != &kg_relay_user && c->relay != &kg_relay_up))
		return;
	trim_session(c->ssl, &c->rbio, &c->wbio);
	trim_session(c->ussl, &c->urbio, &c->uwbio);
}

/* The client's intermediates (the session's peer chain and the verified
 * chain both hold them, parsed, ~4 KB each) serve the policy decision and the
 * access log's fields, both done by now. OpenSSL hands out both stacks for
 * modification; the leaf stays in the session, which has no setter for it. */
static void drop_client_chain(SSL *s)
{
	STACK_OF(X509) *stacks[] = { SSL_get_peer_cert_chain(s), SSL_get0_verified_chain(s) };
	X509 *x;

	for (size_t i = 0; i < 2; i++)
		while (stacks[i] && (x = sk_X509_pop(stacks[i])) != NULL)
			X509_free(x);
}

void kg_conn_trim_handshake(struct kg_conn *c)
{
	if (c->ssl)
		drop_client_chain(c->ssl);
	kg_conn_trim_tls(c); /* the handshake's flights grew the BIOs */
}

void kg_conn_release_buffers(struct kg_conn *c)
{
	kg_buf_release(&c->cin);
	kg_buf_release(&c->cout);
	kg_buf_release(&c->bin);
	kg_buf_release(&c->bout);
}

static void ring_close_fd(struct kg_worker *w, int fd)
{
	struct io_uring_sqe *sqe;

	if (fd < 0)
		return;
	sqe = kg_get_sqe(&w->ring);
	io_uring_prep_close(sqe, fd);
	io_uring_sqe_set_data64(sqe, kg_ud(NULL, KG_OP_IGNORE));
}

static void log_access(struct kg_conn *c)
{
	const struct kg_peer_info *p = &c->peer;
	struct kg_field f[] = {
		KG_S("client", kg_peer_get(c, KG_PEER_CLIENT)),
		KG_S("sni", kg_peer_get(c, KG_PEER_SNI)),
		KG_S("subject", kg_peer_get(c, KG_PEER_SUBJECT)),
		KG_S("issuer", kg_peer_get(c, KG_PEER_ISSUER)),
		KG_S("serial", kg_peer_get(c, KG_PEER_SERIAL)),
		KG_S("fingerprint", kg_peer_get(c, KG_PEER_FINGERPRINT)),
		KG_S("site", c->route ? c->route->site->label : NULL),
		KG_S("rule", p->rule),
		KG_S("version", p->version),
		KG_S("cipher", p->cipher),
		KG_S("result", c->result ? c->result : "error"),
		KG_S("detail", kg_peer_get(c, KG_PEER_DETAIL)),
		KG_S("backend", kg_peer_get(c, KG_PEER_BACKEND)),
		KG_I("bytes_in", c->bytes_in),
		KG_I("bytes_out", c->bytes_out),
		KG_I("duration_ms", kg_now_ms() - c->start_ms),
		KG_S("end", c->end),
		KG_S("path", c->relay ? c->relay->name : NULL),
		KG_I("resumed", p->resumed),
		KG_S("upstream_tls", p->up_version),
		KG_I("upstream_resumed", p->up_resumed),
		KG_I("worker", c->w->id),
		KG_I("conn", c->id),
	};
	bool ok = c->result && strcmp(c->result, "ok") == 0;
	kg_log_event(ok ? KG_LOG_INFO : KG_LOG_WARN, "access", f, KG_NFIELDS(f));
}

/* Freed without a TLS shutdown, OpenSSL takes the client's session out of
 * the session cache and marks it not resumable. A relay that ends in a
 * reset, or a kTLS handoff, does not make a verified session bad. */
void kg_conn_free_ssl(struct kg_conn *c)
{
	if (c->ssl && c->peer.version)
		SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	SSL_free(c->ssl); /* frees the BIOs too */
	c->ssl = NULL;
	c->rbio = c->wbio = NULL;
}

static void conn_free(struct kg_conn *c)
{
	struct kg_worker *w = c->w;

	log_access(c);
	kg_srclimit_release(&c->src);
	if (c->relay == &kg_relay_ktls)
		w->stats.relayed_ktls++;
	else if (c->relay == &kg_relay_dpdk)
		w->stats.relayed_dpdk++;
	else if (c->relay)
		w->stats.relayed_user++;
	w->stats.bytes_in += c->bytes_in;
	w->stats.bytes_out += c->bytes_out;
	ring_close_fd(w, c->cfd);
	ring_close_fd(w, c->bfd);
	kg_ktls_conn_free(c);
	kg_ktls_up_free(c);
	if (c->sp)
		kg_splice_conn_free(c);
	kg_dpdk_conn_free(c);
	kg_conn_free_ssl(c);
	/* A relay that ended in a reset does not make the backend's session
	 * bad: keep it resumable (OpenSSL marks it otherwise). */
	if (c->ussl && c->peer.up_version)
		SSL_set_shutdown(c->ussl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	SSL_free(c->ussl);
	kg_conn_release_buffers(c); /* wiped before malloc gets them back */
	kg_gen_unref(c->gen);
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	w->nconns--;
	w->stats.conns_active--;
	kg_peer_free(c);
	conn_release(w, c);
}

/* Cancels by user_data, not by fd: a splice's file is its output pipe, so
 * cancel-by-fd would miss it. Unmatched cancels just complete with -ENOENT. */
void kg_conn_cancel(struct kg_conn *c, enum kg_op op)
{
	struct io_uring_sqe *sqe = kg_get_sqe(&c->w->ring);

	io_uring_prep_cancel64(sqe, kg_ud(c, op), IORING_ASYNC_CANCEL_ALL);
	io_uring_sqe_set_data64(sqe, kg_ud(c, KG_OP_CANCEL));
	c->inflight++;
}

void kg_conn_close(struct kg_conn *c, const char *end)
{
	static const enum kg_op cancellable[] = {
		KG_OP_CLI_RECV, KG_OP_CLI_SEND, KG_OP_BE_RECV, KG_OP_BE_SEND, KG_OP_BE_CONNECT,
		KG_OP_UP_TIMER,
	};

	if (c->state == KG_CS_CLOSING)
		return;
	if (!c->end)
		c->end = end;
	c->state = KG_CS_CLOSING;
	if (c->inflight == 0) {
		/* Freed from the ring, never here: a close can come from deep
		 * inside a handler (a failed allocation in kg_conn_flush_tls),
		 * and the callers up the stack still touch c on their way out. */
		struct io_uring_sqe *sqe = kg_get_sqe(&c->w->ring);
		io_uring_prep_nop(sqe);
		io_uring_sqe_set_data64(sqe, kg_ud(c, KG_OP_CANCEL));
		c->inflight++;
		return;
	}
	for (size_t i = 0; i < sizeof(cancellable) / sizeof(cancellable[0]); i++)
		kg_conn_cancel(c, cancellable[i]);
}

void kg_conn_touch(struct kg_conn *c, unsigned timeout_ms)
{
	c->deadline_ms = kg_now_ms() + timeout_ms;
}

/* select: the kernel picks a ring buffer when bytes arrive (an idle
 * connection holds none); else the receive goes into b's owned buffer. */
static void post_recv(struct kg_conn *c, int fd, enum kg_op op, struct kg_buf *b, bool select)
{
	struct io_uring_sqe *sqe;
	bool *busy = op == KG_OP_CLI_RECV ? &c->cli_recv_busy : &c->be_recv_busy;

	if (*busy)
		return;
	if (select) {
		kg_buf_release(b); /* what it held has been consumed */
	} else if (!kg_buf_ensure(b)) {
		kg_conn_close(c, "out_of_memory");
		return;
	}
	sqe = kg_get_sqe(&c->w->ring);
	io_uring_prep_recv(sqe, fd, select ? NULL : b->data, KG_BUF_SIZE, 0);
	if (select) {
		sqe->flags |= IOSQE_BUFFER_SELECT;
		sqe->buf_group = KG_BUF_GROUP;
	}
	io_uring_sqe_set_data64(sqe, kg_ud(c, op));
	*busy = true;
	c->inflight++;
}

void kg_conn_recv(struct kg_conn *c, int fd, enum kg_op op, struct kg_buf *b)
{
	post_recv(c, fd, op, b, kg_bufpool_selects());
}

void kg_conn_send(struct kg_conn *c, int fd, enum kg_op op, struct kg_buf *b)
{
	struct io_uring_sqe *sqe;
	bool *busy = op == KG_OP_CLI_SEND ? &c->cli_send_busy : &c->be_send_busy;

	if (*busy || b->len == 0)
		return;
	sqe = kg_get_sqe(&c->w->ring);
	io_uring_prep_send(sqe, fd, b->data + b->off, b->len, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, kg_ud(c, op));
	*busy = true;
	c->inflight++;
}

void kg_conn_shutdown_wr(struct kg_conn *c, int fd, enum kg_op op)
{
	struct io_uring_sqe *sqe = kg_get_sqe(&c->w->ring);

	io_uring_prep_shutdown(sqe, fd, SHUT_WR);
	io_uring_sqe_set_data64(sqe, kg_ud(c, op));
	c->inflight++;
}

void kg_conn_flush_tls(struct kg_conn *c)
{
	int n;

	if (!c->ssl || c->cli_send_busy || c->cout.len || BIO_ctrl_pending(c->wbio) == 0)
		return;
	if (!kg_buf_ensure(&c->cout)) {
		kg_conn_close(c, "out_of_memory");
		return;
	}
	n = BIO_read(c->wbio, c->cout.data, KG_BUF_SIZE);
	if (n <= 0) {
		kg_buf_release(&c->cout);
		return;
	}
	c->cout.off = 0;
	c->cout.len = (uint32_t)n;
	kg_conn_send(c, c->cfd, KG_OP_CLI_SEND, &c->cout);
}

/* Partial sends are resent here; true once the buffer is empty. */
bool kg_conn_send_progress(struct kg_conn *c, enum kg_op op, int res)
{
	bool cli = op == KG_OP_CLI_SEND;
	struct kg_buf *b = cli ? &c->cout : &c->bout;

	if (cli)
		c->cli_send_busy = false;
	else
		c->be_send_busy = false;
	if (res < 0) {
		if (cli)
			kg_conn_close(c, c->cli_eof ? "client_eof" : "client_reset");
		else
			kg_conn_close(c, "backend_reset");
		return false;
	}
	b->off += (uint32_t)res;
	b->len -= (uint32_t)res;
	if (b->len) {
		kg_conn_send(c, cli ? c->cfd : c->bfd, op, b);
		return false;
	}
	kg_buf_release(b); /* drained: an idle connection keeps no send buffer */
	if (cli)
		kg_conn_flush_tls(c);
	return !cli || c->cout.len == 0;
}

static void linger_on_cqe(struct kg_conn *c, enum kg_op op, int res)
{
	switch (op) {
	case KG_OP_CLI_SEND:
		if (kg_conn_send_progress(c, op, res))
			kg_conn_shutdown_wr(c, c->cfd, KG_OP_CLI_SHUT);
		return;
	case KG_OP_CLI_SHUT:
		kg_conn_recv(c, c->cfd, KG_OP_CLI_RECV, &c->cin);
		return;
	case KG_OP_CLI_RECV:
		c->cli_recv_busy = false;
		/* Read and drop until FIN: closing with unread bytes would send an
		 * RST that can destroy the alert before the client reads it. */
		if (res > 0)
			kg_conn_recv(c, c->cfd, KG_OP_CLI_RECV, &c->cin);
		else
			kg_conn_close(c, NULL);
		return;
	default:
		return;
	}
}

void kg_conn_linger(struct kg_conn *c)
{
	c->state = KG_CS_LINGER;
	kg_conn_touch(c, 2000);
	kg_conn_flush_tls(c);
	if (!c->cli_send_busy)
		kg_conn_shutdown_wr(c, c->cfd, KG_OP_CLI_SHUT);
}

/* The client went away mid-handshake, seen by a recv (0: FIN) or a send. */
static void client_gone_in_handshake(struct kg_conn *c, int res)
{
	c->result = "client_closed";
	kg_peer_set(c, KG_PEER_DETAIL,
		    res == 0 ? "client closed the connection during the handshake" : strerror(-res));
}

static void handshake_on_cqe(struct kg_conn *c, enum kg_op op, int res)
{
	if (op == KG_OP_CLI_SEND) {
		/* A reset that hits our flight first must not be logged result=error. */
		if (res < 0)
			client_gone_in_handshake(c, res);
		kg_conn_send_progress(c, op, res);
		return;
	}
	if (op != KG_OP_CLI_RECV)
		return;
	c->cli_recv_busy = false;
	if (res <= 0) {
		client_gone_in_handshake(c, res);
		kg_conn_close(c, res == 0 ? "client_eof" : "client_reset");
		return;
	}
	kg_ktls_track_rx(c, c->cin.data, (size_t)res);
	BIO_write(c->rbio, c->cin.data, res);
	kg_hs_on_client_bytes(c);
}

static void connecting_on_cqe(struct kg_conn *c, enum kg_op op, int res)
{
	if (c->up_retrying && (op == KG_OP_BE_SEND || op == KG_OP_BE_RECV))
		kg_backend_on_stale_op(c, op);
	else if (op == KG_OP_BE_CONNECT)
		kg_backend_on_connect(c, res);
	else if (op == KG_OP_BE_SEND && c->pp2_pending)
		kg_backend_on_header_sent(c, res);
	else if (op == KG_OP_CLI_SEND)
		kg_conn_send_progress(c, op, res);
}

static struct kg_buf *recv_buf(struct kg_conn *c, enum kg_op op)
{
	if (op == KG_OP_CLI_RECV)
		return &c->cin;
	return op == KG_OP_BE_RECV ? &c->bin : NULL;
}

/* After a receive's completion was handled: a ring buffer goes back at once
 * (its bytes were consumed, or are copied out when a side could not take
 * them yet), an owned one too unless a new receive uses it. */
static void settle_recv_buf(struct kg_conn *c, enum kg_op op, struct kg_buf *b)
{
	bool busy = op == KG_OP_CLI_RECV ? c->cli_recv_busy : c->be_recv_busy;

	if (busy || !b->data)
		return;
	if (b->len == 0)
		kg_buf_release(b);
	else if (!kg_buf_keep(b))
		kg_conn_close(c, "out_of_memory");
}

/* The ring ran out of buffers: the same receive, into an owned buffer. */
static void recv_without_ring(struct kg_conn *c, enum kg_op op, struct kg_buf *b)
{
	if (op == KG_OP_CLI_RECV)
		c->cli_recv_busy = false;
	else
		c->be_recv_busy = false;
	c->w->stats.recv_nobufs++;
	post_recv(c, op == KG_OP_CLI_RECV ? c->cfd : c->bfd, op, b, false);
}

static void dispatch_state(struct kg_conn *c, enum kg_op op, int res)
{
	switch (c->state) {
	case KG_CS_HANDSHAKE:
		handshake_on_cqe(c, op, res);
		break;
	case KG_CS_CONNECTING:
		connecting_on_cqe(c, op, res);
		break;
	case KG_CS_UPSTREAM:
		kg_up_on_cqe(c, op, res);
		break;
	case KG_CS_RELAY:
		c->relay->on_cqe(c, op, res);
		break;
	case KG_CS_LINGER:
		linger_on_cqe(c, op, res);
		break;
	case KG_CS_CLOSING:
		break;
	}
}

void kg_conn_on_cqe(struct kg_conn *c, enum kg_op op, int res, unsigned flags)
{
	struct kg_buf *rb = recv_buf(c, op);

	c->inflight--;
	if (rb && (flags & IORING_CQE_F_BUFFER))
		kg_buf_from_ring(rb, flags >> IORING_CQE_BUFFER_SHIFT);
	if (c->state == KG_CS_CLOSING) {
		if (rb)
			kg_buf_release(rb);
		if (c->inflight == 0)
			conn_free(c);
		return;
	}
	if (op == KG_OP_BE_TIMEOUT || op == KG_OP_CANCEL)
		return;
	if (rb && res == -ENOBUFS) {
		recv_without_ring(c, op, rb);
		return;
	}
	dispatch_state(c, op, res);
	if (c->state == KG_CS_CLOSING)
		return; /* kg_conn_close left an operation in flight: freed when it completes */
	if (rb)
		settle_recv_buf(c, op, rb);
}

void kg_conn_on_deadline(struct kg_conn *c)
{
	struct kg_worker_stats *st = &c->w->stats;

	switch (c->state) {
	case KG_CS_HANDSHAKE:
		st->handshake_timeouts++;
		kg_peer_setf(c, KG_PEER_DETAIL, "no complete handshake within %u ms",
			     c->gen->cfg.handshake_timeout_ms);
		kg_hs_refuse(c, "handshake_timeout");
		return;
	case KG_CS_UPSTREAM:
		kg_peer_setf(c, KG_PEER_DETAIL, "no TLS handshake with the backend within %u ms",
			     c->gen->cfg.handshake_timeout_ms);
		kg_up_refuse(c, "upstream_handshake_timeout");
		return;
	case KG_CS_RELAY:
	case KG_CS_CONNECTING:
		st->idle_timeouts++;
		kg_conn_close(c, "idle_timeout");
		return;
	case KG_CS_LINGER:
		kg_conn_close(c, NULL);
		return;
	case KG_CS_CLOSING:
		return;
	}
}

uint64_t kg_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static const char *state_name(enum kg_conn_state s)
{
	switch (s) {
	case KG_CS_HANDSHAKE:
		return "handshake";
	case KG_CS_CONNECTING:
		return "connecting";
	case KG_CS_UPSTREAM:
		return "upstream_handshake";
	case KG_CS_RELAY:
		return "relay";
	case KG_CS_LINGER:
		return "linger";
	case KG_CS_CLOSING:
		break;
	}
	return "closing";
}

#define KG_MAX_VIEWS 10000 /* per worker and request: show conns is for people */

static void describe(const struct kg_conn *c, struct kg_conn_view *v, uint64_t now)
{
	socklen_t len = sizeof(v->local);

	memset(v, 0, sizeof(*v));
	v->id = c->id;
	v->worker = c->w->id;
	snprintf(v->client, sizeof(v->client), "%s", kg_peer_get(c, KG_PEER_CLIENT));
	snprintf(v->sni, sizeof(v->sni), "%s", kg_peer_get(c, KG_PEER_SNI));
	snprintf(v->subject, sizeof(v->subject), "%s", kg_peer_get(c, KG_PEER_SUBJECT));
	snprintf(v->serial, sizeof(v->serial), "%s", kg_peer_get(c, KG_PEER_SERIAL));
	snprintf(v->spiffe, sizeof(v->spiffe), "%s", kg_peer_get(c, KG_PEER_SPIFFE));
	snprintf(v->backend, sizeof(v->backend), "%s", kg_peer_get(c, KG_PEER_BACKEND));
	v->state = state_name(c->state);
	v->path = c->relay ? c->relay->name : NULL;
	v->version = c->peer.version;
	v->up_version = c->peer.up_version;
	v->cipher = c->peer.cipher;
	v->bytes_in = c->bytes_in;
	v->bytes_out = c->bytes_out;
	v->age_ms = now - c->start_ms;
	v->ktls = c->relay == &kg_relay_ktls;
	getsockname(c->cfd, (struct sockaddr *)&v->local, &len);
	len = sizeof(v->peer);
	getpeername(c->cfd, (struct sockaddr *)&v->peer, &len);
}

void kg_conn_describe_all(struct kg_worker *w, struct kg_wmsg *m)
{
	uint64_t now = kg_now_ms();
	size_t n = 0;

	for (const struct kg_conn *c = w->conns; c && n < KG_MAX_VIEWS; c = c->next)
		n++;
	m->views = calloc(n ? n : 1, sizeof(*m->views));
	if (!m->views)
		return;
	m->cap = n;
	for (const struct kg_conn *c = w->conns; c && m->nviews < n; c = c->next)
		if (c->state != KG_CS_CLOSING)
			describe(c, &m->views[m->nviews++], now);
}

static bool revoked(const struct kg_conn *c, const struct kg_kill_filter *f, const char *serial)
{
	struct kg_revoked key = { .issuer = kg_peer_get(c, KG_PEER_ISSUER), .serial = serial };

	return bsearch(&key, f->revoked, f->nrevoked, sizeof(key), kg_revoked_cmp) != NULL;
}

static bool kill_matches(const struct kg_conn *c, const struct kg_kill_filter *f)
{
	char serial[80];

	kg_serial_normalise(kg_peer_get(c, KG_PEER_SERIAL), serial, sizeof(serial));
	if (f->id && c->id != f->id)
		return false;
	if (f->serial && (!serial[0] || strcmp(serial, f->serial) != 0))
		return false;
	if (f->subject && strcmp(kg_peer_get(c, KG_PEER_SUBJECT), f->subject) != 0)
		return false;
	if (f->spiffe && strcmp(kg_peer_get(c, KG_PEER_SPIFFE), f->spiffe) != 0)
		return false;
	if (f->revoked && (!serial[0] || !revoked(c, f, serial)))
		return false;
	if (f->nids) {
		bool listed = false;
		for (size_t i = 0; i < f->nids && !listed; i++)
			listed = f->ids[i] == c->id;
		return listed;
	}
	return true;
}

/* Cut, not close: SO_LINGER 0 makes the close a reset, so nothing queued
 * (by us or, on the kTLS path, by the kernel) reaches a revoked client. */
/* A kTLS match the control thread will reset through the kernel first. */
static void spare(const struct kg_conn *c, struct kg_wmsg *m)
{
	if (m->nviews == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 16;
		struct kg_conn_view *v = realloc(m->views, cap * sizeof(*v));
		if (!v)
			return;
		m->views = v;
		m->cap = cap;
	}
	describe(c, &m->views[m->nviews++], kg_now_ms());
}

unsigned kg_conn_kill_matching(struct kg_worker *w, const struct kg_kill_filter *f,
			       struct kg_wmsg *m)
{
	struct linger cut = { .l_onoff = 1, .l_linger = 0 };
	struct kg_conn *c, *next;
	unsigned n = 0;

	for (c = w->conns; c; c = next) {
		next = c->next; /* c may be freed by the close */
		if (c->state == KG_CS_CLOSING || !kill_matches(c, f))
			continue;
		if (f->spare_ktls && c->relay == &kg_relay_ktls) {
			spare(c, m);
			continue;
		}
		setsockopt(c->cfd, SOL_SOCKET, SO_LINGER, &cut, sizeof(cut));
		if (!c->result)
			c->result = "killed";
		kg_conn_close(c, "killed");
		n++;
	}
	return n;
}

void kg_relay_finish(struct kg_conn *c)
{
	if (c->cli_eof && c->be_eof && c->cli_shut_done && c->be_shut_done)
		kg_conn_close(c, NULL);
}

void kg_relay_on_shut(struct kg_conn *c, enum kg_op op)
{
	if (op == KG_OP_CLI_SHUT)
		c->cli_shut_done = true;
	else
		c->be_shut_done = true;
	kg_relay_finish(c);
}

void kg_conn_set_end(struct kg_conn *c, const char *end)
{
	if (!c->end)
		c->end = end;
}

bool kg_conn_key_update_flood(struct kg_conn *c)
{
	uint64_t now = kg_now_ms();

	if (now - c->key_update_window_ms >= 1000) {
		c->key_update_window_ms = now;
		c->key_updates = 0;
	}
	if (++c->key_updates <= KG_MAX_KEY_UPDATES_PER_S)
		return false;
	kg_peer_setf(c, KG_PEER_DETAIL, "more than %d TLS KeyUpdates in one second",
		     KG_MAX_KEY_UPDATES_PER_S);
	kg_conn_close(c, "key_update_flood");
	return true;
}

void kg_relay_dispatch(struct kg_conn *c, enum kg_op op, int res,
		       const struct kg_relay_handlers *h)
{
	switch (op) {
	case KG_OP_CLI_RECV:
		h->client_recv(c, res);
		return;
	case KG_OP_BE_RECV:
		h->backend_recv(c, res);
		return;
	case KG_OP_CLI_SEND:
		if (kg_conn_send_progress(c, op, res))
			h->client_drained(c);
		return;
	case KG_OP_BE_SEND:
		if (kg_conn_send_progress(c, op, res))
			h->backend_drained(c);
		return;
	case KG_OP_CLI_SHUT:
		c->cli_shut_done = true;
		h->finish(c);
		return;
	case KG_OP_BE_SHUT:
		c->be_shut_done = true;
		h->finish(c);
		return;
	default:
		return;
	}
}
