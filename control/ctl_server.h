/* The control socket: a UNIX stream socket speaking one JSON object per line
 * each way, served by its own thread (never a worker). See README "Control
 * socket" for the commands. */
#ifndef KG_CTL_SERVER_H
#define KG_CTL_SERVER_H
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "daemon.h"

#define KG_CTL_MAX_REQUEST (1u << 20) /* a PEM bundle fits; anything bigger is refused */
#define KG_CTL_DEFAULT_PATH "/run/ktlsgate/control.sock"

struct kg_ctl;

/* Binds the socket (mode 0660, group gid when >= 0). An explicit path that
 * cannot be bound is an error; the default one only a warning (err set, NULL
 * returned, *fatal false). */
struct kg_ctl *kg_ctl_open(struct kg_daemon *d, const char *path, bool explicit_path, int gid,
			   bool *fatal, char *err, size_t errlen);
int kg_ctl_start(struct kg_ctl *ctl);
void kg_ctl_stop(struct kg_ctl *ctl);

/* One request object -> one reply object (ctl_cmds.c). With d NULL (a
 * harness without a daemon) a known command is answered with an error. */
json_t *kg_ctl_dispatch(struct kg_daemon *d, json_t *req);

/* ctl_request.c: the protocol without the socket. One line (no newline, any
 * bytes) -> one reply object: a JSON error, or what kg_ctl_dispatch says. */
json_t *kg_ctl_answer(struct kg_daemon *d, const char *line, size_t len);
/* Calls fn for each complete line in buf (its '\n' replaced by NUL); returns
 * the bytes used up, the rest being an unfinished line. */
typedef void (*kg_ctl_line_fn)(void *arg, const char *line, size_t len);
size_t kg_ctl_frame(char *buf, size_t len, kg_ctl_line_fn fn, void *arg);
json_t *kg_ctl_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#endif
