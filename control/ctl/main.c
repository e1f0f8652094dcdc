/* ktlsgatectl: the command-line client of ktlsgate's control socket.
 * Global options, then a command looked up in one table; each command lives
 * in its own file. Usage text is generated from the same table. */
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

static int help_main(const struct ctl_ctx *, const struct ctl_command *, int, char **);

static const struct ctl_command commands[] = {
	{ "show info", show_info_main, "", "version, uptime, kernel TLS, workers and listeners", NULL },
	{ "show stats", show_stats_main, "", "connection, handshake and byte counters, total and per worker", NULL },
	{ "show certs", show_certs_main, "", "server certificates, client CAs and CRLs with their expiry", NULL },
	{ "show conns", show_conns_main, "", "live connections: client, identity, backend, bytes, relay path", NULL },
	{ "show generation", show_generation_main, "", "the configuration generation serving new connections", NULL },
	{ "reload", reload_main, "", "re-read the configuration and switch to it if it is valid", NULL },
	{ "cert", txn_main, "begin|commit|abort NAME, set|update NAME FILE|-",
	  "replace a server certificate chain + key (PEM) in a transaction", "cert" },
	{ "ca", txn_main, "begin|commit|abort NAME, set|update NAME FILE|-",
	  "replace a client CA bundle (PEM) in a transaction", "ca" },
	{ "crl", txn_main, "begin|commit|abort NAME, set|update NAME FILE|-",
	  "replace a CRL file (PEM) in a transaction", "crl" },
	{ "policy set", policy_set_main, "LISTENER [--site NAME] FILE|-",
	  "replace allow/deny rules from JSON {\"allow\":[...],\"deny\":[...]}", NULL },
	{ "conn kill", conn_kill_main, "ID | --serial HEX | --subject DN | --spiffe URI",
	  "close live connections by id or client identity", NULL },
	{ "drain", drain_main, "", "stop accepting; live connections may finish", NULL },
	{ "metrics", metrics_main, "", "Prometheus text exposition", NULL },
	{ "help", help_main, "[COMMAND]", "this text, or one command's", NULL },
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static const char options_help[] =
	"usage: ktlsgatectl [-s SOCKET] [--json] [--timeout S] COMMAND [ARGS]\n"
	"\n"
	"  -s, --socket PATH  control socket (default: $KTLSGATE_SOCKET, else " CTL_DEFAULT_SOCKET ")\n"
	"  -j, --json         print the daemon's reply object as it came, for scripts\n"
	"  -t, --timeout S    give up after S seconds without an answer (default 10)\n"
	"  -h, --help         this text\n"
	"  -V, --version      ktlsgatectl's version\n"
	"\n"
	"exit status: 0 ok, 1 the daemon refused, 2 usage error, 3 cannot connect,\n"
	"             4 no valid reply in time\n";

static void print_command(FILE *f, const struct ctl_command *c)
{
	int n = fprintf(f, "  %s%s%s", c->name, c->args[0] ? " " : "", c->args);

	if (n > 28)
		fprintf(f, "\n%30s%s\n", "", c->help);
	else
		fprintf(f, "%*s%s\n", 30 - n, "", c->help);
}

/* Whether the command's name is prefix, or starts with the words of prefix. */
static int has_prefix(const struct ctl_command *c, const char *prefix)
{
	size_t len = strlen(prefix);

	return strncmp(c->name, prefix, len) == 0 && (c->name[len] == ' ' || !c->name[len]);
}

static int in_group(const char *prefix)
{
	for (size_t i = 0; i < NCOMMANDS; i++)
		if (has_prefix(&commands[i], prefix))
			return 1;
	return 0;
}

static void print_commands(FILE *f, const char *prefix)
{
	for (size_t i = 0; i < NCOMMANDS; i++)
		if (!prefix || has_prefix(&commands[i], prefix))
			print_command(f, &commands[i]);
}

static void usage(FILE *f, const char *prefix)
{
	fputs(options_help, f);
	fputs("\ncommands:\n", f);
	print_commands(f, prefix);
}

int ctl_usage(const struct ctl_command *cmd, const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("ktlsgatectl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nusage: ktlsgatectl [OPTIONS] %s%s%s\n", cmd->name,
		cmd->args[0] ? " " : "", cmd->args);
	return CTL_EXIT_USAGE;
}

int ctl_no_args(const struct ctl_command *cmd, int argc, char **argv)
{
	return argc ? ctl_usage(cmd, "unexpected argument '%s'", argv[0]) : CTL_EXIT_OK;
}

json_t *ctl_simple_request(const char *cmd)
{
	return json_pack("{s:s}", "cmd", cmd);
}

/* How many of argv's words spell c's name; 0 if they do not. */
static int match(const struct ctl_command *c, int argc, char **argv)
{
	const char *p = c->name;
	int words = 0;

	while (*p) {
		size_t len = strcspn(p, " ");
		if (words >= argc || strlen(argv[words]) != len || strncmp(argv[words], p, len) != 0)
			return 0;
		words++;
		p += len + (p[len] == ' ');
	}
	return words;
}

static const struct ctl_command *lookup(int argc, char **argv, int *words)
{
	for (size_t i = 0; i < NCOMMANDS; i++)
		if ((*words = match(&commands[i], argc, argv)))
			return &commands[i];
	return NULL;
}

static int help_main(const struct ctl_ctx *ctx, const struct ctl_command *cmd, int argc, char **argv)
{
	char prefix[256] = "";

	/* "help cert", "help show info": the words name a group or one command */
	for (int i = 0; i < argc; i++)
		snprintf(prefix + strlen(prefix), sizeof(prefix) - strlen(prefix), "%s%s",
			 i ? " " : "", argv[i]);
	if (argc && !in_group(prefix))
		return ctl_usage(cmd, "no command '%s'", prefix);
	usage(stdout, argc ? prefix : NULL);
	return CTL_EXIT_OK;
}

static int unknown_command(int argc, char **argv)
{
	if (!in_group(argv[0])) {
		ctl_err("unknown command '%s' (try 'ktlsgatectl help')", argv[0]);
		return CTL_EXIT_USAGE;
	}
	if (argc > 1)
		ctl_err("unknown command '%s %s'", argv[0], argv[1]);
	else
		ctl_err("'%s' needs a subcommand", argv[0]);
	fputs("usage:\n", stderr);
	print_commands(stderr, argv[0]);
	return CTL_EXIT_USAGE;
}

static int parse_timeout(const char *s, int *ms)
{
	char *end;
	double v = strtod(s, &end);

	if (end == s || *end || !isfinite(v) || v <= 0 || v > 86400) {
		ctl_err("--timeout %s: expected seconds, more than 0 and at most 86400", s);
		return -1;
	}
	*ms = (int)ceil(v * 1000);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "timeout", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *env = getenv("KTLSGATE_SOCKET");
	struct ctl_ctx ctx = {
		.socket_path = env && *env ? env : CTL_DEFAULT_SOCKET,
		.timeout_ms = 10000,
	};
	int c, words;

	opterr = 0;
	while ((c = getopt_long(argc, argv, "+:s:jt:hV", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			ctx.socket_path = optarg;
			break;
		case 'j':
			ctx.json = 1;
			break;
		case 't':
			if (parse_timeout(optarg, &ctx.timeout_ms) < 0)
				return CTL_EXIT_USAGE;
			break;
		case 'h':
			usage(stdout, NULL);
			return CTL_EXIT_OK;
		case 'V':
			printf("ktlsgatectl %s\n", KG_VERSION);
			return CTL_EXIT_OK;
		case ':':
			ctl_err("option %s needs an argument", argv[optind - 1]);
			return CTL_EXIT_USAGE;
		default:
			if (optopt)
				ctl_err("unknown option -%c (try 'ktlsgatectl help')", optopt);
			else
				ctl_err("unknown option %s (try 'ktlsgatectl help')", argv[optind - 1]);
			return CTL_EXIT_USAGE;
		}
	}
	if (!ctx.socket_path[0]) {
		ctl_err("--socket needs a PATH");
		return CTL_EXIT_USAGE;
	}
	argc -= optind;
	argv += optind;
	if (argc == 0) {
		usage(stderr, NULL);
		return CTL_EXIT_USAGE;
	}
	const struct ctl_command *cmd = lookup(argc, argv, &words);
	if (!cmd)
		return unknown_command(argc, argv);
	int rc = cmd->run(&ctx, cmd, argc - words, argv + words);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		ctl_err("cannot write the output: %m");
		return rc ? rc : CTL_EXIT_REFUSED;
	}
	return rc;
}
