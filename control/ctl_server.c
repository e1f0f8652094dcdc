/* Control socket server: accepts clients, frames lines, checks who is
 * asking (SO_PEERCRED), hands each request to kg_ctl_dispatch. Several
 * clients at once through poll(); a slow or silent client cannot block the
 * others (replies are written with a send timeout). */
#include "ctl_server.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

#define KG_CTL_MAX_CLIENTS 32
#define KG_CTL_IDLE_MS 60000 /* a client that says nothing for this long is dropped */
#define KG_CTL_DENIED_MS 2000 /* a refused peer gets this long to send its line */

struct ctl_client {
	int fd;
	char *buf;
	size_t len, cap;
	uint64_t last_ms;
	char *denied; /* why this peer may not talk: answered to its first line */
};

struct kg_ctl {
	struct kg_daemon *d;
	int lfd;
	int stop_pipe[2];
	int gid;
	char path[108];
	pthread_t thread;
	struct ctl_client clients[KG_CTL_MAX_CLIENTS];
};

/* Another ktlsgate still answering on path must not lose its socket. */
static bool socket_alive(const struct sockaddr_un *sa)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool alive = fd >= 0 && connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0;

	if (fd >= 0)
		close(fd);
	return alive;
}

static int bind_socket(struct kg_ctl *ctl, char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	if (strlen(ctl->path) >= sizeof(sa.sun_path))
		return snprintf(err, errlen, "control socket %s: path too long", ctl->path), -1;
	memcpy(sa.sun_path, ctl->path, strlen(ctl->path) + 1);
	if (socket_alive(&sa))
		return snprintf(err, errlen, "control socket %s: in use by another running ktlsgate",
				ctl->path), -1;
	unlink(ctl->path); /* a stale socket from a previous run */
	ctl->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	mode_t old = umask(0117); /* born 0660: never briefly world-connectable */
	int rc = ctl->lfd < 0 ? -1 : bind(ctl->lfd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (rc < 0 || listen(ctl->lfd, 16) < 0)
		return snprintf(err, errlen, "control socket %s: %s", ctl->path, strerror(errno)), -1;
	if (ctl->gid >= 0 && chown(ctl->path, (uid_t)-1, (gid_t)ctl->gid) < 0)
		return snprintf(err, errlen, "control socket %s: chown: %s", ctl->path, strerror(errno)), -1;
	return 0;
}

struct kg_ctl *kg_ctl_open(struct kg_daemon *d, const char *path, bool explicit_path, int gid,
			   bool *fatal, char *err, size_t errlen)
{
	struct kg_ctl *ctl = calloc(1, sizeof(*ctl));

	*fatal = explicit_path;
	if (!ctl)
		return snprintf(err, errlen, "out of memory"), NULL;
	ctl->d = d;
	ctl->gid = gid;
	ctl->lfd = ctl->stop_pipe[0] = ctl->stop_pipe[1] = -1;
	snprintf(ctl->path, sizeof(ctl->path), "%s", path);
	for (int i = 0; i < KG_CTL_MAX_CLIENTS; i++)
		ctl->clients[i].fd = -1;
	if (!explicit_path)
		mkdir("/run/ktlsgate", 0750); /* systemd's RuntimeDirectory= makes it too */
	if (pipe2(ctl->stop_pipe, O_CLOEXEC) < 0 || bind_socket(ctl, err, errlen) < 0) {
		if (ctl->lfd >= 0)
			close(ctl->lfd);
		if (ctl->stop_pipe[0] >= 0) {
			close(ctl->stop_pipe[0]);
			close(ctl->stop_pipe[1]);
		}
		free(ctl);
		return NULL;
	}
	return ctl;
}

static void drop_client(struct ctl_client *c)
{
	close(c->fd);
	free(c->buf);
	free(c->denied);
	memset(c, 0, sizeof(*c));
	c->fd = -1;
}

/* Blocking write with a timeout: a client that never reads loses its reply. */
static void send_text(struct ctl_client *c, const char *text, size_t len)
{
	size_t off = 0;

	while (off < len) {
		struct pollfd p = { .fd = c->fd, .events = POLLOUT };
		if (poll(&p, 1, 5000) <= 0)
			break;
		ssize_t n = send(c->fd, text + off, len - off, MSG_NOSIGNAL);
		if (n <= 0 && errno != EAGAIN && errno != EINTR)
			break;
		if (n > 0)
			off += (size_t)n;
	}
}

/* The reply as one line. Not json_dumps: when its growing buffer cannot
 * grow, jansson 2.14 drops an object key and goes on (dump.c ignores
 * dump_string's result), and the client gets invalid JSON. json_dumpb into a
 * buffer of the measured size never allocates while writing. */
static char *reply_line(json_t *reply, size_t *len)
{
	const size_t flags = JSON_COMPACT | JSON_REAL_PRECISION(6);
	size_t n = reply ? json_dumpb(reply, NULL, 0, flags) : 0;
	char *text = n ? malloc(n + 1) : NULL;

	if (!text || json_dumpb(reply, text, n, flags) != n) {
		free(text);
		return NULL;
	}
	text[n] = '\n';
	*len = n + 1;
	return text;
}

/* Out of memory for this request: it alone is refused, with a line in the
 * log (at most one a second) and a fixed reply that needs no allocation. */
static void send_oom(struct ctl_client *c)
{
	static const char oom[] = "{\"ok\":false,\"error\":\"out of memory\"}\n";
	static uint64_t last_log_ms;
	uint64_t now = kg_now_ms();

	if (!last_log_ms || now - last_log_ms >= 1000) {
		last_log_ms = now;
		kg_log_msg(KG_LOG_ERROR, "control_error", "out of memory: request refused");
	}
	send_text(c, oom, sizeof(oom) - 1);
}

static void send_reply(struct ctl_client *c, json_t *reply)
{
	size_t len;
	char *text = reply_line(reply, &len);

	if (!text) {
		send_oom(c);
		return;
	}
	send_text(c, text, len);
	free(text);
}

struct line_ctx {
	struct kg_ctl *ctl;
	struct ctl_client *c;
};

static void answer_line(void *arg, const char *line, size_t len)
{
	struct line_ctx *lc = arg;
	json_t *reply = kg_ctl_answer(lc->ctl->d, line, len);

	send_reply(lc->c, reply);
	json_decref(reply);
}

/* The socket's group among the peer's supplementary groups (an operator
 * added to group ktlsgate has it there, not as the primary group). */
static bool peer_in_group(int fd, gid_t gid)
{
	gid_t groups[256];
	socklen_t len = sizeof(groups);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0)
		return false;
	for (size_t i = 0; i < len / sizeof(gid_t); i++)
		if (groups[i] == gid)
			return true;
	return false;
}

