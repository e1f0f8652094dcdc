/* ktlsgatectl subcommands: one file each, one entry point each, listed in
 * main.c's command table. */
#ifndef KG_CTL_H
#define KG_CTL_H
#include "client.h"

struct ctl_command {
	const char *name;  /* one or two words: "show info", "cert" */
	int (*run)(const struct ctl_ctx *ctx, const struct ctl_command *cmd, int argc, char **argv);
	const char *args;  /* synopsis of the arguments after the name */
	const char *help;
	const void *data;  /* per-row parameter, e.g. the transaction kind */
};

/* Reports a usage error for cmd on stderr; returns CTL_EXIT_USAGE. */
int ctl_usage(const struct ctl_command *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Each takes the arguments after the command's name. */
int show_info_main(const struct ctl_ctx *, const struct ctl_command *, int, char **);
int show_stats_main(const struct ctl_ctx *, const struct ctl_command *, int, char **);
int show_certs_main(const struct ctl_ctx *, const struct ctl_command *, int, char **);
int show_conns_main(const struct ctl_ctx *, const struct ctl_command *, int, char **);
int show_generation_main(const struct ctl_ctx *, const struct ctl_command *, int, char **);
int reload_main(const struct ctl_ctx *, const struct ctl_command *, int, char **);
int txn_main(const struct ctl_ctx *, const struct ctl_command *, int, char **);
int policy_set_main(const struct ctl_ctx *, const struct ctl_command *, int, char **);
int conn_kill_main(const struct ctl_ctx *, const struct ctl_command *, int, char **);
int drain_main(const struct ctl_ctx *, const struct ctl_command *, int, char **);
int metrics_main(const struct ctl_ctx *, const struct ctl_command *, int, char **);

/* A request with only "cmd", for the commands that take no argument. */
json_t *ctl_simple_request(const char *cmd);
/* Checks that a command got no argument. */
int ctl_no_args(const struct ctl_command *cmd, int argc, char **argv);
#endif
