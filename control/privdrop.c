#include "privdrop.h"

#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"

#define FAIL(...) do { snprintf(err, errlen, __VA_ARGS__); return -1; } while (0)

/* A name, or a number for users that only exist as ids (containers). */
static int lookup_user(const char *s, uid_t *uid, gid_t *gid, char *name, size_t namelen)
{
	struct passwd *pw = getpwnam(s);
	char *end;
	unsigned long n;

	if (!pw) {
		errno = 0;
		n = strtoul(s, &end, 10);
		if (errno || end == s || *end || n >= (uid_t)-1)
			return -1;
		pw = getpwuid((uid_t)n);
		if (!pw)
			return -1;
	}
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
	snprintf(name, namelen, "%s", pw->pw_name);
	return 0;
}

static int lookup_group(const char *s, gid_t *gid)
{
	struct group *gr = getgrnam(s);
	char *end;
	unsigned long n;

	if (gr) {
		*gid = gr->gr_gid;
		return 0;
	}
	errno = 0;
	n = strtoul(s, &end, 10);
	if (errno || end == s || *end || n >= (gid_t)-1)
		return -1;
	*gid = (gid_t)n;
	return 0;
}

int kg_privdrop_prepare(const char *user, const char *group, struct kg_privdrop *pd,
			char *err, size_t errlen)
{
	memset(pd, 0, sizeof(*pd));
	pd->uid = getuid();
	pd->gid = getgid();
	if (!user && !group)
		return 0;
	if (user && lookup_user(user, &pd->uid, &pd->gid, pd->user, sizeof(pd->user)) < 0)
		FAIL("--user %s: no such user", user);
	if (group && lookup_group(group, &pd->gid) < 0)
		FAIL("--group %s: no such group", group);
	if (geteuid() != 0) {
		if (pd->uid != geteuid())
			FAIL("--user %s: only root can switch user (running as uid %u)", user,
			     (unsigned)geteuid());
		if (pd->gid != getegid())
			FAIL("--group %s: only root can switch group (running as gid %u)",
			     group ? group : pd->user, (unsigned)getegid());
		return 0;
	}
	if (pd->uid == 0 && user)
		FAIL("--user %s: refusing to run as root after start-up", user);
	if (!user)
		FAIL("--group %s: give --user too (root keeps its own group otherwise)", group);
	pd->switch_ids = true;
	return 0;
}

static int last_cap(void)
{
	FILE *f = fopen("/proc/sys/kernel/cap_last_cap", "r");
	int n = CAP_LAST_CAP;

	if (f) {
		if (fscanf(f, "%d", &n) != 1)
			n = CAP_LAST_CAP;
		fclose(f);
	}
	return n;
}

/* Needs CAP_SETPCAP, so before setuid: afterwards nothing can regain a cap,
 * not even by executing a file with capabilities. */
static int clear_bounding_set(char *err, size_t errlen)
{
	for (int cap = 0; cap <= last_cap(); cap++)
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
			FAIL("cannot drop capability %d from the bounding set: %s", cap,
			     strerror(errno));
	return 0;
}

static int clear_caps(char *err, size_t errlen)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];

	memset(data, 0, sizeof(data));
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		FAIL("cannot clear ambient capabilities: %s", strerror(errno));
	if (syscall(SYS_capset, &hdr, data) < 0)
		FAIL("cannot drop capabilities: %s", strerror(errno));
	return 0;
}

static int switch_ids(const struct kg_privdrop *pd, char *err, size_t errlen)
{
	if (clear_bounding_set(err, errlen) < 0)
		return -1;
	/* Supplementary groups of the user (ssl-cert, say) so a later reload can
	 * still read the files the admin gave it through a group. */
	if (initgroups(pd->user, pd->gid) < 0)
		FAIL("--user %s: initgroups: %s", pd->user, strerror(errno));
	if (setresgid(pd->gid, pd->gid, pd->gid) < 0)
		FAIL("--group %u: setresgid: %s", (unsigned)pd->gid, strerror(errno));
	if (setresuid(pd->uid, pd->uid, pd->uid) < 0)
		FAIL("--user %s: setresuid: %s", pd->user, strerror(errno));
	return 0;
}

/* Trust but verify: a half-done drop must stop the daemon, not serve. */
static int verify_dropped(const struct kg_privdrop *pd, char *err, size_t errlen)
{
	uid_t r, e, s;
	gid_t rg, eg, sg;

	if (getresuid(&r, &e, &s) < 0 || r != pd->uid || e != pd->uid || s != pd->uid ||
	    getresgid(&rg, &eg, &sg) < 0 || rg != pd->gid || eg != pd->gid || sg != pd->gid)
		FAIL("--user %s: user or group ids did not change", pd->user);
	if (pd->uid != 0 && (setuid(0) == 0 || seteuid(0) == 0))
		FAIL("--user %s: could regain root after dropping it", pd->user);
	if (pd->gid != 0 && (setgid(0) == 0 || setegid(0) == 0))
		FAIL("--group %u: could regain gid 0 after dropping it", (unsigned)pd->gid);
	return 0;
}

int kg_privdrop_apply(const struct kg_privdrop *pd, char *err, size_t errlen)
{
	if (pd->switch_ids) {
		if (switch_ids(pd, err, errlen) < 0 || verify_dropped(pd, err, errlen) < 0)
			return -1;
		struct kg_field f[] = {
			KG_S("user", pd->user), KG_I("uid", pd->uid), KG_I("gid", pd->gid),
		};
		kg_log_event(KG_LOG_INFO, "privdrop", f, KG_NFIELDS(f));
	} else if (geteuid() == 0) {
		return 0; /* root without --user: the admin's choice, nothing to drop */
	}
	if (clear_caps(err, errlen) < 0)
		return -1;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		FAIL("cannot set no_new_privs: %s", strerror(errno));
	/* setuid resets it to fs.suid_dumpable; keys stay out of core files. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	return 0;
}