/* Who may talk: root, our own user, or a member of the socket's group. */
static bool peer_allowed(const struct kg_ctl *ctl, int fd, char *why, size_t cap)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return snprintf(why, cap, "cannot read peer credentials"), false;
	if (cred.uid == 0 || cred.uid == geteuid() ||
	    (ctl->gid >= 0 && (cred.gid == (gid_t)ctl->gid || peer_in_group(fd, (gid_t)ctl->gid))))
		return true;
	snprintf(why, cap, "permission denied: uid %u is neither root, ktlsgate's user nor in the socket's group",
		 (unsigned)cred.uid);
	return false;
}

static void accept_client(struct kg_ctl *ctl)
{
	char why[160];
	int fd = accept4(ctl->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	bool allowed;

	if (fd < 0)
		return;
	allowed = peer_allowed(ctl, fd, why, sizeof(why));
	if (!allowed)
		kg_log_msg(KG_LOG_WARN, "control_denied", "%s", why);
	for (int i = 0; i < KG_CTL_MAX_CLIENTS; i++) {
		if (ctl->clients[i].fd >= 0)
			continue;
		ctl->clients[i].fd = fd;
		ctl->clients[i].last_ms = kg_now_ms();
		/* Refused after it has spoken: closing on unread bytes would reset
		 * the connection and lose the reply that says why. */
		ctl->clients[i].denied = allowed ? NULL : strdup(why);
		if (!allowed && !ctl->clients[i].denied) /* never let it in for want of memory */
			drop_client(&ctl->clients[i]);
		return;
	}
	struct ctl_client tmp = { .fd = fd };
	json_t *r = kg_ctl_error("too many control clients (%d)", KG_CTL_MAX_CLIENTS);
	send_reply(&tmp, r);
	json_decref(r);
	close(fd);
}

static bool grow(struct ctl_client *c, size_t need)
{
	if (need <= c->cap)
		return true;
	size_t cap = c->cap ? c->cap * 2 : 4096;
	while (cap < need)
		cap *= 2;
	char *b = realloc(c->buf, cap);
	if (!b)
		return false;
	c->buf = b;
	c->cap = cap;
	return true;
}

/* Answers every complete line; false when the client must go. */
static bool serve_lines(struct kg_ctl *ctl, struct ctl_client *c)
{
	struct line_ctx lc = { ctl, c };
	size_t used;

	if (c->denied && memchr(c->buf, '\n', c->len)) {
		json_t *r = kg_ctl_error("%s", c->denied);
		send_reply(c, r);
		json_decref(r);
		return false;
	}
	used = c->denied ? 0 : kg_ctl_frame(c->buf, c->len, answer_line, &lc);
	memmove(c->buf, c->buf + used, c->len - used);
	c->len -= used;
	if (c->len > KG_CTL_MAX_REQUEST) {
		json_t *r = kg_ctl_error("request over %u bytes", KG_CTL_MAX_REQUEST);
		send_reply(c, r);
		json_decref(r);
		return false;
	}
	return true;
}

static void read_client(struct kg_ctl *ctl, struct ctl_client *c)
{
	if (!grow(c, c->len + 65536)) {
		send_oom(c);
		drop_client(c);
		return;
	}
	ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		drop_client(c);
		return;
	}
	c->len += (size_t)n;
	c->last_ms = kg_now_ms();
	if (!serve_lines(ctl, c))
		drop_client(c);
}

