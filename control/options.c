
#include "options.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum {
	OPT_LISTEN = 256, OPT_CERT, OPT_KEY, OPT_CLIENT_CA, OPT_BACKEND, OPT_CRL,
	OPT_WORKERS, OPT_VERIFY_DEPTH, OPT_MAX_CONNS, OPT_HS_TIMEOUT, OPT_IDLE_TIMEOUT,
	OPT_CONNECT_TIMEOUT, OPT_DRAIN_TIMEOUT, OPT_LOG_FORMAT, OPT_CHECK, OPT_CONFIG,
	OPT_HELP, OPT_VERSION, OPT_KTLS, OPT_RECORD_ENGINE,
	OPT_ALLOW_CN, OPT_ALLOW_DNS, OPT_ALLOW_URI, OPT_ALLOW_SUBJECT, OPT_DENY_SERIAL,
	OPT_MAX_CONNS_PER_SOURCE, OPT_USER, OPT_GROUP, OPT_CONTROL_SOCKET, OPT_METRICS_LISTEN,
	OPT_SESSION_TICKETS,
};

static const struct option long_options[] = {
	{ "listen", required_argument, NULL, OPT_LISTEN },
	{ "cert", required_argument, NULL, OPT_CERT },
	{ "key", required_argument, NULL, OPT_KEY },
	{ "client-ca", required_argument, NULL, OPT_CLIENT_CA },
	{ "backend", required_argument, NULL, OPT_BACKEND },
	{ "crl", required_argument, NULL, OPT_CRL },
	{ "workers", required_argument, NULL, OPT_WORKERS },
	{ "verify-depth", required_argument, NULL, OPT_VERIFY_DEPTH },
	{ "max-conns", required_argument, NULL, OPT_MAX_CONNS },
	{ "handshake-timeout", required_argument, NULL, OPT_HS_TIMEOUT },
	{ "idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT },
	{ "connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT },
	{ "drain-timeout", required_argument, NULL, OPT_DRAIN_TIMEOUT },
	{ "log-format", required_argument, NULL, OPT_LOG_FORMAT },
	{ "check", no_argument, NULL, OPT_CHECK },
	{ "config", required_argument, NULL, OPT_CONFIG },
	{ "help", no_argument, NULL, OPT_HELP },
	{ "version", no_argument, NULL, OPT_VERSION },
	{ "ktls", required_argument, NULL, OPT_KTLS },
	{ "record-engine", required_argument, NULL, OPT_RECORD_ENGINE },
	{ "allow-cn", required_argument, NULL, OPT_ALLOW_CN },
	{ "allow-dns", required_argument, NULL, OPT_ALLOW_DNS },
	{ "allow-uri", required_argument, NULL, OPT_ALLOW_URI },
	{ "allow-subject", required_argument, NULL, OPT_ALLOW_SUBJECT },
	{ "deny-serial", required_argument, NULL, OPT_DENY_SERIAL },
	{ "max-conns-per-source", required_argument, NULL, OPT_MAX_CONNS_PER_SOURCE },
	{ "user", required_argument, NULL, OPT_USER },
	{ "group", required_argument, NULL, OPT_GROUP },
	{ "control-socket", required_argument, NULL, OPT_CONTROL_SOCKET },
	{ "metrics-listen", required_argument, NULL, OPT_METRICS_LISTEN },
	{ "session-tickets", no_argument, NULL, OPT_SESSION_TICKETS },
	{ NULL, 0, NULL, 0 },
};

void kg_options_usage(FILE *out)
{
	fputs("usage: ktlsgate --listen HOST:PORT --cert FILE --key FILE --client-ca FILE\n"
	      "                --backend HOST:PORT|unix:/path [options]\n"
	      "       ktlsgate --config FILE [--check] [--workers N] [--log-format F] [--ktls M]\n"
	      "                [--record-engine E]\n"
	      "  --config FILE            YAML configuration (see configs/ktlsgate.yaml); only --user,\n"
	      "                           --group, --check, --workers, --log-format, --ktls,\n"
	      "                           --control-socket, --metrics-listen may be added, and they\n"
	      "                           win over the file\n"
	      "  --listen HOST:PORT       address to accept mTLS on (repeatable; [::1]:443 for IPv6)\n"
	      "  --cert FILE --key FILE   server identity: PEM chain (leaf first) and its key;\n"
	      "                           repeat the pair for an ECDSA and an RSA identity\n"
	      "  --client-ca FILE         PEM bundle of the CAs client certificates must chain to\n"
	      "  --crl FILE               PEM CRL(s) to check every client chain against (repeatable)\n"
	      "  --backend ADDR           HOST:PORT or unix:/path (repeatable; next one on failure)\n"
	      "  --workers N              worker threads, one pinned per CPU (default: online CPUs)\n"
	      "  --verify-depth N         intermediate CAs allowed below a trusted CA (default 4)\n"
	      "  --max-conns N            connections per worker (default 10000)\n"
	      "  --max-conns-per-source N live connections per client IP address, counted\n"
	      "                           across all workers (default 0: no cap)\n"
	      "  --handshake-timeout S    (default 10)   --idle-timeout S (default 300)\n"
	      "  --connect-timeout S      (default 5)    --drain-timeout S (default 30)\n"
	      "  --log-format text|json   access and event log format on stderr (default text)\n"
	      "  --ktls auto|off|required hand sessions to kernel TLS: when the kernel can (auto,\n"
	      "                           default), never, or refuse to start without it\n"
	      "  --record-engine auto|ktls|dpdk|openssl  who protects records after the\n"
	      "                           handshake (auto: kTLS, else DPDK cryptodev, else OpenSSL)\n"
	      "  --allow-cn NAME          only clients whose certificate has this CN (repeatable;\n"
	      "                           with several --allow-*, any one of them lets a client in)\n"
	      "  --allow-dns NAME         ... a SAN dNSName (exact, or *.example.com)\n"
	      "  --allow-uri URI          ... a SAN URI, e.g. spiffe://domain/path (trailing * = prefix)\n"
	      "  --allow-subject REGEX    ... a subject DN (RFC 2253 text) matching the POSIX regex\n"
	      "  --deny-serial HEX        refuse this certificate serial (repeatable), checked first\n"
	      "  --user NAME              started as root: run as NAME once listeners are bound\n"
	      "  --group NAME             with --user: run with this group (default: NAME's)\n"
	      "  --metrics-listen ADDR    serve Prometheus /metrics over HTTP there (default: off)\n"
	      "  --session-tickets        resume with stateless tickets instead of the session\n"
	      "                           cache (global.session_tickets)\n"
	      "  --control-socket PATH    where ktlsgatectl talks to us (default\n"
	      "                           /run/ktlsgate/control.sock)\n"
	      "  --check                  validate everything and exit 0 (ok) or 2\n"
	      "  --help, --version\n", out);
}

void kg_options_defaults(struct kg_options *o)
{
	memset(o, 0, sizeof(*o));
	o->verify_depth = 4;
	o->max_conns = 10000;
	o->handshake_timeout_ms = 10000;
	o->idle_timeout_ms = 300000;
	o->connect_timeout_ms = 5000;
	o->drain_timeout_ms = 30000;
	o->log_format = KG_LOG_TEXT;
}

static int parse_uint(const char *s, unsigned min, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v < min || v > INT_MAX)
		return -1;
	*out = (unsigned)v;
	return 0;
}

/* Seconds with an optional fraction ("0.5"), stored as milliseconds. */
static int parse_seconds(const char *s, unsigned *ms)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v) || v <= 0 || v > 86400.0 * 365)
		return -1;
	*ms = (unsigned)(v * 1000.0 + 0.5);
	return *ms ? 0 : -1;
}

