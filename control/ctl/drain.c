/* ktlsgatectl drain: the daemon stops accepting and lets live connections end. */
#include <stdio.h>

#include "ctl.h"

static int print_drain(json_t *r)
{
	puts("draining: no new connections; live ones may finish");
	return CTL_EXIT_OK;
}

int drain_main(const struct ctl_ctx *ctx, const struct ctl_command *cmd, int argc, char **argv)
{
	int rc = ctl_no_args(cmd, argc, argv);

	return rc ? rc : ctl_request(ctx, ctl_simple_request("drain"), print_drain);
}
