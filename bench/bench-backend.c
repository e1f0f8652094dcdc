/* bench-backend: the plain-TCP server behind the proxy under test. It speaks the tiny
 * protocol of bench-proto.h, so that benchmarks measure the proxy and not a Python or
 * HTTP server, and so that every byte relayed can be checked at both ends. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench-proto.h"

enum bk_state { BK_HEADER, BK_RECV, BK_SEND, BK_ECHO };

struct bk_conn {
	int fd;
	enum bk_state st;
	uint8_t hdr[BP_HDR_LEN];
	size_t hdr_got;
	uint64_t a, b, done;
	/* Duplex echo: bytes read but not yet written back. */
	uint8_t *buf;
	size_t buf_len, buf_off;
	uint32_t events;
};

static struct {
	struct sockaddr_in addr;
	int threads;
	bool corrupt;
	int lfd[64];
} g = { .threads = 1 };

static void bk_close(int ep, struct bk_conn *c, bool reset)
{
	if (reset) {
		/* A corrupt upload is answered with RST so the client can't mistake it for a
		 * clean end of stream. */
		struct linger l = { 1, 0 };

		setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	}
	epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	free(c->buf);
	free(c);
}

static void bk_want(int ep, struct bk_conn *c, uint32_t ev)
{
	struct epoll_event e = { .events = ev, .data.ptr = c };

	if (ev != c->events && epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e) == 0)
		c->events = ev;
}

/* Header complete: set up the exchange it announces. */
static int bk_start(struct bk_conn *c)
{
	c->a = bp_get64(c->hdr + 1);
	c->b = bp_get64(c->hdr + 9);
	c->done = 0;
	c->hdr_got = 0;
	if (c->hdr[0] == BP_OP_QUERY) {
		c->st = c->a ? BK_RECV : BK_SEND;
		return 0;
	}
	if (c->hdr[0] == BP_OP_DUPLEX) {
		if (!c->buf && !(c->buf = malloc(BP_CHUNK)))
			return -1;
		c->st = BK_ECHO;
		c->buf_len = c->buf_off = 0;
		return 0;
	}
	return -1;
}

/* Returns 1 if more input is needed, 0 when the state changed, -1 on error/EOF. */
static int bk_read(struct bk_conn *c)
{
	uint8_t tmp[BP_CHUNK];
	size_t want = sizeof(tmp);

	if (c->st == BK_HEADER)
		want = BP_HDR_LEN - c->hdr_got;
	else if (c->a - c->done < want)
		want = c->a - c->done;
	ssize_t n = recv(c->fd, c->st == BK_HEADER ? c->hdr + c->hdr_got : tmp, want, 0);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 1;
	if (n <= 0)
		return -1;
	if (c->st == BK_HEADER) {
		c->hdr_got += (size_t)n;
		return c->hdr_got < BP_HDR_LEN ? 1 : bk_start(c);
	}
	if (memcmp(tmp, bp_pattern_at(c->done), (size_t)n) != 0)
		return -2;
	c->done += (uint64_t)n;
	if (c->done < c->a)
		return 1;
	c->done = 0;
	c->st = BK_SEND;
	return 0;
}

/* Sends pattern bytes; returns 1 when blocked, 0 when finished, -1 on error. */
static int bk_send(struct bk_conn *c)
{
	while (c->done < c->b) {
		size_t len = c->b - c->done < BP_CHUNK ? (size_t)(c->b - c->done) : BP_CHUNK;
		const uint8_t *p = bp_pattern_at(c->done);
		uint8_t bad[1];

		if (g.corrupt && c->done == 0) {
			/* Test hook: a backend that damages data must show up as client errors. */
			bad[0] = (uint8_t)~p[0];
			p = bad;
			len = 1;
		}
		ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return 1;
		if (n < 0)
			return -1;
		c->done += (uint64_t)n;
	}
	c->st = BK_HEADER;
	return 0;
}

/* Echo: read when the buffer is empty, write it back before reading more. */
static int bk_echo(struct bk_conn *c)
{
	for (;;) {
		if (c->buf_off < c->buf_len) {
			ssize_t n = send(c->fd, c->buf + c->buf_off, c->buf_len - c->buf_off,
					 MSG_NOSIGNAL);
			if (n < 0 && (errno == EAGAIN || errno == EINTR))
				return 1;
			if (n < 0)
				return -1;
			c->buf_off += (size_t)n;
			continue;
		}
		if (c->done == c->a) {
			c->st = BK_HEADER;
			return 0;
		}
		size_t want = c->a - c->done < BP_CHUNK ? (size_t)(c->a - c->done) : BP_CHUNK;
		ssize_t n = recv(c->fd, c->buf, want, 0);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return 2;
		if (n <= 0)
			return -1;
		if (g.corrupt && c->done == 0)
			c->buf[0] ^= 0xff;
		c->done += (uint64_t)n;
		c->buf_len = (size_t)n;
		c->buf_off = 0;
	}
}

