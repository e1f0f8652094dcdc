/* ktlsgatectl show info: what is running, since when, and where it listens. */
#include <stdio.h>
#include <stdlib.h>

#include "ctl.h"
#include "table.h"

static void print_ktls(json_t *ktls)
{
	json_t *desc = json_object_get(ktls, "description");

	if (json_is_string(desc))
		tbl_kv("kernel TLS", "%s", json_string_value(desc));
	else
		tbl_kv_json("kernel TLS", json_object_get(ktls, "available"));
}

static void print_workers(json_t *workers)
{
	json_t *cpus = json_array(), *w;
	size_t i;

	json_array_foreach(workers, i, w)
		json_array_append(cpus, json_object_get(w, "cpu"));
	char *list = tbl_json_text(cpus);
	tbl_kv("workers", "%zu (CPU %s)", json_array_size(workers), list);
	free(list);
	json_decref(cpus);
}

static void print_listeners(json_t *listeners)
{
	static const char *const titles[] = { "LISTENER", "LISTEN", "KTLS", "SITES" };
	struct tbl *t = tbl_new(4, titles);
	json_t *l;
	size_t i;

	json_array_foreach(listeners, i, l) {
		tbl_add_json(t, json_object_get(l, "name"));
		tbl_add_json(t, json_object_get(l, "listen"));
		tbl_add_json(t, json_object_get(l, "ktls"));
		tbl_add_json(t, json_object_get(l, "sites"));
	}
	tbl_print(t);
}

static int print_info(json_t *r)
{
	json_t *uptime = json_object_get(r, "uptime_s"), *config = json_object_get(r, "config");
	char up[32] = "-";

	if (json_is_number(uptime))
		tbl_fmt_ms(up, sizeof(up), json_number_value(uptime) * 1000);
	tbl_kv_json("version", json_object_get(r, "version"));
	tbl_kv_json("pid", json_object_get(r, "pid"));
	tbl_kv("uptime", "%s", up);
	if (json_is_string(config))
		tbl_kv("config", "%s", json_string_value(config));
	else
		tbl_kv("config", "(command line)");
	tbl_kv_json("generation", json_object_get(r, "generation"));
	print_ktls(json_object_get(r, "ktls"));
	json_t *engine = json_object_get(r, "record_engine");
	if (json_is_string(engine)) /* older daemons do not say */
		tbl_kv("record engine", "%s", json_string_value(engine));
	print_workers(json_object_get(r, "workers"));
	putchar('\n');
	print_listeners(json_object_get(r, "listeners"));
	return CTL_EXIT_OK;
}

int show_info_main(const struct ctl_ctx *ctx, const struct ctl_command *cmd, int argc, char **argv)
{
	int rc = ctl_no_args(cmd, argc, argv);

	return rc ? rc : ctl_request(ctx, ctl_simple_request("show info"), print_info);
}
