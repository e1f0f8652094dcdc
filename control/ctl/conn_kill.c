/* ktlsgatectl conn kill: close live connections, one by id (from show conns)
 * or all of one client identity, e.g. right after revoking its certificate. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

static int print_killed(json_t *r)
{
	json_t *n = json_object_get(r, "killed");

	if (!json_is_integer(n))
		puts("killed");
	else if (json_integer_value(n) == 0)
		puts("no connection matched");
	else
		printf("killed %" JSON_INTEGER_FORMAT " connection%s\n", json_integer_value(n),
		       json_integer_value(n) == 1 ? "" : "s");
	return CTL_EXIT_OK;
}

/* Serials as people copy them: "1a:2b" and "1A2B" are the same; the daemon
 * shows upper-case hex without separators. */
static int normalize_serial(const char *in, char *out, size_t cap)
{
	size_t n = 0;

	for (; *in; in++) {
		if (*in == ':')
			continue;
		if (!isxdigit((unsigned char)*in) || n + 1 >= cap)
			return -1;
		out[n++] = (char)toupper((unsigned char)*in);
	}
	out[n] = '\0';
	return n ? 0 : -1;
}

static json_t *by_id(const char *s)
{
	char *end;

	errno = 0;
	long long id = strtoll(s, &end, 10);
	if (!isdigit((unsigned char)s[0]) || *end || errno || id <= 0)
		return NULL;
	return json_pack("{s:s, s:I}", "cmd", "conn kill", "id", (json_int_t)id);
}

int conn_kill_main(const struct ctl_ctx *ctx, const struct ctl_command *cmd, int argc, char **argv)
{
	static const char *const keys[] = { "serial", "subject", "spiffe" };
	char serial[256];
	json_t *req = NULL;

	if (argc == 0)
		return ctl_usage(cmd, "say which connections: an ID, or --serial, --subject or --spiffe");
	if (argc == 1) {
		if (!(req = by_id(argv[0])))
			return ctl_usage(cmd, "'%s' is not a connection id (a positive number from show conns)", argv[0]);
		return ctl_request(ctx, req, print_killed);
	}
	if (argc > 2)
		return ctl_usage(cmd, "one selector at a time");
	for (size_t k = 0; k < 3; k++) {
		if (strncmp(argv[0], "--", 2) || strcmp(argv[0] + 2, keys[k]))
			continue;
		const char *v = argv[1];
		if (!v[0])
			return ctl_usage(cmd, "%s needs a value", argv[0]);
		if (k == 0) {
			if (normalize_serial(v, serial, sizeof(serial)) < 0)
				return ctl_usage(cmd, "--serial %s: expected hex digits (':' allowed)", v);
			v = serial;
		}
		if (!(req = json_pack("{s:s, s:s}", "cmd", "conn kill", keys[k], v))) {
			ctl_err("%s must be UTF-8 text", argv[0]);
			return CTL_EXIT_USAGE;
		}
		return ctl_request(ctx, req, print_killed);
	}
	return ctl_usage(cmd, "unknown selector %s", argv[0]);
}
