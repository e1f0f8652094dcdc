/* ktlsgate-bench connection state machine and per-thread epoll loop.
 *
 * An operation is: TCP connect, TLS handshake, one or more request/response exchanges
 * through the backend, close. It is counted ok only once the last response byte arrived
 * and matched the pattern: with TLS 1.3 the client finishes its handshake before the
 * server has looked at the client certificate, so a completed SSL_connect proves nothing. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

enum cstate { C_FREE, C_CONNECT, C_HANDSHAKE, C_XFER, C_HOLD };

struct bench_conn {
	struct bench_thread *t;
	int fd, idx;
	enum cstate st;
	uint32_t events;
	SSL *ssl;
	SSL_SESSION *sess; /* resume mode: newest ticket for this slot */
	double t_start;
	uint8_t hdr[BP_HDR_LEN];
	size_t hdr_done;
	uint64_t tx_total, tx_done, rx_total, rx_done;
	int reqs_left;
	int alert; /* fatal alert received from the server, or -1 */
};

static int conn_ex_index = -1;

int bench_conn_index(void)
{
	if (conn_ex_index < 0)
		conn_ex_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	return conn_ex_index;
}

double bench_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

const char *bench_err_name(int kind)
{
	static const char *const names[E_MAX] = { "connect", "tls", "eof", "reset", "checksum",
		"timeout", "closed_while_idle" };
	return names[kind];
}

static bool measuring(void)
{
	return atomic_load_explicit(&bench_phase, memory_order_relaxed) == PH_MEASURE;
}

static void conn_want(struct bench_conn *c, uint32_t ev)
{
	struct epoll_event e = { .events = ev, .data.ptr = c };

	if (ev == c->events)
		return;
	epoll_ctl(c->t->epfd, c->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &e);
	c->events = ev;
}

