/* ktlsgatectl show stats: one row per counter, the total and each worker.
 * Rows follow the daemon's keys, so a counter added there shows up here;
 * nested objects (refused reasons, latency percentiles) become "a.b" rows,
 * left out where the total is 0; the session cache's size follows. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "table.h"

static json_t *lookup(json_t *obj, const char *key, const char *sub)
{
	json_t *v = json_object_get(obj, key);

	return sub ? json_object_get(v, sub) : v;
}

static void add_row(struct tbl *t, json_t *total, json_t *workers, const char *key, const char *sub)
{
	json_t *w;
	size_t i;

	if (sub)
		tbl_add(t, "%s.%s", key, sub);
	else
		tbl_add(t, "%s", key);
	tbl_add_json(t, lookup(total, key, sub));
	json_array_foreach(workers, i, w)
		tbl_add_json(t, lookup(w, key, sub));
}

static int print_stats(json_t *r)
{
	json_t *total = json_object_get(r, "total"), *workers = json_object_get(r, "workers");
	size_t ncols = 2 + json_array_size(workers);
	char (*names)[24] = calloc(ncols, sizeof(*names));
	const char **titles = calloc(ncols, sizeof(*titles));
	const char *key, *sub;
	json_t *v, *sv;

	if (!names || !titles) {
		free(names);
		free(titles);
		ctl_err("out of memory");
		return CTL_EXIT_REFUSED;
	}
	titles[0] = "COUNTER";
	titles[1] = ">TOTAL";
	for (size_t i = 2; i < ncols; i++) {
		snprintf(names[i], sizeof(names[i]), ">WORKER %zu", i - 2);
		titles[i] = names[i];
	}

	struct tbl *t = tbl_new(ncols, titles);
	json_object_foreach(total, key, v) {
		if (!json_is_object(v)) {
			add_row(t, total, workers, key, NULL);
			continue;
		}
		/* A breakdown (23 refusal reasons) is mostly zeros: show what happened. */
		json_object_foreach(v, sub, sv)
			if (!json_is_integer(sv) || json_integer_value(sv) != 0)
				add_row(t, total, workers, key, sub);
	}
	tbl_print(t);
	/* Process-wide, not per worker: one line under the table. */
	json_t *entries = json_object_get(r, "session_cache_entries");
	if (json_is_integer(entries))
		printf("session cache entries: %" JSON_INTEGER_FORMAT "\n", json_integer_value(entries));
	free(names);
	free(titles);
	return CTL_EXIT_OK;
}

int show_stats_main(const struct ctl_ctx *ctx, const struct ctl_command *cmd, int argc, char **argv)
{
	int rc = ctl_no_args(cmd, argc, argv);

	return rc ? rc : ctl_request(ctx, ctl_simple_request("show stats"), print_stats);
}
