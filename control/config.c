/* The configuration model's defaults, its formatting of "where", and freeing. */
#include "config.h"

#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kg_auth_defaults(struct kg_auth_spec *a)
{
	memset(a, 0, sizeof(*a));
	a->client_auth = KG_AUTH_REQUIRED;
	a->crl_check = KG_CRL_CHAIN;
	a->verify_depth = 4;
	a->require_client_eku = true;
}

void kg_config_defaults(struct kg_config *c)
{
	memset(c, 0, sizeof(*c));
	c->log_format = KG_LOG_TEXT;
	c->ktls = KG_KTLS_AUTO;
	c->max_conns = 10000;
	c->handshake_timeout_ms = 10000;
	c->idle_timeout_ms = 300000;
	c->connect_timeout_ms = 5000;
	c->drain_timeout_ms = 30000;
	c->kill_revoked_on_crl_update = true;
}

void kg_where_format(const struct kg_where *w, char *buf, size_t cap)
{
	if (!w->file)
		snprintf(buf, cap, "%s", w->key ? w->key : "command line");
	else
		snprintf(buf, cap, "%s:%u:%u: %s", w->file, w->line, w->col, w->key ? w->key : "");
}

void kg_file_format(const struct kg_file *f, char *buf, size_t cap)
{
	char where[512];

	kg_where_format(&f->at, where, sizeof(where));
	snprintf(buf, cap, f->at.file ? "%s: %s" : "%s %s", where, f->path ? f->path : "");
}

static void free_strv(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static void free_rule_list(struct kg_rule_spec *r, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < r[i].nconds; j++)
			free_strv(r[i].conds[j].values, r[i].conds[j].nvalues);
		free(r[i].conds);
		free(r[i].name);
	}
	free(r);
}

static void free_files(struct kg_file *f, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(f[i].path);
	free(f);
}

static void free_auth(struct kg_auth_spec *a)
{
	free_files(a->client_cas, a->nclient_cas);
	free_files(a->crls, a->ncrls);
	free_rule_list(a->rules.allow, a->rules.nallow);
	free_rule_list(a->rules.deny, a->rules.ndeny);
	free(a->backends);
	memset(a, 0, sizeof(*a));
}

static void free_identity(struct kg_identity_spec *id)
{
	free(id->cert.path);
	free(id->key.path);
	free(id->pkcs12.path);
	free(id->passphrase_file.path);
	free_strv(id->sni, id->nsni);
}

static void free_listener(struct kg_listener_spec *l)
{
	free(l->name);
	free(l->addrs);
	free(l->ciphers);
	free(l->ciphersuites);
	free(l->groups);
	for (size_t i = 0; i < l->nids; i++)
		free_identity(&l->ids[i]);
	free(l->ids);
	free_auth(&l->auth);
	for (size_t i = 0; i < l->nsites; i++) {
		free_strv(l->sites[i].names, l->sites[i].nnames);
		free_auth(&l->sites[i].auth);
	}
	free(l->sites);
}

void kg_config_free(struct kg_config *c)
{
	for (size_t i = 0; i < c->nlisteners; i++)
		free_listener(&c->listeners[i]);
	free(c->listeners);
	free(c->cpus);
	free(c->user);
	free(c->group);
	free(c->log_file);
	free(c->control_socket);
	free(c->file);
	memset(c, 0, sizeof(*c));
}
