/* The YAML configuration file: the shipped example parses into the right
 * fields, sites inherit and override, defaults hold, and each mistake gives
 * its exact FILE:LINE:COL: key: reason line.
 * Usage: test_config [path/to/configs/ktlsgate.yaml] */
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "test.h"

static char path[64];

static void write_file(const char *yaml)
{
	FILE *f = fopen(path, "w");

	if (!f || fputs(yaml, f) < 0 || fclose(f) != 0) {
		perror(path);
		exit(T_EXIT_FAIL);
	}
}

/* Loads yaml; 0 or -1, with the error in err. */
static int load(const char *yaml, struct kg_config *c, char *err, size_t errlen)
{
	write_file(yaml);
	err[0] = '\0';
	return kg_config_load_yaml(path, c, err, errlen);
}

/* A minimal valid listener, appended to by the error cases (lines 1-6). */
#define L0 "listeners:\n"                                  \
	   "  - listen: \"127.0.0.1:8443\"\n"              \
	   "    identities: [{ cert: c.pem, key: c.key }]\n" \
	   "    client_ca: ca.pem\n"
#define L1 L0 "    backends: \"127.0.0.1:8080\"\n"

static void expect_error(int line, const char *yaml, const char *want_tail)
{
	struct kg_config c;
	char err[512], want[512];

	snprintf(want, sizeof(want), "%s:%s", path, want_tail);
	if (load(yaml, &c, err, sizeof(err)) == 0) {
		fprintf(stderr, "%s:%d: accepted, want '%s'\n", __FILE__, line, want);
		t_failures++;
		kg_config_free(&c);
		return;
	}
	if (strcmp(err, want) != 0) {
		fprintf(stderr, "%s:%d: got '%s', want '%s'\n", __FILE__, line, err, want);
		t_failures++;
	}
	CHECK(!strchr(err, '\n'));
	kg_config_free(&c); /* already emptied: must be harmless */
}
#define ERR(yaml, tail) expect_error(__LINE__, yaml, tail)

/* The 1-based line of the example that contains needle: positions are
 * checked against the file as it is, not against numbers that drift. */
static unsigned line_of(const char *path, const char *needle)
{
	char buf[512];
	unsigned n = 0;
	FILE *f = fopen(path, "r");

	while (f && fgets(buf, sizeof(buf), f)) {
		n++;
		if (strstr(buf, needle)) {
			fclose(f);
			return n;
		}
	}
	if (f)
		fclose(f);
	return 0;
}

