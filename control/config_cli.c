/* The quick command line (--listen --cert --key --client-ca --crl --backend)
 * expressed as a configuration with one listener and no per-SNI sites. */
#include "config.h"

#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct kg_where flag_where(const char *flag)
{
	return (struct kg_where){ .key = flag };
}

static int set_file(struct kg_file *f, const char *flag, const char *path)
{
	f->path = strdup(path);
	f->at = flag_where(flag);
	return f->path ? 0 : -1;
}

static struct kg_file *files_from(const char *flag, const char *const *paths, size_t n)
{
	struct kg_file *f = calloc(n ? n : 1, sizeof(*f));

	for (size_t i = 0; f && i < n; i++)
		if (set_file(&f[i], flag, paths[i]) < 0)
			return NULL; /* the caller frees what was set via the config */
	return f;
}

static struct kg_addr_spec *addrs_from(const char *flag, const struct kg_addr *a, size_t n)
{
	struct kg_addr_spec *s = calloc(n ? n : 1, sizeof(*s));

	for (size_t i = 0; s && i < n; i++) {
		s[i].addr = a[i];
		s[i].at = flag_where(flag);
	}
	return s;
}

static struct kg_backend_spec *backends_from(const struct kg_addr *a, size_t n)
{
	struct kg_backend_spec *s = calloc(n ? n : 1, sizeof(*s));

	for (size_t i = 0; s && i < n; i++) {
		s[i].addr = a[i];
		s[i].at = flag_where("--backend");
	}
	return s;
}

static int identities_from(const struct kg_options *o, struct kg_listener_spec *l)
{
	l->ids = calloc(o->ncerts, sizeof(*l->ids));
	if (!l->ids)
		return -1;
	l->nids = o->ncerts;
	for (size_t i = 0; i < o->ncerts; i++) {
		struct kg_identity_spec *id = &l->ids[i];
		id->is_default = true; /* no SNI names: every identity serves every name */
		id->at = flag_where("--cert");
		if (set_file(&id->cert, "--cert", o->ids[i].cert_file) < 0 ||
		    set_file(&id->key, "--key", o->ids[i].key_file) < 0)
			return -1;
	}
	return 0;
}

static const struct {
	const char *flag;
	enum kg_match what;
	bool deny;
} cli_rules[] = {
	[KG_CLI_ALLOW_CN] = { "--allow-cn", KG_MATCH_CN, false },
	[KG_CLI_ALLOW_DNS] = { "--allow-dns", KG_MATCH_DNS, false },
	[KG_CLI_ALLOW_URI] = { "--allow-uri", KG_MATCH_URI, false },
	[KG_CLI_ALLOW_SUBJECT] = { "--allow-subject", KG_MATCH_SUBJECT_REGEX, false },
	[KG_CLI_DENY_SERIAL] = { "--deny-serial", KG_MATCH_SERIAL, true },
};

/* One rule of one condition, named after the flag that made it. */
static int rule_from(const struct kg_cli_rule *r, struct kg_rule_spec *out)
{
	const char *flag = cli_rules[r->kind].flag;
	char name[600];

	snprintf(name, sizeof(name), "%s %s", flag, r->value);
	out->name = strdup(name);
	out->at = flag_where(flag);
	out->conds = calloc(1, sizeof(*out->conds));
	if (!out->name || !out->conds)
		return -1;
	out->nconds = 1;
	out->conds->what = cli_rules[r->kind].what;
	out->conds->at = out->at;
	out->conds->values = calloc(1, sizeof(char *));
	if (!out->conds->values || !(out->conds->values[0] = strdup(r->value)))
		return -1;
	out->conds->nvalues = 1;
	return 0;
}

static int rules_from(const struct kg_options *o, struct kg_rules *rules)
{
	rules->allow = calloc(o->nrules + 1, sizeof(*rules->allow));
	rules->deny = calloc(o->nrules + 1, sizeof(*rules->deny));
	if (!rules->allow || !rules->deny)
		return -1;
	for (size_t i = 0; i < o->nrules; i++) {
		bool deny = cli_rules[o->rules[i].kind].deny;
		struct kg_rule_spec *r = deny ? &rules->deny[rules->ndeny++]
					      : &rules->allow[rules->nallow++];
		if (rule_from(&o->rules[i], r) < 0)
			return -1;
	}
	return 0;
}

static int auth_from(const struct kg_options *o, struct kg_auth_spec *a)
{
	const char *ca = o->client_ca_file;

	kg_auth_defaults(a);
	a->verify_depth = o->verify_depth;
	a->client_cas = files_from("--client-ca", &ca, 1);
	a->nclient_cas = 1;
	a->crls = files_from("--crl", o->crl_files, o->ncrls);
	a->ncrls = o->ncrls;
	a->backends = backends_from(o->backends, o->nbackends);
	a->nbackends = o->nbackends;
	if (!a->client_cas || !a->crls || !a->backends)
		return -1;
	return rules_from(o, &a->rules);
}

int kg_config_from_options(const struct kg_options *o, struct kg_config *c, char *err,
			   size_t errlen)
{
	struct kg_listener_spec *l;

	kg_config_defaults(c);
	c->workers = o->workers;
	c->log_format = o->log_format;
	c->ktls = o->ktls;
	c->record_engine = o->record_engine;
	c->record_engine_at = (struct kg_where){ .key = "--record-engine" };
	c->max_conns = o->max_conns;
	c->max_conns_per_source = o->max_conns_per_source;
	c->session_tickets = o->session_tickets;
	c->handshake_timeout_ms = o->handshake_timeout_ms;
	c->idle_timeout_ms = o->idle_timeout_ms;
	c->connect_timeout_ms = o->connect_timeout_ms;
	c->drain_timeout_ms = o->drain_timeout_ms;
	c->listeners = l = calloc(1, sizeof(*l));
	if (!l)
		goto oom;
	c->nlisteners = 1;
	l->name = strdup("default");
	l->min_version = TLS1_2_VERSION;
	l->max_version = TLS1_3_VERSION;
	l->ktls = o->ktls;
	l->record_engine = o->record_engine;
	l->at = flag_where("--listen");
	l->addrs = addrs_from("--listen", o->listen, o->nlisten);
	l->naddrs = o->nlisten;
	if (!l->name || !l->addrs || identities_from(o, l) < 0 || auth_from(o, &l->auth) < 0)
		goto oom;
	return 0;
oom:
	kg_config_free(c);
	snprintf(err, errlen, "out of memory");
	return -1;
}