static void *ctl_main(void *arg)
{
	struct kg_ctl *ctl = arg;
	struct pollfd fds[KG_CTL_MAX_CLIENTS + 2];
	int idx[KG_CTL_MAX_CLIENTS + 2];

	for (;;) {
		int n = 0;
		fds[n++] = (struct pollfd){ .fd = ctl->stop_pipe[0], .events = POLLIN };
		fds[n++] = (struct pollfd){ .fd = ctl->lfd, .events = POLLIN };
		for (int i = 0; i < KG_CTL_MAX_CLIENTS; i++) {
			if (ctl->clients[i].fd < 0)
				continue;
			uint64_t limit = ctl->clients[i].denied ? KG_CTL_DENIED_MS : KG_CTL_IDLE_MS;
			if (kg_now_ms() - ctl->clients[i].last_ms > limit) {
				drop_client(&ctl->clients[i]);
				continue;
			}
			idx[n] = i;
			fds[n++] = (struct pollfd){ .fd = ctl->clients[i].fd, .events = POLLIN };
		}
		if (poll(fds, (nfds_t)n, 1000) < 0 && errno != EINTR)
			break;
		if (fds[0].revents)
			break;
		if (fds[1].revents & POLLIN)
			accept_client(ctl);
		for (int k = 2; k < n; k++)
			if (fds[k].revents)
				read_client(ctl, &ctl->clients[idx[k]]);
	}
	return NULL;
}

int kg_ctl_start(struct kg_ctl *ctl)
{
	return pthread_create(&ctl->thread, NULL, ctl_main, ctl);
}

void kg_ctl_stop(struct kg_ctl *ctl)
{
	char b = 1;

	if (!ctl)
		return;
	ssize_t unused = write(ctl->stop_pipe[1], &b, 1);
	(void)unused;
	pthread_join(ctl->thread, NULL);
	for (int i = 0; i < KG_CTL_MAX_CLIENTS; i++)
		if (ctl->clients[i].fd >= 0)
			drop_client(&ctl->clients[i]);
	close(ctl->lfd);
	unlink(ctl->path);
	close(ctl->stop_pipe[0]);
	close(ctl->stop_pipe[1]);
	free(ctl);
}