static void test_example(const char *example)
{
	struct kg_config c;
	const struct kg_listener_spec *l;
	const struct kg_auth_spec *a, *s;
	char err[512];

	if (kg_config_load_yaml(example, &c, err, sizeof(err)) < 0) {
		fprintf(stderr, "example: %s\n", err);
		t_failures++;
		return;
	}
	CHECK_STR(c.file, example);
	CHECK(c.workers == 2);
	CHECK(c.ncpus == 2 && c.cpus[0] == 0 && c.cpus[1] == 1);
	CHECK_STR(c.user, "ktlsgate");
	CHECK_STR(c.group, "ktlsgate");
	CHECK(c.log_format == KG_LOG_TEXT);
	CHECK_STR(c.log_file, "/var/log/ktlsgate.log");
	CHECK_STR(c.control_socket, "/run/ktlsgate/control.sock");
	CHECK(c.ktls == KG_KTLS_AUTO);
	CHECK(c.max_conns == 10000);
	CHECK(c.handshake_timeout_ms == 10000 && c.idle_timeout_ms == 300000);
	CHECK(c.connect_timeout_ms == 5000 && c.drain_timeout_ms == 30000);
	CHECK(c.kill_revoked_on_crl_update);
	CHECK(c.dpdk_memory_mb == 128 && c.dpdk_queue_depth == 4096);
	CHECK(c.session_cache == 4096 && c.session_timeout_s == 300 && !c.session_tickets);
	CHECK(c.nlisteners == 2);
	if (c.nlisteners != 2)
		goto out;

	l = &c.listeners[0];
	CHECK_STR(l->name, "public");
	CHECK(l->naddrs == 2);
	CHECK_STR(l->addrs[0].addr.text, "0.0.0.0:8443");
	CHECK_STR(l->addrs[1].addr.text, "[::]:8443");
	CHECK(l->addrs[1].addr.ss.ss_family == AF_INET6);
	CHECK(l->ktls == KG_KTLS_AUTO);
	CHECK(l->min_version == TLS1_2_VERSION && l->max_version == TLS1_3_VERSION);
	CHECK_STR(l->ciphers, "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384");
	CHECK_STR(l->ciphersuites, "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256");
	CHECK_STR(l->groups, "X25519:P-256");
	CHECK(l->nids == 3);
	if (l->nids == 3) {
		CHECK_STR(l->ids[0].cert.path, "/etc/ktlsgate/ec.pem");
		CHECK(l->ids[0].cert.at.file == c.file && l->ids[0].cert.at.line == line_of(example, "- cert: /etc/ktlsgate/ec.pem"));
		CHECK(l->ids[0].cert.at.col == 15);
		CHECK_STR(l->ids[0].cert.at.key, "cert");
		CHECK_STR(l->ids[0].key.path, "/etc/ktlsgate/ec.key");
		CHECK(l->ids[0].nsni == 2 && l->ids[0].is_default);
		CHECK_STR(l->ids[0].sni[1], "*.example.com");
		CHECK(l->ids[0].at.line == line_of(example, "- cert: /etc/ktlsgate/ec.pem") && l->ids[0].at.col == 9);
		CHECK_STR(l->ids[1].passphrase_file.path, "/etc/ktlsgate/rsa.pass");
		CHECK(!l->ids[1].is_default && l->ids[1].nsni == 0 && !l->ids[1].pkcs12.path);
		CHECK_STR(l->ids[2].pkcs12.path, "/etc/ktlsgate/legacy.p12");
		CHECK(!l->ids[2].cert.path && l->ids[2].nsni == 1);
		CHECK_STR(l->ids[2].sni[0], "legacy.example.org");
	}
	a = &l->auth;
	CHECK(a->client_auth == KG_AUTH_REQUIRED);
	CHECK(a->nclient_cas == 1);
	CHECK_STR(a->client_cas[0].path, "/etc/ktlsgate/clients-ca.pem");
	CHECK(a->ncrls == 2);
	CHECK_STR(a->crls[1].path, "/etc/ktlsgate/inter.crl");
	CHECK(a->crl_check == KG_CRL_CHAIN && !a->crl_missing_allow);
	CHECK(a->verify_depth == 4 && a->require_client_eku && !a->proxy_v2);
	CHECK(a->nbackends == 2);
	CHECK_STR(a->backends[1].addr.text, "unix:/run/app.sock");
	CHECK(a->backends[1].addr.ss.ss_family == AF_UNIX);
	CHECK(a->rules.nallow == 5 && a->rules.ndeny == 1);
	if (a->rules.nallow == 5) {
		const struct kg_rule_spec *r = &a->rules.allow[0];

		CHECK_STR(r->name, "payments");
		CHECK(r->nconds == 2);
		CHECK(r->conds[0].what == KG_MATCH_URI && r->conds[0].nvalues == 1);
		CHECK_STR(r->conds[0].values[0], "spiffe://prod.example/payments/*");
		CHECK(r->conds[0].at.line == line_of(example, "uri: \"spiffe://prod.example/payments/*\"") && r->conds[0].at.col == 14);
		CHECK(r->conds[1].what == KG_MATCH_ISSUER);
		CHECK_STR(a->rules.allow[1].name, "allow[1]");
		CHECK(a->rules.allow[1].conds[0].what == KG_MATCH_CN);
		CHECK(a->rules.allow[1].conds[0].nvalues == 2);
		CHECK_STR(a->rules.allow[1].conds[0].values[1], "bob");
		CHECK(a->rules.allow[2].nconds == 2);
		CHECK(a->rules.allow[2].conds[0].what == KG_MATCH_DNS);
		CHECK(a->rules.allow[2].conds[1].what == KG_MATCH_EMAIL);
		CHECK(a->rules.allow[3].conds[0].what == KG_MATCH_SUBJECT);
		CHECK(a->rules.allow[4].conds[0].what == KG_MATCH_FINGERPRINT);
	}
	if (a->rules.ndeny == 1) {
		CHECK_STR(a->rules.deny[0].name, "stolen-laptop");
		CHECK(a->rules.deny[0].conds[0].what == KG_MATCH_SERIAL);
		CHECK_STR(a->rules.deny[0].conds[0].values[0], "1A2B");
	}

	CHECK(l->nsites == 1);
	if (l->nsites == 1) {
		CHECK(l->sites[0].nnames == 1 && l->sites[0].at.line == line_of(example, "- names: [\"admin.example.com\"]"));
		CHECK_STR(l->sites[0].names[0], "admin.example.com");
		s = &l->sites[0].auth;
		CHECK(s->client_auth == KG_AUTH_REQUIRED && s->nclient_cas == 1);
		CHECK_STR(s->client_cas[0].path, "/etc/ktlsgate/admins-ca.pem");
		CHECK(s->ncrls == 1 && s->crl_check == KG_CRL_LEAF && s->crl_missing_allow);
		CHECK(s->verify_depth == 2 && !s->require_client_eku && s->proxy_v2);
		CHECK(s->nbackends == 1);
		CHECK_STR(s->backends[0].addr.text, "127.0.0.1:9090");
		CHECK(s->rules.nallow == 1 && s->rules.allow[0].conds[0].what == KG_MATCH_SUBJECT_REGEX);
		CHECK(s->rules.ndeny == 1 && s->rules.deny[0].conds[0].what == KG_MATCH_CN);
		CHECK_STR(s->rules.deny[0].name, "deny[0]");
	}

	l = &c.listeners[1];
	CHECK_STR(l->name, "internal");
	CHECK(l->at.line == line_of(example, "- name: internal") && l->at.col == 5);
	CHECK(l->nids == 1 && l->ids[0].is_default);
	CHECK(l->auth.nbackends == 1 && l->auth.rules.nallow == 0 && l->nsites == 0);
	CHECK(l->auth.crl_check == KG_CRL_CHAIN && l->auth.verify_depth == 4);
	CHECK(l->ciphers == NULL && l->groups == NULL);
out:
	kg_config_free(&c);
}