/* Runs the connection until it blocks; returns <0 to close it (-2: reset). */
static int bk_step(int ep, struct bk_conn *c)
{
	for (;;) {
		int r;

		if (c->st == BK_SEND)
			r = bk_send(c);
		else if (c->st == BK_ECHO)
			r = bk_echo(c);
		else
			r = bk_read(c);
		if (r < 0)
			return r;
		if (r == 0)
			continue;
		bool out = (c->st == BK_SEND) || (c->st == BK_ECHO && r == 1);
		bk_want(ep, c, out ? EPOLLOUT : EPOLLIN);
		return 0;
	}
}

static void bk_accept(int ep, int lfd)
{
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		struct bk_conn *c = calloc(1, sizeof(*c));
		int one = 1;
		struct epoll_event e = { .events = EPOLLIN };

		if (!c) {
			close(fd);
			continue;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c->fd = fd;
		c->events = EPOLLIN;
		e.data.ptr = c;
		if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0)
			bk_close(ep, c, false);
	}
}

static void *bk_thread(void *arg)
{
	int lfd = (int)(intptr_t)arg;
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event e = { .events = EPOLLIN, .data.ptr = NULL }, evs[256];

	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &e) < 0) {
		perror("bench-backend: epoll");
		exit(1);
	}
	for (;;) {
		int n = epoll_wait(ep, evs, 256, -1);

		for (int i = 0; i < n; i++) {
			struct bk_conn *c = evs[i].data.ptr;
			int r;

			if (!c) {
				bk_accept(ep, lfd);
				continue;
			}
			if ((r = bk_step(ep, c)) < 0)
				bk_close(ep, c, r == -2);
		}
	}
	return NULL;
}

static int bk_listen(int reuse_port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;

	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (reuse_port)
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&g.addr, sizeof(g.addr)) < 0 || listen(fd, 4096) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static void usage(void)
{
	fprintf(stderr, "usage: bench-backend [--listen 127.0.0.1:PORT] [--threads N] [--corrupt]\n"
		"  PORT 0 picks a free port; the bound address is printed as 'listening HOST:PORT'.\n"
		"  --corrupt flips the first byte of every response (tests checksum accounting).\n");
	exit(2);
}

static void parse_listen(const char *s)
{
	char host[64];
	const char *colon = strrchr(s, ':');

	if (!colon || (size_t)(colon - s) >= sizeof(host))
		usage();
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = 0;
	g.addr.sin_family = AF_INET;
	g.addr.sin_port = htons((uint16_t)atoi(colon + 1));
	if (inet_pton(AF_INET, host, &g.addr.sin_addr) != 1)
		usage();
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "listen", 1, 0, 'l' }, { "threads", 1, 0, 't' },
		{ "corrupt", 0, 0, 'c' }, { "help", 0, 0, 'h' }, { 0, 0, 0, 0 } };
	pthread_t tid;
	int ch;

	parse_listen("127.0.0.1:0");
	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		if (ch == 'l')
			parse_listen(optarg);
		else if (ch == 't')
			g.threads = atoi(optarg);
		else if (ch == 'c')
			g.corrupt = true;
		else
			usage();
	}
	if (g.threads < 1 || g.threads > 64)
		usage();
	signal(SIGPIPE, SIG_IGN);
	bp_pattern();
	for (int i = 0; i < g.threads; i++) {
		socklen_t len = sizeof(g.addr);

		if ((g.lfd[i] = bk_listen(g.threads > 1)) < 0) {
			perror("bench-backend: listen");
			return 1;
		}
		/* With port 0 the first bind picks the port; the others join it. */
		getsockname(g.lfd[i], (struct sockaddr *)&g.addr, &len);
	}
	printf("listening 127.0.0.1:%u\n", ntohs(g.addr.sin_port));
	fflush(stdout);
	for (int i = 1; i < g.threads; i++)
		pthread_create(&tid, NULL, bk_thread, (void *)(intptr_t)g.lfd[i]);
	bk_thread((void *)(intptr_t)g.lfd[0]);
	return 0;
}
