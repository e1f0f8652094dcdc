/* ktlsgatectl policy set: replace a listener's (or one site's) allow and deny
 * rules at run time. The rules file is JSON with the YAML file's rule shape:
 * {"allow": [{"name": "ops", "cn": ["alice"]}], "deny": [{"serial": "1A2B"}]} */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "table.h"

/* Checks the file's shape; the daemon judges the rules themselves. */
static int check_rules(const char *file, json_t *doc)
{
	const char *key;
	json_t *v, *rule;
	size_t i;

	if (!json_is_object(doc)) {
		ctl_err("%s: expected an object {\"allow\": [...], \"deny\": [...]}", file);
		return -1;
	}
	json_object_foreach(doc, key, v) {
		if (strcmp(key, "allow") && strcmp(key, "deny")) {
			ctl_err("%s: unknown key '%s' (expected allow, deny)", file, key);
			return -1;
		}
		if (!json_is_array(v)) {
			ctl_err("%s: %s: expected a list of rules", file, key);
			return -1;
		}
		json_array_foreach(v, i, rule) {
			if (!json_is_object(rule)) {
				ctl_err("%s: %s[%zu]: a rule is an object, e.g. {\"cn\": \"alice\"}", file, key, i);
				return -1;
			}
		}
	}
	return 0;
}

static json_t *load_rules(const char *file)
{
	json_error_t e;
	size_t len;
	char *text = ctl_read_file(file, CTL_MAX_REQUEST, &len);

	if (!text)
		return NULL;
	json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &e);
	free(text);
	if (!doc) {
		ctl_err("%s:%d:%d: %s", file, e.line, e.column, e.text);
		return NULL;
	}
	if (check_rules(file, doc) < 0) {
		json_decref(doc);
		return NULL;
	}
	return doc;
}

static int print_policy(json_t *r)
{
	json_t *gen = json_object_get(r, "generation");

	if (json_is_integer(gen))
		printf("policy replaced: generation %" JSON_INTEGER_FORMAT "\n", json_integer_value(gen));
	else
		puts("policy replaced");
	return CTL_EXIT_OK;
}

int policy_set_main(const struct ctl_ctx *ctx, const struct ctl_command *cmd, int argc, char **argv)
{
	const char *pos[2], *site = NULL;
	int npos = 0;

	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--site") == 0) {
			if (++i == argc)
				return ctl_usage(cmd, "--site needs a NAME");
			site = argv[i];
		} else if (strncmp(argv[i], "--site=", 7) == 0) {
			site = argv[i] + 7;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			return ctl_usage(cmd, "unknown option %s", argv[i]);
		} else if (npos == 2) {
			return ctl_usage(cmd, "unexpected argument '%s'", argv[i]);
		} else {
			pos[npos++] = argv[i];
		}
	}
	if (npos < 2)
		return ctl_usage(cmd, npos ? "needs a rules FILE (- for standard input)" : "needs LISTENER and a rules FILE");
	if (site && !site[0])
		return ctl_usage(cmd, "--site needs a NAME");

	json_t *rules = load_rules(pos[1]);
	if (!rules)
		return CTL_EXIT_USAGE;
	json_t *allow = json_object_get(rules, "allow"), *deny = json_object_get(rules, "deny");
	/* A missing list is sent empty: the request always says both. */
	allow = allow ? json_incref(allow) : json_array();
	deny = deny ? json_incref(deny) : json_array();
	json_t *req = json_pack("{s:s, s:s, s:o, s:o, s:o}", "cmd", "policy set", "listener", pos[0],
				"site", site ? json_string(site) : json_null(), "allow", allow, "deny", deny);
	json_decref(rules);
	if (!req) {
		ctl_err("LISTENER and --site NAME must be UTF-8 text");
		return CTL_EXIT_USAGE;
	}
	return ctl_request(ctx, req, print_policy);
}