/* Sites: a copy of the listener's auth with the site's keys on top. */
static void test_sites(void)
{
	struct kg_config c;
	char err[512];
	const struct kg_listener_spec *l;

	if (load("global:\n"
		 "  ktls: off\n"
		 "  timeouts: { handshake: 500ms, idle: 2m, connect: 1h, drain: 7 }\n"
		 "  log: { format: json }\n"
		 "  cpus: 3\n"
		 L1
		 "    verify_depth: 7\n"
		 "    proxy_protocol: true\n"
		 "    crl: root.crl\n"
		 "    allow: [{ cn: alice }]\n"
		 "    deny: [{ serial: [\"01\", \"02\"] }]\n"
		 "    tls: { min_version: 1.3 }\n"
		 "    sites:\n"
		 "      - names: a.example.com\n"
		 "        backends: [\"127.0.0.1:9\", \"unix:/run/a.sock\"]\n"
		 "        allow: [{ cn: bob }]\n"
		 "      - names: [b.example.com, \"*.b.example.com\"]\n"
		 "        client_auth: optional\n"
		 "        crl: [b1.crl, b2.crl]\n"
		 "  - listen: \"[::1]:9443\"\n"
		 "    ktls: required\n"
		 "    identities:\n"
		 "      - { cert: a.pem, key: a.key }\n"
		 "      - { pkcs12: b.p12, default: true }\n"
		 "    client_auth: none\n"
		 "    backends: \"127.0.0.1:1\"\n", &c, err, sizeof(err)) < 0) {
		fprintf(stderr, "sites: %s\n", err);
		t_failures++;
		return;
	}
	CHECK(c.ktls == KG_KTLS_OFF && c.log_format == KG_LOG_JSON && c.log_file == NULL);
	CHECK(c.handshake_timeout_ms == 500 && c.idle_timeout_ms == 120000);
	CHECK(c.connect_timeout_ms == 3600000 && c.drain_timeout_ms == 7000);
	CHECK(c.ncpus == 1 && c.cpus[0] == 3 && c.workers == 0);
	CHECK(c.max_conns == 10000 && c.kill_revoked_on_crl_update && !c.user);
	/* Defaults: the session cache, nginx's 5 minutes, no tickets. */
	CHECK(c.session_cache == 4096 && c.session_timeout_s == 300 && !c.session_tickets);
	l = &c.listeners[0];
	CHECK_STR(l->name, "listener[0]");
	CHECK(l->ktls == KG_KTLS_OFF); /* from global */
	CHECK(l->min_version == TLS1_3_VERSION && l->max_version == TLS1_3_VERSION);
	CHECK(l->nsites == 2);
	if (l->nsites == 2) {
		const struct kg_auth_spec *a = &l->sites[0].auth, *b = &l->sites[1].auth;

		CHECK(a->nbackends == 2 && a->backends[1].addr.ss.ss_family == AF_UNIX);
		CHECK(a->rules.nallow == 1);
		CHECK_STR(a->rules.allow[0].conds[0].values[0], "bob");
		CHECK(a->rules.ndeny == 1 && a->rules.deny[0].conds[0].nvalues == 2); /* inherited */
		CHECK(a->rules.deny[0].conds[0].values != l->auth.rules.deny[0].conds[0].values);
		CHECK(a->verify_depth == 7 && a->proxy_v2 && a->ncrls == 1);
		CHECK(a->nclient_cas == 1 && a->client_cas[0].path != l->auth.client_cas[0].path);
		CHECK_STR(a->client_cas[0].path, "ca.pem");
		CHECK(a->client_auth == KG_AUTH_REQUIRED);
		CHECK(b->client_auth == KG_AUTH_OPTIONAL && b->ncrls == 2);
		CHECK_STR(b->crls[1].path, "b2.crl");
		CHECK(b->nbackends == 1 && b->rules.nallow == 1);
		CHECK_STR(b->rules.allow[0].conds[0].values[0], "alice");
		CHECK(l->sites[1].nnames == 2);
	}
	CHECK(l->auth.ncrls == 1 && l->auth.rules.nallow == 1 && l->auth.nbackends == 1);
	l = &c.listeners[1];
	CHECK_STR(l->name, "listener[1]");
	CHECK(l->ktls == KG_KTLS_REQUIRED && l->auth.client_auth == KG_AUTH_NONE);
	CHECK(l->nids == 2 && !l->ids[0].is_default && l->ids[1].is_default);

	/* --workers/--log-format/--ktls next to --config: the command line wins */
	{
		struct kg_options o;

		kg_options_defaults(&o);
		kg_config_apply_overrides(&c, &o);
		CHECK(c.workers == 0 && c.log_format == KG_LOG_JSON && c.ktls == KG_KTLS_OFF);
		o.workers = 4;
		o.log_format = KG_LOG_TEXT, o.log_format_set = true;
		o.ktls = KG_KTLS_AUTO, o.ktls_set = true;
		kg_config_apply_overrides(&c, &o);
		CHECK(c.workers == 4 && c.log_format == KG_LOG_TEXT && c.ktls == KG_KTLS_AUTO);
		CHECK(c.listeners[0].ktls == KG_KTLS_AUTO && c.listeners[1].ktls == KG_KTLS_AUTO);
	}
	kg_config_free(&c);
}

