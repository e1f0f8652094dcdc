/* ktlsgatectl show certs: every server certificate, client CA and CRL the
 * current generation uses, with what needs attention marked in STATUS. */
#include <stdio.h>

#include "ctl.h"
#include "table.h"

static const char *cert_status(json_t *c)
{
	json_t *days = json_object_get(c, "days_left");

	if (json_is_integer(days) && json_integer_value(days) < 0)
		return "EXPIRED";
	return json_is_true(json_object_get(c, "warn")) ? "EXPIRES SOON" : "ok";
}

static const char *crl_status(json_t *c)
{
	if (json_is_true(json_object_get(c, "stale")))
		return "STALE";
	return json_is_true(json_object_get(c, "warn")) ? "WARN" : "ok";
}

static void print_cert_table(json_t *certs)
{
	static const char *const titles[] = { "KIND", "LISTENER", "SITE", "SUBJECT", "SANS",
		"SERIAL", "NOT AFTER", ">DAYS", "STATUS", "FILE" };
	static const char *const keys[] = { "kind", "listener", "site", "subject", "sans",
		"serial", "not_after", "days_left" };
	struct tbl *t = tbl_new(10, titles);
	json_t *c;
	size_t i;

	json_array_foreach(certs, i, c) {
		for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
			tbl_add_json(t, json_object_get(c, keys[k]));
		tbl_add(t, "%s", cert_status(c));
		tbl_add_json(t, json_object_get(c, "file"));
	}
	tbl_print(t);
}

static void print_crl_table(json_t *crls)
{
	static const char *const titles[] = { "LISTENER", "SITE", "ISSUER", "LAST UPDATE",
		"NEXT UPDATE", ">REVOKED", "STATUS", "FILE" };
	static const char *const keys[] = { "listener", "site", "issuer", "last_update",
		"next_update", "revoked" };
	struct tbl *t = tbl_new(8, titles);
	json_t *c;
	size_t i;

	json_array_foreach(crls, i, c) {
		for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
			tbl_add_json(t, json_object_get(c, keys[k]));
		tbl_add(t, "%s", crl_status(c));
		tbl_add_json(t, json_object_get(c, "file"));
	}
	tbl_print(t);
}

static int print_certs(json_t *r)
{
	json_t *certs = json_object_get(r, "certs"), *crls = json_object_get(r, "crls");

	if (json_array_size(certs))
		print_cert_table(certs);
	else
		puts("no certificates");
	if (json_array_size(crls)) {
		putchar('\n');
		print_crl_table(crls);
	}
	return CTL_EXIT_OK;
}

int show_certs_main(const struct ctl_ctx *ctx, const struct ctl_command *cmd, int argc, char **argv)
{
	int rc = ctl_no_args(cmd, argc, argv);

	return rc ? rc : ctl_request(ctx, ctl_simple_request("show certs"), print_certs);
}
