/* ktlsgatectl metrics: Prometheus text, printed as the daemon wrote it so it
 * can be piped to a textfile collector. */
#include <stdio.h>
#include <string.h>

#include "ctl.h"

static int print_metrics(json_t *r)
{
	json_t *text = json_object_get(r, "text");

	if (!json_is_string(text)) {
		ctl_err("bad reply from the daemon: no metrics \"text\"");
		return CTL_EXIT_PROTOCOL;
	}
	fwrite(json_string_value(text), 1, json_string_length(text), stdout);
	return CTL_EXIT_OK;
}

int metrics_main(const struct ctl_ctx *ctx, const struct ctl_command *cmd, int argc, char **argv)
{
	int rc = ctl_no_args(cmd, argc, argv);

	return rc ? rc : ctl_request(ctx, ctl_simple_request("metrics"), print_metrics);
}