/* Everything left out takes the documented default. */
static void test_defaults(void)
{
	struct kg_config c;
	char err[512];
	const struct kg_listener_spec *l;

	if (load(L1, &c, err, sizeof(err)) < 0) {
		fprintf(stderr, "defaults: %s\n", err);
		t_failures++;
		return;
	}
	CHECK(c.workers == 0 && c.ncpus == 0 && !c.cpus && !c.user && !c.group);
	CHECK(c.log_format == KG_LOG_TEXT && !c.log_file && !c.control_socket);
	CHECK(c.ktls == KG_KTLS_AUTO && c.max_conns == 10000 && c.kill_revoked_on_crl_update);
	CHECK(c.handshake_timeout_ms == 10000 && c.idle_timeout_ms == 300000);
	CHECK(c.connect_timeout_ms == 5000 && c.drain_timeout_ms == 30000);
	l = &c.listeners[0];
	CHECK_STR(l->name, "listener[0]");
	CHECK(l->at.line == 2 && l->at.col == 5);
	CHECK(l->naddrs == 1 && l->addrs[0].at.line == 2 && l->addrs[0].at.col == 13);
	CHECK(l->min_version == TLS1_2_VERSION && l->max_version == TLS1_3_VERSION);
	CHECK(!l->ciphers && !l->ciphersuites && !l->groups && l->ktls == KG_KTLS_AUTO);
	CHECK(l->nids == 1 && l->ids[0].is_default && l->ids[0].nsni == 0);
	CHECK(l->ids[0].key.at.line == 3 && l->ids[0].key.at.col == 38);
	CHECK(l->auth.client_auth == KG_AUTH_REQUIRED && l->auth.crl_check == KG_CRL_CHAIN);
	CHECK(!l->auth.crl_missing_allow && l->auth.verify_depth == 4);
	CHECK(l->auth.require_client_eku && !l->auth.proxy_v2 && l->auth.ncrls == 0);
	CHECK(l->auth.rules.nallow == 0 && l->auth.rules.ndeny == 0 && l->nsites == 0);
	kg_config_free(&c);
}

/* record_engine: global default, per-listener override, --record-engine wins. */
static void test_record_engine(void)
{
	struct kg_config c;
	char err[512];

	if (load("global:\n"
		 "  record_engine: openssl\n"
		 "  dpdk_vdevs: [crypto_aesni_mb, \"crypto_null\"]\n"
		 "  dpdk_memory_mb: 256\n"
		 "  dpdk_queue_depth: 1024\n"
		 L1
		 "  - listen: \"127.0.0.1:8444\"\n"
		 "    identities: [{ cert: c.pem, key: c.key }]\n"
		 "    client_ca: ca.pem\n"
		 "    backends: \"127.0.0.1:8080\"\n"
		 "    record_engine: dpdk\n", &c, err, sizeof(err)) < 0) {
		fprintf(stderr, "record_engine: %s\n", err);
		t_failures++;
		return;
	}
	CHECK(c.record_engine == KG_ENGINE_OPENSSL && c.record_engine_at.line == 2);
	CHECK_STR(c.dpdk_vdevs, "crypto_aesni_mb,crypto_null");
	CHECK(c.dpdk_memory_mb == 256 && c.dpdk_queue_depth == 1024);
	CHECK(c.nlisteners == 2);
	CHECK(c.listeners[0].record_engine == KG_ENGINE_OPENSSL);
	CHECK(c.listeners[1].record_engine == KG_ENGINE_DPDK);
	struct kg_options o = { 0 };
	o.record_engine = KG_ENGINE_KTLS, o.record_engine_set = true;
	kg_config_apply_overrides(&c, &o);
	CHECK(c.record_engine == KG_ENGINE_KTLS && c.listeners[1].record_engine == KG_ENGINE_KTLS);
	kg_config_free(&c);

	if (load(L1, &c, err, sizeof(err)) == 0) {
		CHECK(c.record_engine == KG_ENGINE_AUTO && c.dpdk_vdevs == NULL);
		CHECK(c.dpdk_memory_mb == 128 && c.dpdk_queue_depth == 4096);
		CHECK(c.listeners[0].record_engine == KG_ENGINE_AUTO);
		kg_config_free(&c);
	} else {
		t_failures++;
	}
}

