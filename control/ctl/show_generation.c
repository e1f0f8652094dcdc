/* ktlsgatectl show generation: which configuration new connections get. */
#include "ctl.h"
#include "table.h"

static int print_generation(json_t *r)
{
	tbl_kv_json("generation", json_object_get(r, "generation"));
	tbl_kv_json("built at", json_object_get(r, "built_at"));
	tbl_kv_json("source", json_object_get(r, "source"));
	tbl_kv_json("runtime changes", json_object_get(r, "runtime_changes"));
	return CTL_EXIT_OK;
}

int show_generation_main(const struct ctl_ctx *ctx, const struct ctl_command *cmd, int argc, char **argv)
{
	int rc = ctl_no_args(cmd, argc, argv);

	return rc ? rc : ctl_request(ctx, ctl_simple_request("show generation"), print_generation);
}