const char *const kg_record_engine_names[4] = { "auto", "ktls", "dpdk", "openssl" };

#define FAIL(...) do { snprintf(err, errlen, __VA_ARGS__); return KG_PARSE_ERROR; } while (0)

static enum kg_parse_result add_addr(struct kg_addr *arr, size_t *n, size_t max,
				     const char *flag, const char *arg, bool allow_unix,
				     char *err, size_t errlen)
{
	char why[160];

	if (*n == max)
		FAIL("--%s %s: at most %zu allowed", flag, arg, max);
	if (kg_addr_parse(arg, allow_unix, &arr[*n], why, sizeof(why)) < 0)
		FAIL("--%s %s: %s", flag, arg, why);
	(*n)++;
	return KG_PARSE_OK;
}

static enum kg_parse_result set_option(struct kg_options *o, int opt, const char *arg,
				       char *err, size_t errlen)
{
	switch (opt) {
	case OPT_LISTEN:
		return add_addr(o->listen, &o->nlisten, KG_MAX_LISTEN, "listen", arg, false, err, errlen);
	case OPT_BACKEND:
		return add_addr(o->backends, &o->nbackends, KG_MAX_BACKENDS, "backend", arg, true,
				err, errlen);
	case OPT_CERT:
		if (o->ncerts == KG_MAX_IDENTITIES)
			FAIL("--cert %s: at most %d identities", arg, KG_MAX_IDENTITIES);
		o->ids[o->ncerts++].cert_file = arg;
		return KG_PARSE_OK;
	case OPT_KEY:
		if (o->nkeys == KG_MAX_IDENTITIES)
			FAIL("--key %s: at most %d identities", arg, KG_MAX_IDENTITIES);
		o->ids[o->nkeys++].key_file = arg;
		return KG_PARSE_OK;
	case OPT_CLIENT_CA:
		o->client_ca_file = arg;
		return KG_PARSE_OK;
	case OPT_CRL:
		if (o->ncrls == KG_MAX_CRLS)
			FAIL("--crl %s: at most %d CRL files", arg, KG_MAX_CRLS);
		o->crl_files[o->ncrls++] = arg;
		return KG_PARSE_OK;
	case OPT_WORKERS:
		if (parse_uint(arg, 1, &o->workers) < 0 || o->workers > 1024)
			FAIL("--workers %s: not a positive integer (1-1024)", arg);
		return KG_PARSE_OK;
	case OPT_VERIFY_DEPTH:
		if (parse_uint(arg, 1, &o->verify_depth) < 0 || o->verify_depth > 100)
			FAIL("--verify-depth %s: not an integer from 1 to 100", arg);
		return KG_PARSE_OK;
	case OPT_MAX_CONNS:
		if (parse_uint(arg, 1, &o->max_conns) < 0)
			FAIL("--max-conns %s: not a positive integer", arg);
		return KG_PARSE_OK;
	case OPT_MAX_CONNS_PER_SOURCE:
		if (parse_uint(arg, 0, &o->max_conns_per_source) < 0)
			FAIL("--max-conns-per-source %s: not a non-negative integer", arg);
		return KG_PARSE_OK;
	case OPT_HS_TIMEOUT:
	case OPT_IDLE_TIMEOUT:
	case OPT_CONNECT_TIMEOUT:
	case OPT_DRAIN_TIMEOUT: {
		unsigned *dst = opt == OPT_HS_TIMEOUT ? &o->handshake_timeout_ms
			: opt == OPT_IDLE_TIMEOUT ? &o->idle_timeout_ms
			: opt == OPT_CONNECT_TIMEOUT ? &o->connect_timeout_ms
			: &o->drain_timeout_ms;
		if (parse_seconds(arg, dst) < 0)
			FAIL("--%s %s: not a positive number of seconds",
			     long_options[opt - OPT_LISTEN].name, arg);
		return KG_PARSE_OK;
	}
	case OPT_LOG_FORMAT:
		if (strcmp(arg, "text") == 0)
			o->log_format = KG_LOG_TEXT;
		else if (strcmp(arg, "json") == 0)
			o->log_format = KG_LOG_JSON;
		else
			FAIL("--log-format %s: expected text or json", arg);
		o->log_format_set = true;
		return KG_PARSE_OK;
	case OPT_KTLS:
		if (strcmp(arg, "auto") == 0)
			o->ktls = KG_KTLS_AUTO;
		else if (strcmp(arg, "off") == 0)
			o->ktls = KG_KTLS_OFF;
		else if (strcmp(arg, "required") == 0)
			o->ktls = KG_KTLS_REQUIRED;
		else
			FAIL("--ktls %s: expected auto, off or required", arg);
		o->ktls_set = true;
		return KG_PARSE_OK;
	case OPT_RECORD_ENGINE:
		for (int i = 0; i < 4; i++)
			if (strcmp(arg, kg_record_engine_names[i]) == 0) {
				o->record_engine = (enum kg_record_engine)i;
				o->record_engine_set = true;
				return KG_PARSE_OK;
			}
		FAIL("--record-engine %s: expected auto, ktls, dpdk or openssl", arg);
	case OPT_USER:
		o->user = arg;
		return KG_PARSE_OK;
	case OPT_GROUP:
		o->group = arg;
		return KG_PARSE_OK;
	case OPT_METRICS_LISTEN: {
		char why[160];
		if (kg_addr_parse(arg, false, &o->metrics_listen, why, sizeof(why)) < 0)
			FAIL("--metrics-listen %s: %s", arg, why);
		o->metrics_http = true;
		return KG_PARSE_OK;
	}
	case OPT_CONTROL_SOCKET:
		if (arg[0] != '/')
			FAIL("--control-socket %s: give an absolute path", arg);
		o->control_socket = arg;
		return KG_PARSE_OK;
	case OPT_CHECK:
		o->check = true;
		return KG_PARSE_OK;
	case OPT_SESSION_TICKETS:
		o->session_tickets = true;
		return KG_PARSE_OK;
	case OPT_CONFIG:
		o->config_file = arg;
		return KG_PARSE_OK;
	case OPT_ALLOW_CN:
	case OPT_ALLOW_DNS:
	case OPT_ALLOW_URI:
	case OPT_ALLOW_SUBJECT:
	case OPT_DENY_SERIAL:
		if (o->nrules == KG_MAX_CLI_RULES)
			FAIL("--%s %s: at most %d rules on the command line; use --config",
			     long_options[opt - OPT_LISTEN].name, arg, KG_MAX_CLI_RULES);
		if (!*arg)
			FAIL("--%s: empty value", long_options[opt - OPT_LISTEN].name);
		o->rules[o->nrules].kind = (enum kg_cli_rule_kind)(opt - OPT_ALLOW_CN);
		o->rules[o->nrules++].value = arg;
		return KG_PARSE_OK;
	}
	FAIL("internal error: option %d", opt);
}