static void test_errors(void)
{
	char big[4096];

	ERR("global:\n  wrokers: 2\n" L1, "2:3: wrokers: unknown key, did you mean 'workers'?");
	ERR("global:\n  bananas: 2\n" L1, "2:3: bananas: unknown key");
	ERR("global:\n  workers: -1\n" L1, "2:12: workers: must not be negative");
	ERR("global:\n  workers: \"2\"\n" L1, "2:12: workers: expected an integer, got a string");
	ERR("global:\n  workers: [1, 2]\n" L1, "2:12: workers: expected a single value, got a list");
	ERR("global:\n  workers: 5000\n" L1, "2:12: workers: must be from 0 to 1024");
	ERR("global:\n  ktls: maybe\n" L1, "2:9: ktls: expected auto, off or required, got 'maybe'");
	ERR("global:\n  record_engine: qat\n" L1,
	    "2:18: record_engine: expected auto, ktls, dpdk or openssl, got 'qat'");
	ERR(L1 "    record_engine: [dpdk]\n",
	    "6:20: record_engine: expected a single value, got a list");
	ERR("global:\n  dpdk_vdevs: []\n" L1, "2:15: dpdk_vdevs: must not be an empty list");
	ERR("global:\n  dpdk_vdevs: \"a,b\"\n" L1,
	    "2:15: dpdk_vdevs: expected a vdev name such as crypto_aesni_mb");
	ERR("global:\n  dpdk_memory_mb: 32\n" L1, "2:19: dpdk_memory_mb: must be from 64 to 65536");
	ERR("global:\n  dpdk_memory_mb: 100000\n" L1,
	    "2:19: dpdk_memory_mb: must be from 64 to 65536");
	ERR("global:\n  dpdk_memory_mb: 1G\n" L1,
	    "2:19: dpdk_memory_mb: expected an integer, got a string");
	ERR("global:\n  dpdk_queue_depth: 16\n" L1,
	    "2:21: dpdk_queue_depth: must be from 64 to 32768");
	ERR("global:\n  dpdk_queue_depth: 65536\n" L1,
	    "2:21: dpdk_queue_depth: must be from 64 to 32768");
	ERR("global:\n  dpdk_queue_depth: 1000\n" L1,
	    "2:21: dpdk_queue_depth: must be a power of two, such as 4096");
	ERR("global:\n  dpdk_queue_depth: -1\n" L1, "2:21: dpdk_queue_depth: must not be negative");
	ERR("global:\n  log: { format: xml }\n" L1,
	    "2:18: format: expected text or json, got 'xml'");
	ERR("global:\n  log: { format: text, format: json }\n" L1,
	    "2:24: format: duplicate key (first at line 2)");
	ERR("global:\n  timeouts: { idle: 5x }\n" L1,
	    "2:21: idle: expected a duration such as 500ms, 10s, 5m or 1h, got '5x'");
	ERR("global:\n  timeouts:\n    drain: 0s\n" L1, "3:12: drain: must be greater than zero");
	ERR("global:\n  timeouts: { connect: 200h }\n" L1, "2:24: connect: too long (at most 168h)");
	ERR("global:\n  session_cache: 1000001\n" L1,
	    "2:18: session_cache: must be from 0 to 1000000");
	ERR("global:\n  session_timeout: 1500ms\n" L1,
	    "2:20: session_timeout: whole seconds, at least 1s");
	ERR("global:\n  session_timeout: 169h\n" L1, "2:20: session_timeout: too long (at most 168h)");
	ERR("global:\n  session_tickets: on\n" L1,
	    "2:20: session_tickets: expected true or false, got 'on'");
	ERR("global:\n  kill_revoked_on_crl_update: yes\n" L1,
	    "2:31: kill_revoked_on_crl_update: expected true or false, got 'yes'");
	ERR("global:\n  user:\n" L1, "2:3: user: expected a string, got nothing");
	ERR("global:\n  cpus: [0, 0]\n" L1, "2:13: cpus: CPU 0 is listed twice");
	ERR("global: 3\n" L1, "1:9: global: expected a mapping, got an integer");
	ERR("global:\n  user: \"\xff\"\n" L1, "2:10: yaml: not valid UTF-8");
	ERR("global: [\n" L1, "2:1: yaml: wrongly indented flow sequence");
	ERR("global:\n\tworkers: 1\n" L1, "2:1: yaml: tab character may not be used as indentation");
	ERR("global: &g { workers: 1 }\nx: *g\n", "2:4: yaml: anchors and aliases are not supported");
	ERR("global: { workers: !!int 3 }\n", "1:20: yaml: tags are not supported");
	ERR("---\nglobal: {}\n---\nglobal: {}\n", "3:1: yaml: only one document is allowed");
	ERR("", "1:1: listeners: the file is empty; at least one listener is required");
	ERR("global: {}\n", "1:1: listeners: at least one listener is required");
	ERR("listeners: []\n", "1:12: listeners: at least one listener is required");
	ERR("listeners:\n  - listen: \"127.0.0.1:8443\"\n",
	    "2:5: identities: a listener needs at least one identity");
	ERR("listeners:\n  - identities: [{ cert: c.pem, key: k }]\n",
	    "2:5: listen: a listener needs at least one address");
	ERR("listeners:\n"
	    "  - listen: \"127.0.0.1:8443\"\n"
	    "    identities: [{ cert: c.pem, key: k }]\n"
	    "    client_ca: ca.pem\n",
	    "2:5: backends: a listener needs at least one backend");
	ERR("listeners:\n"
	    "  - listen: \"127.0.0.1:8443\"\n"
	    "    identities: [{ cert: c.pem, key: k }]\n"
	    "    backends: \"127.0.0.1:1\"\n",
	    "2:5: client_ca: required unless client_auth is none");
	ERR(L1 "    listen: \"127.0.0.1:99\"\n", "6:5: listen: duplicate key (first at line 2)");
	ERR("listeners:\n  - listen: [\"127.0.0.1:1\", \"unix:/run/x\"]\n",
	    "2:29: listen: 'unix:/run/x': unix sockets are not allowed here");
	ERR("listeners:\n  - listen: []\n", "2:13: listen: must not be an empty list");
	ERR("listeners:\n  - listen: \"127.0.0.1:99999\"\n",
	    "2:13: listen: '127.0.0.1:99999': expected HOST:PORT or [IPv6]:PORT");
	ERR(L1 "    ktls: sometimes\n",
	    "6:11: ktls: expected auto, off or required, got 'sometimes'");
	ERR(L1 "    tls: { min_version: \"1.3\", max_version: \"1.2\" }\n",
	    "6:25: min_version: is above max_version");
	ERR(L1 "    tls: { min_version: \"1.1\" }\n",
	    "6:25: min_version: expected 1.2 or 1.3, got '1.1'");
	ERR(L1 "    tls: { ciphers: [a, b] }\n",
	    "6:21: ciphers: expected a single value, got a list");
	ERR(L1 "    client_auth: sometimes\n",
	    "6:18: client_auth: expected required, optional or none, got 'sometimes'");
	ERR(L1 "    crl_check: all\n", "6:16: crl_check: expected chain or leaf, got 'all'");
	ERR(L1 "    verify_depth: 0\n", "6:19: verify_depth: must be from 1 to 100");
	ERR(L1 "    crl: { file: x }\n",
	    "6:10: crl: expected a string or a list of strings, got a mapping");
	ERR(L1 "    crl: [a.crl, [b.crl]]\n", "6:18: crl: expected a string, got a list");
	ERR(L0 "    backends: \"nowhere\"\n",
	    "5:15: backends: 'nowhere': expected HOST:PORT or [IPv6]:PORT or unix:/path");
	ERR(L1 "    allow: []\n", "6:12: allow: must not be an empty list");
	ERR(L1 "    allow:\n      - name: empty\n",
	    "7:9: allow: a rule needs at least one condition (subject, cn, ...)");
	ERR("global:\n  cpus: []\n" L1, "2:9: cpus: must not be an empty list");
	ERR("global:\n  cpus: [1, x]\n" L1, "2:13: cpus: expected an integer, got a string");
	ERR(L1 "    allow:\n      - cn: alice\n        uuri: x\n",
	    "8:9: uuri: unknown key, did you mean 'uri'?");
	ERR(L1 "    deny: [{ cn: [] }]\n", "6:18: cn: must not be an empty list");
	ERR(L1 "    deny: { cn: x }\n", "6:11: deny: expected a list, got a mapping");
	ERR("listeners:\n"
	    "  - listen: \"127.0.0.1:8443\"\n"
	    "    identities:\n"
	    "      - { cert: a.pem, key: a.key, default: true }\n"
	    "      - { cert: b.pem, key: b.key, default: true }\n",
	    "5:45: default: only one identity may be the default");
	ERR("listeners:\n"
	    "  - listen: \"127.0.0.1:8443\"\n"
	    "    identities: [{ cert: a.pem, key: a.key, default: 1 }]\n",
	    "3:54: default: expected true or false, got '1'");
	ERR("listeners:\n  - listen: \"127.0.0.1:8443\"\n    identities:\n      - cert: a.pem\n",
	    "4:9: key: required with cert");
	ERR("listeners:\n  - listen: \"127.0.0.1:8443\"\n    identities:\n      - key: a.key\n",
	    "4:14: key: given without cert");
	ERR("listeners:\n  - listen: \"127.0.0.1:8443\"\n    identities:\n"
	    "      - { cert: a.pem, key: a.key, pkcs12: a.p12 }\n",
	    "4:44: pkcs12: not allowed with cert and key");
	ERR("listeners:\n  - listen: \"127.0.0.1:8443\"\n    identities:\n"
	    "      - { passphrase_file: p }\n",
	    "4:9: cert: an identity needs cert and key, or pkcs12");
	ERR("listeners:\n  - listen: \"127.0.0.1:8443\"\n    identities: [{ cert: \"\", key: k }]\n",
	    "3:26: cert: must not be empty");
	ERR("listeners:\n  - listen: \"127.0.0.1:8443\"\n    identities: [{ cert: \"a\\0b\", key: k }]\n",
	    "3:26: cert: must not contain a NUL byte");
	ERR("listeners:\n  - listen: \"127.0.0.1:8443\"\n"
	    "    identities: [{ cert: a, key: k, sni: \"a.*.com\" }]\n",
	    "3:42: sni: '*' is only allowed as the whole first label (*.example.com)");
	ERR(L1 "    sites:\n      - backends: \"127.0.0.1:3\"\n",
	    "7:9: names: a site needs the SNI names it applies to");
	ERR(L1 "    sites:\n      - names: a.example.com\n      - names: [b.example.com, a.example.com]\n",
	    "8:32: names: 'a.example.com' is already served by site 1");
	ERR(L1 "    sites:\n      - names: x.example.com\n        listen: \"127.0.0.1:5\"\n",
	    "8:9: listen: unknown key");
	ERR(L1 "    sites:\n      - names: x.example.com\n        client_auth: reqired\n",
	    "8:22: client_auth: expected required, optional or none, got 'reqired'");
	ERR(L1 "  - name: listener[0]\n    listen: \"127.0.0.1:1\"\n"
	    "    identities: [{ cert: c.pem, key: c.key }]\n"
	    "    client_ca: ca.pem\n    backends: \"127.0.0.1:8080\"\n",
	    "6:11: name: listener name 'listener[0]' is used twice");
	ERR(L1 "    client_auth: none\n    deny: [{ cn: x }]\n",
	    "2:5: client_auth: is none, so allow and deny rules cannot match");
	ERR("global: {}\nlisteners: x\nglobal: {}\n", "3:1: global: duplicate key (first at line 1)");
	ERR("[1, 2]\n", "1:1: config: expected a mapping, got a list");
	ERR("? [a]\n: b\n", "1:3: config: keys must be strings, got a list");

	/* an over-long unknown key is cut, and stays on one line */
	snprintf(big, sizeof(big), "global:\n  \"%0300d\\nx\": 1\n", 7);
	{
		struct kg_config c;
		char err[512];

		CHECK(load(big, &c, err, sizeof(err)) < 0);
		CHECK(!strchr(err, '\n'));
		CHECK_CONTAINS(err, "...: unknown key");
	}
}

