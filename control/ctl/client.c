#include "client.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "table.h"

void ctl_err(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout); /* keep the order of what was already printed */
	fputs("ktlsgatectl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int left_ms(int64_t deadline)
{
	int64_t left = deadline - now_ms();

	return left < 0 ? 0 : (int)left;
}

/* Waits for events on fd until the deadline; 1 ready, 0 timed out. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	struct pollfd p = { .fd = fd, .events = events };

	for (;;) {
		int left = left_ms(deadline);
		if (left == 0)
			return 0;
		if (poll(&p, 1, left) > 0)
			return 1; /* ready, or an error the next call reports */
		/* timed out or interrupted: the deadline decides */
	}
}

static int connect_error(const char *path, int err)
{
	ctl_err("cannot connect to %s: %s (is ktlsgate running?)", path, strerror(err));
	return -1;
}

static int connect_socket(const char *path, int64_t deadline)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	if (strlen(path) >= sizeof(sa.sun_path))
		return connect_error(path, ENAMETOOLONG);
	memcpy(sa.sun_path, path, strlen(path) + 1);

	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return connect_error(path, errno);
	for (;;) {
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			return fd;
		int err = errno;
		if (err == EINTR)
			continue;
		/* EAGAIN: the daemon's backlog is full; it may catch up in time. */
		if (err == EAGAIN && left_ms(deadline) > 0) {
			int left = left_ms(deadline);
			poll(NULL, 0, left < 20 ? left : 20);
			continue;
		}
		close(fd);
		return connect_error(path, err == EAGAIN ? ETIMEDOUT : err);
	}
}

