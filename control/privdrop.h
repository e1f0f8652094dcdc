/* Dropping root after start-up: listeners are bound and kernel modules are
 * loaded as root, then the daemon runs as an unprivileged user with no
 * capabilities left (nginx's master/worker split, in one process). */
#ifndef KG_PRIVDROP_H
#define KG_PRIVDROP_H
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct kg_privdrop {
	bool switch_ids;  /* started as root with --user/--group: change uid/gid */
	uid_t uid;
	gid_t gid;
	char user[64];    /* for initgroups and the log line */
};

/* Resolves --user/--group (names or numbers) at start, before anything is
 * bound, so a typo fails early. Not root: naming any other user or group is
 * an error. -1 with "--user NAME: reason" in err. */
int kg_privdrop_prepare(const char *user, const char *group, struct kg_privdrop *pd,
			char *err, size_t errlen);

/* Switches to the prepared user and group, then makes sure root cannot come
 * back: empty capability bounding set, no capabilities, no_new_privs,
 * setuid(0) fails. Also drops capabilities a non-root start was given (systemd
 * AmbientCapabilities=CAP_NET_BIND_SERVICE): they were only for binding.
 * -1 with a reason in err. */
int kg_privdrop_apply(const struct kg_privdrop *pd, char *err, size_t errlen);
#endif