/* Releases the slot; a clean end sends close_notify like a well-behaved client. */
static void conn_release(struct bench_conn *c, bool clean)
{
	if (c->ssl) {
		if (clean)
			SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->events = 0;
	c->st = C_FREE;
	c->t->inflight--;
	c->t->free_slots[c->t->nfree++] = c->idx;
}

static void conn_fail(struct bench_conn *c, int kind)
{
	struct bench_stats *st = &c->t->st;

	ERR_clear_error();
	if (c->st == C_HOLD) {
		c->t->held--;
		atomic_fetch_sub(&bench_held, 1);
	}
	if (measuring()) {
		if (c->alert >= 0) {
			st->refused++;
			st->alerts[c->alert]++;
		} else {
			st->errors++;
			st->err_kinds[kind]++;
		}
		atomic_fetch_add(&bench_completed, 1);
	}
	conn_release(c, false);
}

/* Sets up the next exchange of this connection according to the mode. */
static void conn_next_request(struct bench_conn *c)
{
	const struct bench_opts *o = c->t->o;
	char op = BP_OP_QUERY;
	uint64_t a = 0, b = 1;

	if (o->mode == M_REQUEST) {
		a = o->req_size;
		b = o->resp_size;
	} else if (o->mode == M_BULK) {
		op = o->dir == BULK_BOTH ? BP_OP_DUPLEX : BP_OP_QUERY;
		a = o->dir == BULK_DOWN ? 0 : o->bulk_size;
		b = o->dir == BULK_DOWN ? o->bulk_size : 1;
	}
	bp_header(c->hdr, op, a, b);
	c->hdr_done = 0;
	c->tx_total = a;
	c->rx_total = op == BP_OP_DUPLEX ? a : b;
	c->tx_done = c->rx_done = 0;
}

static int conn_ssl_new(struct bench_conn *c)
{
	const struct bench_opts *o = c->t->o;

	if (!(c->ssl = SSL_new(c->t->ctx)) || !SSL_set_fd(c->ssl, c->fd))
		return -1;
	SSL_set_ex_data(c->ssl, bench_conn_index(), c);
	if (o->sni && !SSL_set_tlsext_host_name(c->ssl, o->sni))
		return -1;
	if (o->mode == M_RESUME && c->sess)
		SSL_set_session(c->ssl, c->sess);
	SSL_set_connect_state(c->ssl);
	return 0;
}

static void conn_start(struct bench_thread *t, struct bench_conn *c, double sched)
{
	int one = 1;

	c->t_start = sched;
	c->alert = -1;
	c->reqs_left = t->o->per_conn;
	c->events = 0;
	t->inflight++;
	c->fd = socket(t->o->addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		goto fail;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(c->fd, (struct sockaddr *)t->o->addr, t->o->addrlen) < 0 &&
	    errno != EINPROGRESS)
		goto fail;
	c->st = C_CONNECT;
	conn_want(c, EPOLLOUT);
	return;
fail:
	c->st = C_CONNECT;
	conn_fail(c, E_CONNECT);
}

static void conn_handshake_done(struct bench_conn *c)
{
	if (measuring()) {
		if (SSL_session_reused(c->ssl))
			c->t->st.resumed++;
		else
			c->t->st.full++;
	}
	conn_next_request(c);
	c->st = C_XFER;
}

/* Maps an OpenSSL failure to an error kind; a fatal alert makes it a refusal anyway. */
static int conn_ssl_error(struct bench_conn *c, int ret)
{
	int e = SSL_get_error(c->ssl, ret);

	if (e == SSL_ERROR_WANT_READ)
		return EPOLLIN;
	if (e == SSL_ERROR_WANT_WRITE)
		return EPOLLOUT;
	if (e == SSL_ERROR_ZERO_RETURN)
		return -E_EOF;
	if (e == SSL_ERROR_SYSCALL)
		return errno == ECONNRESET || errno == EPIPE ? -E_RESET : -E_EOF;
	return -E_TLS;
}

/* Writes header then payload; returns 0 when all is written, else want/-error. */
static int conn_write(struct bench_conn *c)
{
	while (c->hdr_done < BP_HDR_LEN || c->tx_done < c->tx_total) {
		const void *p;
		size_t len;

		if (c->hdr_done < BP_HDR_LEN) {
			p = c->hdr + c->hdr_done;
			len = BP_HDR_LEN - c->hdr_done;
		} else {
			p = bp_pattern_at(c->tx_done);
			len = c->tx_total - c->tx_done < BP_CHUNK ?
				(size_t)(c->tx_total - c->tx_done) : BP_CHUNK;
		}
		int n = SSL_write(c->ssl, p, (int)len);
		if (n <= 0)
			return conn_ssl_error(c, n);
		if (c->hdr_done < BP_HDR_LEN)
			c->hdr_done += (size_t)n;
		else
			c->tx_done += (uint64_t)n;
	}
	return 0;
}

/* Reads and verifies the response; returns 0 when complete, else want/-error. */
static int conn_read(struct bench_conn *c)
{
	uint8_t buf[BP_CHUNK];

	while (c->rx_done < c->rx_total) {
		uint64_t left = c->rx_total - c->rx_done;
		int n = SSL_read(c->ssl, buf, left < sizeof(buf) ? (int)left : (int)sizeof(buf));

		if (n <= 0)
			return conn_ssl_error(c, n);
		if (memcmp(buf, bp_pattern_at(c->rx_done), (size_t)n) != 0)
			return -E_CHECKSUM;
		c->rx_done += (uint64_t)n;
	}
	return 0;
}

static void conn_op_done(struct bench_conn *c)
{
	struct bench_stats *st = &c->t->st;
	double now = bench_now();

	if (measuring()) {
		st->ok++;
		st->bytes_tx += c->tx_total;
		st->bytes_rx += c->rx_total;
		stats_add_latency(st, (now - c->t_start) * 1e6);
		atomic_fetch_add(&bench_completed, 1);
	}
	c->t_start = now;
}

/* Drives a connection in C_XFER; returns an epoll mask to wait for, 0 when the
 * connection is finished, or a negative error kind. */
static int conn_xfer(struct bench_conn *c)
{
	for (;;) {
		int w = conn_write(c);
		int r = w < 0 ? 0 : conn_read(c);

		if (w < 0 || r < 0) {
			/* A refused TLS 1.3 client may see its write fail on the RST that follows
			 * the alert; read once more so that the alert is what gets recorded. */
			if (c->alert < 0 && w < 0 && w != -E_CHECKSUM)
				conn_read(c);
			return w < 0 ? w : r;
		}
		if (w > 0 || r > 0)
			return w | r;
		conn_op_done(c);
		if (--c->reqs_left > 0 && c->t->o->mode != M_IDLE) {
			conn_next_request(c);
			continue;
		}
		return 0;
	}
}

static void conn_finish(struct bench_conn *c)
{
	if (c->t->o->mode == M_IDLE) {
		c->st = C_HOLD;
		c->t->held++;
		atomic_fetch_add(&bench_held, 1);
		conn_want(c, EPOLLIN);
		return;
	}
	conn_release(c, true);
}

/* Advances a connection after an epoll event (or right after it was started). */
static void conn_step(struct bench_conn *c)
{
	int r;

	if (c->st == C_CONNECT) {
		int err = 0;
		socklen_t len = sizeof(err);

		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
		if (err || conn_ssl_new(c) < 0)
			return conn_fail(c, err ? E_CONNECT : E_TLS);
		c->st = C_HANDSHAKE;
	}
	if (c->st == C_HANDSHAKE) {
		int ret = SSL_connect(c->ssl);

		if (ret != 1) {
			r = conn_ssl_error(c, ret);
			return r > 0 ? conn_want(c, (uint32_t)r) : conn_fail(c, -r);
		}
		conn_handshake_done(c);
	}
	if (c->st == C_HOLD)
		return conn_fail(c, E_CLOSED_IDLE);
	r = conn_xfer(c);
	if (r > 0)
		conn_want(c, (uint32_t)r);
	else if (r < 0)
		conn_fail(c, -r);
	else
		conn_finish(c);
}

/* Records fatal alerts from the server: they, not a closed socket, mean "refused". */
static void info_cb(const SSL *ssl, int where, int ret)
{
	struct bench_conn *c = SSL_get_ex_data(ssl, bench_conn_index());

	if (c && (where & SSL_CB_READ_ALERT) && (ret >> 8) == SSL3_AL_FATAL)
		c->alert = ret & 0xff;
}

/* Keeps the newest ticket per slot so that resume mode always has a fresh one. */
static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
	struct bench_conn *c = SSL_get_ex_data(ssl, bench_conn_index());

	if (!c || c->t->o->mode != M_RESUME)
		return 0;
	SSL_SESSION_free(c->sess);
	c->sess = sess;
	return 1;
}

