/* ktlsgatectl's side of the control socket: one request, one reply, each a
 * JSON object on one line, over a UNIX stream socket. Never blocks for longer
 * than the timeout: connect, send and the reply share one deadline. */
#ifndef KG_CTL_CLIENT_H
#define KG_CTL_CLIENT_H
#include <jansson.h>
#include <stddef.h>

/* Exit statuses of ktlsgatectl. */
enum {
	CTL_EXIT_OK = 0,
	CTL_EXIT_REFUSED = 1,  /* the daemon answered ok:false */
	CTL_EXIT_USAGE = 2,
	CTL_EXIT_CONNECT = 3,  /* no daemon at the socket */
	CTL_EXIT_PROTOCOL = 4, /* no reply in time, or not a valid reply */
};

#define CTL_DEFAULT_SOCKET "/run/ktlsgate/control.sock"
#define CTL_MAX_REQUEST (1u << 20)   /* the daemon refuses longer lines */
#define CTL_MAX_REPLY (64u << 20)    /* show conns on a busy daemon is large */

struct ctl_ctx {
	const char *socket_path;
	int timeout_ms;
	int json; /* --json: print the daemon's reply as it came */
};

/* Sends req, waits for the reply. On success (exit status 0 or 1) *reply holds
 * the parsed object and *raw (*raw_len bytes) the line as received (without '\n');
 * the caller frees both. Any other status has been reported on stderr. */
int ctl_call(const struct ctl_ctx *ctx, json_t *req, json_t **reply, char **raw, size_t *raw_len);

/* The common path of a subcommand: call, then report ok:false (status 1), or
 * print the reply verbatim with --json, or hand it to print() for people
 * (whose return value is the exit status).
 * Takes ownership of req. */
typedef int (*ctl_print_fn)(json_t *reply);
int ctl_request(const struct ctl_ctx *ctx, json_t *req, ctl_print_fn print);

/* "ktlsgatectl: <the daemon's error>" on stderr, for an ok:false reply. */
void ctl_report_refusal(json_t *reply);

/* "ktlsgatectl: ..." on stderr. */
void ctl_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Reads FILE ("-": stdin) whole, at most max bytes; NUL-terminated. Reports
 * errors itself and returns NULL. */
char *ctl_read_file(const char *path, size_t max, size_t *len);
#endif
