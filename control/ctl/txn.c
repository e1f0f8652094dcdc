/* ktlsgatectl cert|ca|crl begin|set|commit|abort|update: replace a PEM file
 * the daemon loaded, in a transaction kept by the daemon under the file's
 * name. Nothing changes for traffic until commit builds a new generation.
 * The three kinds differ only in the command word, so this file serves all. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "table.h"

struct txn {
	const struct ctl_ctx *ctx;
	const char *kind; /* "cert", "ca", "crl" */
	const char *name; /* the file name as written in the configuration */
};

/* Sends "<kind> <verb>" for the transaction; pem only for set. On status 0
 * or 1 the caller owns *reply and *raw. */
static int txn_call(const struct txn *x, const char *verb, const char *pem, size_t pem_len,
		    json_t **reply, char **raw, size_t *len)
{
	char cmd[32];
	json_t *req;

	snprintf(cmd, sizeof(cmd), "%s %s", x->kind, verb);
	req = json_pack("{s:s, s:s}", "cmd", cmd, "name", x->name);
	if (!req) {
		ctl_err("NAME is not UTF-8 text");
		return CTL_EXIT_USAGE;
	}
	if (pem && json_object_set_new(req, "pem", json_stringn(pem, pem_len)) < 0) {
		json_decref(req);
		ctl_err("the PEM file is not UTF-8 text");
		return CTL_EXIT_USAGE;
	}
	int rc = ctl_call(x->ctx, req, reply, raw, len);
	json_decref(req);
	return rc;
}

/* Prints the outcome of the last step: the reply verbatim with --json, the
 * daemon's error, or msg (with the new generation where there is one). */
static int txn_report(const struct txn *x, int rc, json_t *reply, char *raw, size_t len, const char *msg)
{
	if (rc != CTL_EXIT_OK && rc != CTL_EXIT_REFUSED)
		return rc;
	if (x->ctx->json) {
		fwrite(raw, 1, len, stdout);
		fputc('\n', stdout);
	}
	if (rc == CTL_EXIT_REFUSED) {
		ctl_report_refusal(reply);
	} else if (!x->ctx->json) {
		json_t *gen = json_object_get(reply, "generation");
		printf("%s ", x->kind);
		tbl_fputs_safe(x->name, stdout);
		if (json_is_integer(gen))
			printf(": %s, generation %" JSON_INTEGER_FORMAT "\n", msg, json_integer_value(gen));
		else
			printf(": %s\n", msg);
	}
	json_decref(reply);
	free(raw);
	return rc;
}

static int txn_simple(const struct txn *x, const char *verb, const char *msg)
{
	json_t *reply;
	char *raw;
	size_t len;
	int rc = txn_call(x, verb, NULL, 0, &reply, &raw, &len);

	return txn_report(x, rc, reply, raw, len, msg);
}

static char *read_pem(const char *file, size_t *len)
{
	char *pem = ctl_read_file(file, CTL_MAX_REQUEST, len);

	if (pem && memchr(pem, '\0', *len)) {
		ctl_err("%s: not a PEM text file", file);
		free(pem);
		return NULL;
	}
	return pem;
}

static int txn_set(const struct txn *x, const char *file)
{
	json_t *reply;
	char *raw;
	size_t len, pem_len;
	char *pem = read_pem(file, &pem_len);

	if (!pem)
		return CTL_EXIT_USAGE;
	int rc = txn_call(x, "set", pem, pem_len, &reply, &raw, &len);
	free(pem);
	return txn_report(x, rc, reply, raw, len, "staged; commit to apply");
}

/* After a failed set or commit in update: the transaction is ours, so close
 * it rather than leave it blocking the next begin. */
static void txn_cleanup(const struct txn *x)
{
	json_t *reply;
	char *raw;
	size_t len;
	int rc = txn_call(x, "abort", NULL, 0, &reply, &raw, &len);

	if (rc == CTL_EXIT_OK)
		ctl_err("%s %s: transaction aborted, nothing changed", x->kind, x->name);
	else if (rc == CTL_EXIT_REFUSED)
		ctl_err("%s %s: abort failed too: %s", x->kind, x->name,
			json_string_value(json_object_get(reply, "error")) ?: "no reason given");
	json_decref(reply);
	free(raw);
}

/* begin + set + commit. Reads FILE first so a typo leaves no transaction. */
static int txn_update(const struct txn *x, const char *file)
{
	static const char *const steps[] = { "begin", "set", "commit" };
	json_t *reply = NULL;
	char *raw = NULL;
	size_t len, pem_len;
	char *pem = read_pem(file, &pem_len);
	int rc = CTL_EXIT_USAGE;

	if (!pem)
		return rc;
	for (size_t i = 0; i < 3; i++) {
		json_decref(reply);
		free(raw);
		int set = strcmp(steps[i], "set") == 0;
		rc = txn_call(x, steps[i], set ? pem : NULL, pem_len, &reply, &raw, &len);
		if (rc == CTL_EXIT_OK)
			continue;
		rc = txn_report(x, rc, reply, raw, len, "");
		if (i > 0)
			txn_cleanup(x);
		free(pem);
		return rc;
	}
	free(pem);
	return txn_report(x, rc, reply, raw, len, "updated");
}

int txn_main(const struct ctl_ctx *ctx, const struct ctl_command *cmd, int argc, char **argv)
{
	struct txn x = { .ctx = ctx, .kind = cmd->data };
	const char *verb = argc ? argv[0] : NULL;
	int with_file = verb && (strcmp(verb, "set") == 0 || strcmp(verb, "update") == 0);

	if (!verb)
		return ctl_usage(cmd, "'%s' needs a subcommand", cmd->name);
	if (strcmp(verb, "begin") && strcmp(verb, "commit") && strcmp(verb, "abort") && !with_file)
		return ctl_usage(cmd, "unknown command '%s %s'", cmd->name, verb);
	if (argc < 2 || !argv[1][0])
		return ctl_usage(cmd, "%s %s needs NAME, the file name as in the configuration", cmd->name, verb);
	if (argc != 2 + with_file)
		return ctl_usage(cmd, argc < 3 ? "%s %s needs NAME and FILE (- for standard input)"
					      : "%s %s: too many arguments", cmd->name, verb);
	x.name = argv[1];
	if (strcmp(verb, "begin") == 0)
		return txn_simple(&x, verb, "transaction begun");
	if (strcmp(verb, "commit") == 0)
		return txn_simple(&x, verb, "committed");
	if (strcmp(verb, "abort") == 0)
		return txn_simple(&x, verb, "transaction aborted");
	if (strcmp(verb, "set") == 0)
		return txn_set(&x, argv[2]);
	return txn_update(&x, argv[2]);
}
