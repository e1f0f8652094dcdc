/* Who may pass: allow/deny rules compiled once per configuration generation
 * and matched against the client's leaf certificate inside the handshake. */
#ifndef KG_POLICY_H
#define KG_POLICY_H
#include <openssl/x509.h>
#include <stdbool.h>
#include <stddef.h>

#include "config.h"

struct kg_policy; /* immutable once compiled; safe to share between workers */

/* Compiles the rules (regexes, normalised serials/fingerprints, lowercase
 * names). NULL with "FILE:LINE:COL: key: reason" in err for a bad value
 * (a regex that does not compile, a fingerprint that is not 32 hex bytes),
 * the value quoted after the reason; a rule without conditions is an error
 * too. How each kind matches, and the DN text format: policy.c's header. */
struct kg_policy *kg_policy_compile(const struct kg_rules *rules, char *err, size_t errlen);
void kg_policy_free(struct kg_policy *p);
/* True when there is no rule at all (every verified client passes). */
bool kg_policy_empty(const struct kg_policy *p);

/* Checks a verified leaf. Returns true to let it pass. When refused, *rule
 * names the rule: the deny rule that matched, "no allow rule matched", or
 * "invalid certificate extensions" (a SAN or extension that cannot be read
 * safely: fail closed). When passed, *rule is the allow rule that matched,
 * or NULL when there are no allow rules. rule may be NULL; *rule lives as
 * long as p. A NULL leaf (no client certificate) matches no condition.
 * Allocates only for the facts the rules need (DN text, DER to hash). */
bool kg_policy_check(const struct kg_policy *p, X509 *leaf, const char **rule);

/* Facts about a certificate the log, the policy and PROXY v2 share. */
/* The first SAN URI that starts with "spiffe://", or false. */
bool kg_cert_spiffe_id(X509 *x, char *buf, size_t cap);
/* SHA-256 of the DER as 64 lowercase hex characters. */
void kg_cert_fingerprint_hex(X509 *x, char *buf, size_t cap);
#endif