/* backend_tls: parsed per listener, inherited by sites as a copy and
 * replaced as a whole by a site's own block; listen_tls: false listeners. */
static void test_backend_tls(void)
{
	struct kg_config c;
	char err[512];
	const struct kg_backend_tls *b;

	CHECK(load(L1 "    backend_tls:\n"
		      "      client_cert: cc.pem\n"
		      "      client_key: cc.key\n"
		      "      ca: [up-ca.pem, up-ca2.pem]\n"
		      "      crl: up.crl\n"
		      "      verify_name: api.internal\n"
		      "      max_version: \"1.2\"\n"
		      "    sites:\n"
		      "      - names: a.example\n"
		      "      - names: b.example\n"
		      "        backend_tls: { pkcs12: id.p12, passphrase_file: pw, ca: x.pem, verify_name: 10.0.0.1 }\n",
		   &c, err, sizeof(err)) == 0);
	if (!err[0]) {
		b = c.listeners[0].auth.backend_tls;
		CHECK(b != NULL);
		CHECK_STR(b->id.cert.path, "cc.pem");
		CHECK_STR(b->id.key.path, "cc.key");
		CHECK(b->ncas == 2 && b->ncrls == 1);
		CHECK_STR(b->verify_name, "api.internal");
		CHECK(b->min_version == TLS1_2_VERSION && b->max_version == TLS1_2_VERSION);
		CHECK(b->id.cert.at.line == 7);
		b = c.listeners[0].sites[0].auth.backend_tls;
		CHECK(b && b != c.listeners[0].auth.backend_tls);
		CHECK(b && strcmp(b->id.cert.path, "cc.pem") == 0 && b->ncas == 2);
		b = c.listeners[0].sites[1].auth.backend_tls;
		CHECK(b && !b->id.cert.path && strcmp(b->id.pkcs12.path, "id.p12") == 0);
		CHECK(b && b->ncas == 1 && strcmp(b->verify_name, "10.0.0.1") == 0);
		CHECK(!c.listeners[0].plain);
	} else {
		fprintf(stderr, "backend_tls: %s\n", err);
		t_failures++;
	}
	kg_config_free(&c);

	CHECK(load("listeners:\n"
		   "  - listen: \"127.0.0.1:8080\"\n"
		   "    listen_tls: false\n"
		   "    backends: \"10.0.0.1:443\"\n"
		   "    backend_tls: { client_cert: c, client_key: k, ca: ca, verify_name: svc }\n",
		   &c, err, sizeof(err)) == 0);
	CHECK(err[0] || (c.listeners[0].plain && c.listeners[0].nids == 0 &&
			 c.listeners[0].auth.client_auth == KG_AUTH_NONE));
	kg_config_free(&c);

#define BT L1 "    backend_tls:\n"
	ERR(BT "      client_cert: c\n      ca: ca\n      verify_name: x\n",
	    "7:7: client_key: required with client_cert");
	ERR(BT "      client_key: k\n      ca: ca\n      verify_name: x\n",
	    "7:19: client_key: given without client_cert");
	ERR(BT "      pkcs12: p\n      client_cert: c\n      ca: ca\n      verify_name: x\n",
	    "7:15: pkcs12: not allowed with client_cert and client_key");
	ERR(BT "      verify_name: x\n", "7:7: ca: required: the CA the backend's certificate must chain to");
	ERR(BT "      ca: ca\n", "7:7: verify_name: required: the name the backend's certificate must carry");
	ERR(BT "      ca: ca\n      verify_name: \"\"\n",
	    "8:20: verify_name: must not be empty");
	ERR(BT "      ca: ca\n      verify_name: x\n      min_version: \"1.3\"\n      max_version: \"1.2\"\n",
	    "9:20: min_version: is above max_version");
	ERR(BT "      ca: ca\n      verfy_name: x\n",
	    "8:7: verfy_name: unknown key, did you mean 'verify_name'?");
	ERR(BT "      ca: ca\n      verify_name: x\n      passphrase_file: pw\n",
	    "9:24: passphrase_file: given without client_key or pkcs12");
	ERR(L1 "    backend_tls: yes\n", "6:18: backend_tls: expected a mapping, got a string");
#undef BT
#define PL "listeners:\n  - listen: \"127.0.0.1:8080\"\n    listen_tls: false\n" \
	   "    backends: \"10.0.0.1:443\"\n"
	ERR(PL, "2:5: backend_tls: required with listen_tls: false (or a tls block on every backend)");
	ERR(PL "    client_ca: ca.pem\n", "5:16: client_ca: not used with listen_tls: false");
	ERR(PL "    client_auth: required\n", "5:18: client_auth: must be none with listen_tls: false");
	ERR(PL "    identities: [{ cert: c.pem, key: c.key }]\n",
	    "5:17: identities: not used with listen_tls: false");
	ERR("listeners:\n  - listen: \"127.0.0.1:8080\"\n    listen_tls: no\n",
	    "3:17: listen_tls: expected true or false, got 'no'");
#undef PL
}

