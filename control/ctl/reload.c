/* ktlsgatectl reload: the daemon re-reads its configuration and switches to
 * the new generation only if all of it loads. */
#include <stdio.h>
#include <stdlib.h>

#include "ctl.h"
#include "table.h"

static int print_reload(json_t *r)
{
	char *gen = tbl_json_text(json_object_get(r, "generation"));
	json_t *ms = json_object_get(r, "ms");

	if (json_is_number(ms))
		printf("reloaded: generation %s (%.1f ms)\n", gen, json_number_value(ms));
	else
		printf("reloaded: generation %s\n", gen);
	free(gen);
	return CTL_EXIT_OK;
}

int reload_main(const struct ctl_ctx *ctx, const struct ctl_command *cmd, int argc, char **argv)
{
	int rc = ctl_no_args(cmd, argc, argv);

	return rc ? rc : ctl_request(ctx, ctl_simple_request("reload"), print_reload);
}