void bench_ctx_callbacks(SSL_CTX *ctx)
{
	SSL_CTX_set_info_callback(ctx, info_cb);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
				       SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
}

/* Starts free slots: at once in closed loop, on schedule with --rate, and at most a
 * few handshakes at a time in idle mode so that 10,000 connections don't overflow the
 * server's accept queue. */
static int thread_start_due(struct bench_thread *t)
{
	double now = bench_now();
	int timeout_ms = 100;

	while (t->nfree > 0 && atomic_load(&bench_phase) != PH_STOP) {
		struct bench_conn *c = &t->conns[t->free_slots[t->nfree - 1]];
		double sched = now;

		if (t->o->mode == M_IDLE && t->inflight - t->held >= 64)
			break;
		if (t->rate > 0) {
			if (t->next_sched > now) {
				timeout_ms = (int)((t->next_sched - now) * 1000) + 1;
				break;
			}
			sched = t->next_sched;
			t->next_sched += 1.0 / t->rate;
		}
		t->nfree--;
		conn_start(t, c, sched);
		if (c->st == C_FREE) {
			/* Failed at once (EMFILE, no ports): back off instead of spinning. */
			timeout_ms = 10;
			break;
		}
	}
	return timeout_ms < 100 ? timeout_ms : 100;
}

static void thread_scan_timeouts(struct bench_thread *t)
{
	double now = bench_now();

	if (now - t->last_scan < 0.1)
		return;
	t->last_scan = now;
	for (int i = 0; i < t->nconns; i++) {
		struct bench_conn *c = &t->conns[i];

		if (c->st != C_FREE && c->st != C_HOLD && now - c->t_start > t->o->timeout)
			conn_fail(c, E_TIMEOUT);
	}
}

static void thread_close_all(struct bench_thread *t)
{
	for (int i = 0; i < t->nconns; i++) {
		struct bench_conn *c = &t->conns[i];

		if (c->ssl)
			SSL_free(c->ssl);
		if (c->fd >= 0)
			close(c->fd);
		SSL_SESSION_free(c->sess);
	}
	free(t->conns);
	free(t->free_slots);
}

static int thread_init(struct bench_thread *t)
{
	t->conns = calloc((size_t)t->nconns, sizeof(*t->conns));
	t->free_slots = calloc((size_t)t->nconns, sizeof(int));
	t->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (!t->conns || !t->free_slots || t->epfd < 0)
		return -1;
	for (int i = 0; i < t->nconns; i++) {
		t->conns[i] = (struct bench_conn){ .t = t, .fd = -1, .idx = i, .st = C_FREE };
		t->free_slots[t->nfree++] = t->nconns - 1 - i;
	}
	t->next_sched = bench_now();
	return 0;
}

void *bench_thread_main(void *arg)
{
	struct bench_thread *t = arg;
	struct epoll_event evs[256];

	if (thread_init(t) < 0) {
		fprintf(stderr, "ktlsgate-bench: thread %d: out of memory\n", t->id);
		exit(1);
	}
	t->inflight = 0;
	while (atomic_load(&bench_phase) != PH_STOP) {
		int timeout = thread_start_due(t);
		int n = epoll_wait(t->epfd, evs, 256, timeout);

		for (int i = 0; i < n; i++)
			conn_step(evs[i].data.ptr);
		thread_scan_timeouts(t);
	}
	thread_close_all(t);
	close(t->epfd);
	return NULL;
}
