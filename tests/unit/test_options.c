#include "options.h"
#include "test.h"

#define BASE "ktlsgate", "--listen", "127.0.0.1:1", "--cert", "c", "--key", "k", \
	"--client-ca", "ca", "--backend", "127.0.0.1:2"

static enum kg_parse_result parse(char *err, size_t errlen, struct kg_options *o, int argc,
				  char **argv)
{
	err[0] = 0;
	return kg_options_parse(argc, argv, o, err, errlen);
}

#define PARSE(...) ({ char *argv_[] = { __VA_ARGS__, NULL }; \
	parse(err, sizeof(err), &o, (int)(sizeof(argv_) / sizeof(argv_[0])) - 1, argv_); })

int main(void)
{
	struct kg_options o;
	char err[512];

	CHECK(PARSE(BASE) == KG_PARSE_OK);
	CHECK(o.nlisten == 1 && o.ncerts == 1 && o.nbackends == 1);
	CHECK(o.handshake_timeout_ms == 10000 && o.workers == 0);

	CHECK(PARSE(BASE, "--handshake-timeout", "0.5", "--workers", "3", "--crl", "a",
		    "--crl", "b", "--backend", "unix:/tmp/s", "--log-format", "json") == KG_PARSE_OK);
	CHECK(o.handshake_timeout_ms == 500 && o.workers == 3 && o.ncrls == 2);
	CHECK(o.nbackends == 2 && o.log_format == KG_LOG_JSON);

	CHECK(o.max_conns_per_source == 0); /* off unless asked for */
	CHECK(PARSE(BASE, "--max-conns-per-source", "20") == KG_PARSE_OK);
	CHECK(o.max_conns_per_source == 20);
	CHECK(PARSE(BASE, "--max-conns-per-source", "-3") == KG_PARSE_ERROR);
	CHECK_STR(err, "--max-conns-per-source -3: not a non-negative integer");

	CHECK(o.user == NULL && o.group == NULL);
	CHECK(PARSE(BASE, "--user", "ktlsgate", "--group", "ssl-cert") == KG_PARSE_OK);
	CHECK_STR(o.user, "ktlsgate");
	CHECK_STR(o.group, "ssl-cert");
	CHECK(PARSE(BASE, "--user") == KG_PARSE_ERROR);
	CHECK_STR(err, "option --user needs a value");

	CHECK(PARSE(BASE, "--workers", "abc") == KG_PARSE_ERROR);
	CHECK_STR(err, "--workers abc: not a positive integer (1-1024)");
	CHECK(PARSE(BASE, "--workers", "0") == KG_PARSE_ERROR);
	CHECK(PARSE(BASE, "--idle-timeout", "-1") == KG_PARSE_ERROR);
	CHECK_STR(err, "--idle-timeout -1: not a positive number of seconds");
	CHECK(PARSE(BASE, "--bogus") == KG_PARSE_ERROR);
	CHECK_STR(err, "unknown option --bogus (see --help)");
	CHECK(PARSE(BASE, "--cert") == KG_PARSE_ERROR);
	CHECK_STR(err, "option --cert needs a value");
	CHECK(PARSE(BASE, "stray") == KG_PARSE_ERROR);
	CHECK_CONTAINS(err, "unexpected argument 'stray'");
	CHECK(PARSE(BASE, "--cert", "c2") == KG_PARSE_ERROR);
	CHECK_CONTAINS(err, "must come in pairs");
	CHECK(PARSE(BASE, "--log-format", "xml") == KG_PARSE_ERROR);
	CHECK_STR(err, "--log-format xml: expected text or json");
	CHECK(PARSE(BASE, "--listen", "unix:/x") == KG_PARSE_ERROR);
	CHECK_CONTAINS(err, "--listen unix:/x: unix sockets are not allowed here");
	CHECK(PARSE("ktlsgate", "--listen", "127.0.0.1:1", "--cert", "c", "--key", "k",
		    "--client-ca", "ca") == KG_PARSE_ERROR);
	CHECK_STR(err, "missing required option --backend");

	/* --config: the file has the listeners; only a few flags may be added */
	CHECK(PARSE("ktlsgate", "--config", "/etc/k.yaml") == KG_PARSE_OK);
	CHECK_STR(o.config_file, "/etc/k.yaml");
	CHECK(!o.log_format_set && !o.ktls_set && o.workers == 0 && !o.check);
	CHECK(PARSE("ktlsgate", "--config", "k.yaml", "--check", "--workers", "2",
		    "--log-format", "json", "--ktls", "off") == KG_PARSE_OK);
	CHECK(o.check && o.workers == 2 && o.log_format == KG_LOG_JSON && o.log_format_set);
	CHECK(o.ktls == KG_KTLS_OFF && o.ktls_set);
	CHECK(PARSE("ktlsgate", "--config", "k.yaml", "--listen", "127.0.0.1:1") == KG_PARSE_ERROR);
	CHECK_STR(err, "--listen: not allowed with --config (set it in the file)");
	CHECK(PARSE("ktlsgate", "--cert", "c", "--config", "k.yaml") == KG_PARSE_ERROR);
	CHECK_STR(err, "--cert: not allowed with --config (set it in the file)");
	CHECK(PARSE("ktlsgate", "--config", "k.yaml", "--key", "k") == KG_PARSE_ERROR);
	CHECK_STR(err, "--key: not allowed with --config (set it in the file)");
	CHECK(PARSE("ktlsgate", "--config", "k.yaml", "--client-ca", "ca") == KG_PARSE_ERROR);
	CHECK_STR(err, "--client-ca: not allowed with --config (set it in the file)");
	CHECK(PARSE("ktlsgate", "--config", "k.yaml", "--backend", "127.0.0.1:2") == KG_PARSE_ERROR);
	CHECK_STR(err, "--backend: not allowed with --config (set it in the file)");
	CHECK(PARSE("ktlsgate", "--config", "k.yaml", "--crl", "x.crl") == KG_PARSE_ERROR);
	CHECK_STR(err, "--crl: not allowed with --config (set it in the file)");
	CHECK(PARSE("ktlsgate", "--config", "k.yaml", "--verify-depth", "3") == KG_PARSE_ERROR);
	CHECK_STR(err, "--verify-depth: not allowed with --config (set it in the file)");
	CHECK(PARSE("ktlsgate", "--config", "k.yaml", "--idle-timeout", "3") == KG_PARSE_ERROR);
	CHECK_STR(err, "--idle-timeout: not allowed with --config (set it in the file)");
	CHECK(PARSE("ktlsgate", "--workers", "2", "--ktls", "auto") == KG_PARSE_ERROR);
	CHECK_STR(err, "missing required option --listen");
	return T_DONE();
}
