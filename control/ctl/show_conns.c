/* ktlsgatectl show conns: live connections, who they are and how their bytes
 * move (kernel TLS or userspace), with the kernel's own view when it has one. */
#include <stdio.h>
#include <stdlib.h>

#include "ctl.h"
#include "table.h"

/* "TLS 1.3 AES-128-GCM tx=sw rx=sw", or "-" when the kernel has no TLS state. */
static void add_kernel(struct tbl *t, json_t *k)
{
	if (!json_is_object(k)) {
		tbl_add(t, "-");
		return;
	}
	char *ver = tbl_json_text(json_object_get(k, "tls_version"));
	char *cipher = tbl_json_text(json_object_get(k, "cipher"));
	char *tx = tbl_json_text(json_object_get(k, "tx"));
	char *rx = tbl_json_text(json_object_get(k, "rx"));
	tbl_add(t, "%s %s tx=%s rx=%s", ver, cipher, tx, rx);
	free(ver);
	free(cipher);
	free(tx);
	free(rx);
}

static void add_age(struct tbl *t, json_t *age)
{
	char buf[32] = "-";

	if (json_is_number(age))
		tbl_fmt_ms(buf, sizeof(buf), json_number_value(age));
	tbl_add(t, "%s", buf);
}

static int print_conns(json_t *r)
{
	static const char *const titles[] = { ">ID", ">WORKER", "CLIENT", "SNI", "SUBJECT",
		"SERIAL", "SPIFFE", "BACKEND", ">IN", ">OUT", ">AGE", "STATE", "PATH", "KERNEL" };
	static const char *const keys[] = { "id", "worker", "client", "sni", "subject",
		"serial", "spiffe", "backend", "bytes_in", "bytes_out" };
	json_t *conns = json_object_get(r, "conns"), *c;
	size_t i;

	if (!json_array_size(conns)) {
		puts("no connections");
		return CTL_EXIT_OK;
	}
	struct tbl *t = tbl_new(14, titles);
	json_array_foreach(conns, i, c) {
		for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
			tbl_add_json(t, json_object_get(c, keys[k]));
		add_age(t, json_object_get(c, "age_ms"));
		tbl_add_json(t, json_object_get(c, "state"));
		tbl_add_json(t, json_object_get(c, "path"));
		add_kernel(t, json_object_get(c, "kernel"));
	}
	tbl_print(t);
	return CTL_EXIT_OK;
}

int show_conns_main(const struct ctl_ctx *ctx, const struct ctl_command *cmd, int argc, char **argv)
{
	int rc = ctl_no_args(cmd, argc, argv);

	return rc ? rc : ctl_request(ctx, ctl_simple_request("show conns"), print_conns);
}