/* With --config the file describes listeners, identities, auth and timeouts;
 * a flag for them as well would leave two answers to one question. */
static bool combines_with_config(int opt)
{
	return opt == OPT_CHECK || opt == OPT_CONFIG || opt == OPT_WORKERS ||
	       opt == OPT_LOG_FORMAT || opt == OPT_KTLS || opt == OPT_USER || opt == OPT_GROUP ||
	       opt == OPT_CONTROL_SOCKET || opt == OPT_METRICS_LISTEN;
}

static enum kg_parse_result check_required(const struct kg_options *o, char *err, size_t errlen)
{
	if (o->config_file)
		return KG_PARSE_OK;
	if (o->nlisten == 0)
		FAIL("missing required option --listen");
	if (o->ncerts == 0)
		FAIL("missing required option --cert");
	if (o->nkeys == 0)
		FAIL("missing required option --key");
	if (o->ncerts != o->nkeys)
		FAIL("--cert and --key must come in pairs (%zu --cert, %zu --key)", o->ncerts, o->nkeys);
	if (!o->client_ca_file)
		FAIL("missing required option --client-ca");
	if (o->nbackends == 0)
		FAIL("missing required option --backend");
	return KG_PARSE_OK;
}

enum kg_parse_result kg_options_parse(int argc, char **argv, struct kg_options *o,
				      char *err, size_t errlen)
{
	int opt, file_flag = 0; /* the first flag --config excludes */
	enum kg_parse_result r;

	kg_options_defaults(o);
	opterr = 0;
	optind = 1;
	while ((opt = getopt_long(argc, argv, ":", long_options, NULL)) != -1) {
		if (opt == OPT_HELP) {
			kg_options_usage(stdout);
			return KG_PARSE_EXIT_OK;
		}
		if (opt == OPT_VERSION) {
			printf("ktlsgate %s\n", KG_VERSION);
			return KG_PARSE_EXIT_OK;
		}
		if (opt == ':')
			FAIL("option %s needs a value", argv[optind - 1]);
		if (opt == '?')
			FAIL("unknown option %s (see --help)", argv[optind - 1]);
		r = set_option(o, opt, optarg, err, errlen);
		if (r != KG_PARSE_OK)
			return r;
		if (!file_flag && !combines_with_config(opt))
			file_flag = opt;
	}
	if (o->config_file && file_flag)
		FAIL("--%s: not allowed with --config (set it in the file)",
		     long_options[file_flag - OPT_LISTEN].name);
	if (optind < argc)
		FAIL("unexpected argument '%s' (see --help)", argv[optind]);
	return check_required(o, err, errlen);
}
