/* Daemon settings, from the command line (and later the config file). */
#ifndef KG_OPTIONS_H
#define KG_OPTIONS_H
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "addr.h"
#include "log.h"

#define KG_MAX_LISTEN 16
#define KG_MAX_IDENTITIES 4
#define KG_MAX_BACKENDS 16
#define KG_MAX_CRLS 16
#define KG_MAX_CLI_RULES 64

enum kg_ktls_mode { KG_KTLS_AUTO, KG_KTLS_OFF, KG_KTLS_REQUIRED };
/* Who protects records after the handshake: auto prefers kTLS, then DPDK, then OpenSSL. */
enum kg_record_engine { KG_ENGINE_AUTO, KG_ENGINE_KTLS, KG_ENGINE_DPDK, KG_ENGINE_OPENSSL };
extern const char *const kg_record_engine_names[4];

struct kg_identity_files {
	const char *cert_file; /* leaf first, then intermediates */
	const char *key_file;
};

/* --allow-cn/--allow-dns/--allow-uri/--allow-subject/--deny-serial: each one
 * rule of one condition; the file form has the full rule language. */
enum kg_cli_rule_kind {
	KG_CLI_ALLOW_CN, KG_CLI_ALLOW_DNS, KG_CLI_ALLOW_URI, KG_CLI_ALLOW_SUBJECT,
	KG_CLI_DENY_SERIAL,
};

struct kg_cli_rule {
	enum kg_cli_rule_kind kind;
	const char *value;
};

struct kg_options {
	const char *config_file;     /* then only workers, log_format, ktls and check are set */
	struct kg_addr listen[KG_MAX_LISTEN];
	size_t nlisten;
	struct kg_identity_files ids[KG_MAX_IDENTITIES];
	size_t ncerts, nkeys;
	const char *client_ca_file;
	const char *crl_files[KG_MAX_CRLS];
	size_t ncrls;
	struct kg_cli_rule rules[KG_MAX_CLI_RULES];
	size_t nrules;
	struct kg_addr backends[KG_MAX_BACKENDS];
	size_t nbackends;
	unsigned workers;            /* 0: one per online CPU */
	unsigned verify_depth;
	unsigned max_conns;          /* per worker */
	unsigned max_conns_per_source; /* per client IP, whole process; 0: no cap */
	unsigned handshake_timeout_ms;
	unsigned idle_timeout_ms;
	unsigned connect_timeout_ms;
	unsigned drain_timeout_ms;
	enum kg_log_format log_format;
	enum kg_ktls_mode ktls;
	enum kg_record_engine record_engine;
	bool log_format_set, ktls_set, record_engine_set; /* given: they win over --config */
	const char *user, *group;
	const char *control_socket;  /* wins over global.control_socket */
	struct kg_addr metrics_listen; /* --metrics-listen: wins over global.metrics_listen */
	bool metrics_http;    /* drop to these after binding; NULL: stay */
	bool check;
	bool session_tickets; /* --session-tickets */
};

enum kg_parse_result { KG_PARSE_OK, KG_PARSE_EXIT_OK, KG_PARSE_ERROR };

void kg_options_defaults(struct kg_options *o);
/* On error, err holds one line such as "--workers abc: not a positive integer". */
enum kg_parse_result kg_options_parse(int argc, char **argv, struct kg_options *o,
				      char *err, size_t errlen);
void kg_options_usage(FILE *out);
#endif