static int send_all(int fd, const char *buf, size_t len, int64_t deadline)
{
	size_t off = 0;

	while (off < len) {
		ssize_t n = send(fd, buf + off, len - off, MSG_NOSIGNAL);
		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			if (!wait_fd(fd, POLLOUT, deadline)) {
				ctl_err("timed out sending the request");
				return -1;
			}
			continue;
		}
		ctl_err("cannot send the request: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* Reads up to the first '\n'; the line (without it) is NUL-terminated. */
static char *recv_line(int fd, int64_t deadline, int timeout_ms, size_t *len)
{
	size_t cap = 64 * 1024, used = 0;
	char *buf = malloc(cap + 1);

	if (!buf)
		goto nomem;
	for (;;) {
		if (used == cap) {
			/* Room for the longest line plus its '\n', not more. */
			if (cap > CTL_MAX_REPLY) {
				ctl_err("reply longer than %u MiB, giving up", CTL_MAX_REPLY >> 20);
				goto fail;
			}
			size_t ncap = cap * 2 > CTL_MAX_REPLY + 1 ? CTL_MAX_REPLY + 1 : cap * 2;
			char *n = realloc(buf, ncap + 1);
			if (!n)
				goto nomem;
			buf = n;
			cap = ncap;
		}
		ssize_t n = recv(fd, buf + used, cap - used, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			if (!wait_fd(fd, POLLIN, deadline)) {
				ctl_err("no reply from the daemon within %d.%03d s",
					timeout_ms / 1000, timeout_ms % 1000);
				goto fail;
			}
			continue;
		}
		if (n < 0) {
			ctl_err("cannot read the reply: %s", strerror(errno));
			goto fail;
		}
		if (n == 0) {
			ctl_err(used ? "the daemon closed the connection in the middle of a reply"
				     : "the daemon closed the connection without replying");
			goto fail;
		}
		char *nl = memchr(buf + used, '\n', (size_t)n);
		used += (size_t)n;
		if (nl) {
			*len = (size_t)(nl - buf);
			if (*len > CTL_MAX_REPLY) {
				ctl_err("reply longer than %u MiB, giving up", CTL_MAX_REPLY >> 20);
				goto fail;
			}
			buf[*len] = '\0';
			return buf;
		}
	}
nomem:
	ctl_err("out of memory reading the reply");
fail:
	free(buf);
	return NULL;
}

/* Checks the reply's shape: an object with a boolean "ok". */
static int parse_reply(const char *raw, size_t len, json_t **reply)
{
	json_error_t e;
	json_t *r = json_loadb(raw, len, JSON_REJECT_DUPLICATES, &e);

	if (!r) {
		ctl_err("bad reply from the daemon: %s (at byte %d)", e.text, e.position);
		return CTL_EXIT_PROTOCOL;
	}
	if (!json_is_object(r) || !json_is_boolean(json_object_get(r, "ok"))) {
		ctl_err("bad reply from the daemon: not an object with a boolean \"ok\"");
		json_decref(r);
		return CTL_EXIT_PROTOCOL;
	}
	*reply = r;
	return json_is_true(json_object_get(r, "ok")) ? CTL_EXIT_OK : CTL_EXIT_REFUSED;
}

int ctl_call(const struct ctl_ctx *ctx, json_t *req, json_t **reply, char **raw, size_t *raw_len)
{
	int64_t deadline = now_ms() + ctx->timeout_ms;
	int rc = CTL_EXIT_PROTOCOL, fd = -1;
	char *line = json_dumps(req, JSON_COMPACT);
	char *in = NULL;
	size_t len;

	*reply = NULL;
	*raw = NULL;
	if (!line) {
		ctl_err("cannot encode the request (not UTF-8 text?)");
		return CTL_EXIT_USAGE;
	}
	len = strlen(line);
	if (len + 1 > CTL_MAX_REQUEST) {
		ctl_err("request of %zu bytes is over the daemon's limit of %u bytes",
			len + 1, CTL_MAX_REQUEST);
		rc = CTL_EXIT_USAGE;
		goto out;
	}
	line[len] = '\n'; /* json_dumps' NUL becomes the line end; send len + 1 */

	fd = connect_socket(ctx->socket_path, deadline);
	if (fd < 0) {
		rc = CTL_EXIT_CONNECT;
		goto out;
	}
	if (send_all(fd, line, len + 1, deadline) < 0)
		goto out;
	in = recv_line(fd, deadline, ctx->timeout_ms, raw_len);
	if (!in)
		goto out;
	rc = parse_reply(in, *raw_len, reply);
	if (rc == CTL_EXIT_OK || rc == CTL_EXIT_REFUSED) {
		*raw = in;
		in = NULL;
	}
out:
	free(in);
	if (fd >= 0)
		close(fd);
	free(line);
	return rc;
}

void ctl_report_refusal(json_t *reply)
{
	const char *e = json_string_value(json_object_get(reply, "error"));

	fflush(stdout);
	fputs("ktlsgatectl: ", stderr);
	tbl_fputs_safe(e ? e : "the daemon refused without saying why", stderr);
	fputc('\n', stderr);
}

int ctl_request(const struct ctl_ctx *ctx, json_t *req, ctl_print_fn print)
{
	json_t *reply;
	char *raw;
	size_t len;
	int rc = ctl_call(ctx, req, &reply, &raw, &len);

	json_decref(req);
	if (rc != CTL_EXIT_OK && rc != CTL_EXIT_REFUSED)
		return rc;
	if (ctx->json) {
		fwrite(raw, 1, len, stdout);
		fputc('\n', stdout);
	}
	if (rc == CTL_EXIT_REFUSED)
		ctl_report_refusal(reply);
	else if (!ctx->json && print)
		rc = print(reply);
	json_decref(reply);
	free(raw);
	return rc;
}

char *ctl_read_file(const char *path, size_t max, size_t *len)
{
	int is_stdin = strcmp(path, "-") == 0;
	int fd = is_stdin ? 0 : open(path, O_RDONLY | O_CLOEXEC);
	size_t cap = 16 * 1024, used = 0;
	char *buf = NULL;

	if (fd < 0)
		goto fail;
	if (!(buf = malloc(cap + 1)))
		goto fail;
	for (;;) {
		if (used == cap) {
			if (cap > max)
				break;
			char *n = realloc(buf, cap * 2 + 1);
			if (!n)
				goto fail;
			buf = n;
			cap *= 2;
		}
		ssize_t n = read(fd, buf + used, cap - used);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			goto fail;
		if (n == 0)
			break;
		used += (size_t)n;
	}
	if (used > max) {
		ctl_err("%s: larger than %zu bytes", path, max);
		goto out_free;
	}
	if (!is_stdin)
		close(fd);
	buf[used] = '\0';
	*len = used;
	return buf;
fail:
	ctl_err("cannot read %s: %s", is_stdin ? "standard input" : path, strerror(errno));
out_free:
	if (fd >= 0 && !is_stdin)
		close(fd);
	free(buf);
	return NULL;
}
