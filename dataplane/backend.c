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

static void backend_give_up(struct kg_conn *c)
{
	c->w->stats.backend_failures++;
	c->result = "backend_unavailable";
	/* Tell the client cleanly: close_notify, then FIN. */
	ERR_clear_error();
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

static void try_backend(struct kg_conn *c)
{
	const struct kg_options *o = c->w->rt->opt;
	const struct kg_addr *a = &o->backends[(c->backend_idx + c->backend_tries) % o->nbackends];
	struct io_uring_sqe *sqe;

	kg_peer_set(c, KG_PEER_BACKEND, a->text);
	c->bfd = open_backend_socket(a);
	if (c->bfd < 0) {
		kg_backend_on_connect(c, -errno);
		return;
	}
	c->connect_ts.tv_sec = o->connect_timeout_ms / 1000;
	c->connect_ts.tv_nsec = (long long)(o->connect_timeout_ms % 1000) * 1000000;
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

void kg_backend_connect(struct kg_conn *c)
{
	const struct kg_options *o = c->w->rt->opt;

	c->backend_idx = c->w->backend_rr++ % o->nbackends;
	c->backend_tries = 0;
	try_backend(c);
}

void kg_backend_on_connect(struct kg_conn *c, int res)
{
	const struct kg_options *o = c->w->rt->opt;
	struct io_uring_sqe *sqe;

	if (res == 0) {
		if (kg_ktls_wanted(c)) {
			c->relay = &kg_relay_ktls;
		} else {
			c->relay = &kg_relay_user;
			if (c->kt)
				kg_ktls_conn_free(c); /* cipher the kernel lacks */
		}
		c->state = KG_CS_RELAY;
		c->relay->start(c);
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
	kg_peer_setf(c, KG_PEER_DETAIL, "%s: %s", kg_peer_get(c, KG_PEER_BACKEND),
		     strerror(-res));
	if (c->bfd >= 0) {
		sqe = kg_get_sqe(&c->w->ring);
		io_uring_prep_close(sqe, c->bfd);
		io_uring_sqe_set_data64(sqe, kg_ud(NULL, KG_OP_IGNORE));
		c->bfd = -1;
	}
	if (++c->backend_tries < o->nbackends) {
		try_backend(c);
		return;
	}
	kg_peer_set(c, KG_PEER_BACKEND, "");
	backend_give_up(c);
}