/* backends items as mappings: a tls block of their own (deep-copied into
 * sites), tls: false, inheritance through kg_backend_tls_of, session_cache. */
static void test_backend_items(void)
{
	struct kg_config c;
	char err[512];
	const struct kg_auth_spec *a, *s;

	CHECK(load("listeners:\n"
		   "  - listen: \"127.0.0.1:8443\"\n"
		   "    identities: [{ cert: s.pem, key: s.key }]\n"
		   "    client_ca: ca.pem\n"
		   "    backend_tls: { ca: up.pem, verify_name: api, session_cache: 8 }\n"
		   "    backends:\n"
		   "      - \"10.0.0.5:443\"\n"
		   "      - address: \"10.0.0.7:443\"\n"
		   "        tls: { client_cert: c, client_key: k, ca: db.pem, verify_name: db,\n"
		   "               session_cache: 0 }\n"
		   "      - { address: \"unix:/run/x.sock\", tls: false }\n"
		   "    sites:\n"
		   "      - names: a.example\n",
		   &c, err, sizeof(err)) == 0);
	if (err[0]) {
		fprintf(stderr, "backend items: %s\n", err);
		t_failures++;
		kg_config_free(&c);
		return;
	}
	a = &c.listeners[0].auth;
	CHECK(a->nbackends == 3);
	CHECK_STR(a->backends[1].addr.text, "10.0.0.7:443");
	CHECK(a->backends[1].at.line == 8);
	CHECK(kg_backend_tls_of(a, 0) == a->backend_tls && a->backend_tls->session_cache == 8);
	CHECK(kg_backend_tls_of(a, 1) == a->backends[1].tls);
	CHECK(a->backends[1].tls && strcmp(a->backends[1].tls->verify_name, "db") == 0 &&
	      a->backends[1].tls->session_cache == 0);
	CHECK(a->backends[2].plain && kg_backend_tls_of(a, 2) == NULL);
	s = &c.listeners[0].sites[0].auth;
	CHECK(s->nbackends == 3 && s->backends[1].tls && s->backends[1].tls != a->backends[1].tls);
	CHECK(s->backends[1].tls && strcmp(s->backends[1].tls->id.cert.path, "c") == 0);
	CHECK(s->backends[2].plain);
	kg_config_free(&c);

	CHECK(load(L1 "    backend_tls: { ca: up.pem, verify_name: api }\n", &c, err, sizeof(err)) == 0);
	CHECK(err[0] || c.listeners[0].auth.backend_tls->session_cache == KG_UP_SESSION_CACHE_DEFAULT);
	kg_config_free(&c);
}

static void test_missing_file(void)
{
	struct kg_config c;
	char err[512];

	CHECK(kg_config_load_yaml("/nonexistent/ktlsgate.yaml", &c, err, sizeof(err)) < 0);
	CHECK_STR(err, "/nonexistent/ktlsgate.yaml: cannot open: No such file or directory");
	kg_config_free(&c);
}

int main(int argc, char **argv)
{
	const char *tmp = getenv("TMPDIR");
	int fd;

	snprintf(path, sizeof(path), "%s/kgcfg-XXXXXX", tmp && strlen(tmp) < 40 ? tmp : "/tmp");
	fd = mkstemp(path);
	if (fd < 0) {
		perror("mkstemp");
		return T_EXIT_FAIL;
	}
	close(fd);
	if (argc > 1)
		test_example(argv[1]);
	test_sites();
	test_defaults();
	test_errors();
	test_backend_tls();
	test_backend_items();
	test_missing_file();
	test_record_engine();
	unlink(path);
	return T_DONE();
}
