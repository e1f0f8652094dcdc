/* The configuration model: what the YAML file (config_yaml.c) or the quick
 * command line (config_cli.c) says, before anything is loaded. Every later
 * stage (TLS contexts, policy, workers) is built from this, and every value
 * remembers where it was written so a later failure (a missing file, a key
 * that does not match) is still reported as FILE:LINE:COL: key: reason. */
#ifndef KG_CONFIG_H
#define KG_CONFIG_H
#include <stdbool.h>
#include <stddef.h>

#include "addr.h"
#include "log.h"
#include "options.h"

/* Where a value came from: a YAML position, or a command-line flag.
 * Ownership: every char * in this model is malloc'd and freed by
 * kg_config_free, except kg_where's, which point at kg_config.file and at
 * string literals (key names), and so live as long as the configuration. */
struct kg_where {
	const char *file; /* NULL: command line, then key is the flag ("--cert") */
	unsigned line, col;
	const char *key;  /* the key as written: "cert", "crl_check", ... */
};

struct kg_file {
	char *path;
	struct kg_where at;
};

enum kg_client_auth { KG_AUTH_REQUIRED, KG_AUTH_OPTIONAL, KG_AUTH_NONE };
enum kg_crl_check { KG_CRL_CHAIN, KG_CRL_LEAF };

/* What a rule condition looks at in the client's leaf certificate. */
enum kg_match {
	KG_MATCH_SUBJECT,       /* subject DN, RFC 2253 text, exact */
	KG_MATCH_SUBJECT_REGEX, /* POSIX extended regex over the RFC 2253 subject */
	KG_MATCH_CN,            /* any subject commonName, exact */
	KG_MATCH_DNS,           /* any SAN dNSName: exact, or "*.example.com" (one label) */
	KG_MATCH_URI,           /* any SAN URI: exact, or prefix when the value ends in '*' */
	KG_MATCH_EMAIL,         /* any SAN rfc822Name, exact (case-insensitive domain) */
	KG_MATCH_ISSUER,        /* issuer DN, RFC 2253 text, exact */
	KG_MATCH_SERIAL,        /* serial number, hex, case and leading zeros ignored */
	KG_MATCH_FINGERPRINT,   /* SHA-256 of the DER, hex, ':' separators allowed */
	KG_MATCH_COUNT
};

/* One condition: matches when the certificate matches any of the values. */
struct kg_cond {
	enum kg_match what;
	char **values;
	size_t nvalues;
	struct kg_where at;
};

/* A rule matches when all of its conditions match. */
struct kg_rule_spec {
	char *name; /* logged as rule=NAME; "allow[N]"/"deny[N]" when not named */
	struct kg_cond *conds;
	size_t nconds;
	struct kg_where at;
};

/* deny first; then, if any allow rule exists, one must match. */
struct kg_rules {
	struct kg_rule_spec *allow, *deny;
	size_t nallow, ndeny;
};

struct kg_addr_spec {
	struct kg_addr addr;
	struct kg_where at;
};

struct kg_backend_tls;

/* One entry of backends: an address, and maybe TLS settings of its own. */
struct kg_backend_spec {
	struct kg_addr addr;
	struct kg_where at;
	struct kg_backend_tls *tls; /* tls: {...}; NULL: the auth block's backend_tls */
	bool plain;                 /* tls: false - plain TCP even with backend_tls */
};

/* Client authentication and routing: set per listener, overridable per SNI. */
struct kg_auth_spec {
	enum kg_client_auth client_auth;
	struct kg_file *client_cas; /* PEM bundles; every certificate must be a CA */
	size_t nclient_cas;
	struct kg_file *crls;       /* one per CA is the expectation */
	size_t ncrls;
	enum kg_crl_check crl_check;
	bool crl_missing_allow;     /* chain mode: a CA without a CRL is not an error */
	unsigned verify_depth;
	bool require_client_eku;    /* openssl verify -purpose sslclient */
	struct kg_rules rules;
	struct kg_backend_spec *backends;
	size_t nbackends;
	bool proxy_v2;
	struct kg_backend_tls *backend_tls; /* NULL: plain TCP to the backends (unless
					     * a backend has its own tls) */
};

/* A server certificate chain and its key, and the SNI names it serves. */
struct kg_identity_spec {
	struct kg_file cert;            /* PEM chain, leaf first; unset with pkcs12 */
	struct kg_file key;             /* PEM key, maybe encrypted */
	struct kg_file pkcs12;          /* instead of cert + key */
	struct kg_file passphrase_file; /* for an encrypted key or the PKCS#12 bundle */
	char **sni;                     /* exact names or "*.example.com" */
	size_t nsni;
	bool is_default;                /* served when no name matches (or no SNI) */
	struct kg_where at;
};

/* TLS towards the backends (backend_tls:): our client certificate, how the
 * backend's certificate is verified, and the protocol policy. */
struct kg_backend_tls {
	struct kg_identity_spec id; /* client_cert + client_key, or pkcs12 (+ passphrase_file) */
	struct kg_file *cas;        /* PEM bundles the backend's chain must end in */
	size_t ncas;
	struct kg_file *crls;       /* checked for the backend's leaf */
	size_t ncrls;
	char *verify_name;          /* SNI + name (or IP) the backend's certificate must carry */
	int min_version, max_version;
	char *ciphers, *ciphersuites;
	unsigned session_cache;     /* sessions kept per backend and worker; 0: no resumption */
	struct kg_where at;
};

#define KG_UP_SESSION_CACHE_DEFAULT 64
#define KG_UP_SESSION_CACHE_MAX 4096

/* The TLS settings a backend is reached with: its own tls block, the auth
 * block's backend_tls, or NULL for plain TCP. */
const struct kg_backend_tls *kg_backend_tls_of(const struct kg_auth_spec *a, size_t backend);

/* Settings for the clients that ask (SNI) for one of names. */
struct kg_site_spec {
	char **names; /* exact or "*.example.com" */
	size_t nnames;
	struct kg_auth_spec auth; /* the listener's auth with this site's keys on top */
	struct kg_where at;
};

struct kg_listener_spec {
	char *name; /* for logs and the control socket; "listener[N]" when not named */
	struct kg_addr_spec *addrs; /* where to listen */
	size_t naddrs;
	int min_version, max_version;  /* TLS1_2_VERSION / TLS1_3_VERSION */
	char *ciphers;                 /* TLS 1.2 cipher list; NULL: the modern default */
	char *ciphersuites;            /* TLS 1.3 suites; NULL: all three AEADs */
	char *groups;                  /* NULL: X25519:P-256:P-384 */
	struct kg_identity_spec *ids;
	size_t nids;
	struct kg_auth_spec auth;
	struct kg_site_spec *sites;
	size_t nsites;
	enum kg_ktls_mode ktls;
	bool plain;                    /* listen_tls: false - plain TCP in (egress mode) */
	enum kg_record_engine record_engine;
	struct kg_where at;
};

/* The DPDK engine's EAL memory and queue-pair depth (dataplane/dpdk_eal.c). */
#define KG_DPDK_MEMORY_MB_DEFAULT 128
#define KG_DPDK_MEMORY_MB_MIN 64
#define KG_DPDK_MEMORY_MB_MAX 65536
#define KG_DPDK_QUEUE_DEPTH_DEFAULT 4096
#define KG_DPDK_QUEUE_DEPTH_MIN 64     /* a power of two: the PMDs' rings */
#define KG_DPDK_QUEUE_DEPTH_MAX 32768

struct kg_config {
	char *file;        /* NULL when built from the command line */
	unsigned workers;  /* 0: one per allowed CPU */
	int *cpus;         /* pin workers to these CPUs; NULL: all allowed CPUs */
	size_t ncpus;
	char *user, *group; /* drop to these after binding; NULL: stay */
	enum kg_log_format log_format;
	char *log_file;     /* NULL: stderr */
	char *control_socket;
	struct kg_addr_spec metrics_listen; /* Prometheus over HTTP; only when metrics_http */
	bool metrics_http;
	enum kg_ktls_mode ktls;
	enum kg_record_engine record_engine;
	char *dpdk_vdevs;   /* EAL --vdev list, comma-separated; NULL: crypto_aesni_mb */
	unsigned dpdk_memory_mb;   /* EAL -m (no hugepages): pools and DMA-safe buffers */
	unsigned dpdk_queue_depth; /* descriptors per cryptodev queue pair */
	struct kg_where record_engine_at;
	unsigned max_conns; /* per worker */
	unsigned max_conns_per_source; /* live connections per client IP, whole process; 0: no cap */
	unsigned handshake_timeout_ms, idle_timeout_ms, connect_timeout_ms, drain_timeout_ms;
	unsigned ticket_key_rotation_ms; /* session ticket key lifetime; the previous key
					  * still decrypts for one more interval */
	unsigned session_cache;     /* sessions kept for resumption, whole process; 0: none */
	unsigned session_timeout_s; /* how long a session (cached or ticket) resumes */
	bool session_tickets;       /* stateless tickets instead of the session cache */
	bool kill_revoked_on_crl_update;
	struct kg_listener_spec *listeners;
	size_t nlisteners;
};

/* Defaults every listener, site and the global section start from. */
void kg_config_defaults(struct kg_config *c);
void kg_auth_defaults(struct kg_auth_spec *a);
void kg_config_free(struct kg_config *c);
/* Deep copy (a site starts from its listener's auth); on failure dst is left
 * empty and -1 is returned. */
int kg_auth_copy(struct kg_auth_spec *dst, const struct kg_auth_spec *src);
void kg_auth_free(struct kg_auth_spec *a);
void kg_rule_list_free(struct kg_rule_spec *r, size_t n);
void kg_file_list_free(struct kg_file *f, size_t n);
void kg_identity_spec_free(struct kg_identity_spec *id);
void kg_backend_tls_free(struct kg_backend_tls *b);
void kg_backend_list_free(struct kg_backend_spec *b, size_t n);

/* Parses and validates the YAML file (syntax, keys, types, values; not the
 * files it names). On error returns -1 with "FILE:LINE:COL: key: reason". */
int kg_config_load_yaml(const char *path, struct kg_config *c, char *err, size_t errlen);

/* --workers, --log-format and --ktls given with --config: the command line
 * wins (--ktls for every listener too). */
void kg_config_apply_overrides(struct kg_config *c, const struct kg_options *o);

/* The quick command line as a one-listener configuration. */
int kg_config_from_options(const struct kg_options *o, struct kg_config *c, char *err,
			   size_t errlen);

/* "FILE:LINE:COL: key" or "--flag": the prefix of every error about a value. */
void kg_where_format(const struct kg_where *w, char *buf, size_t cap);
/* "FILE:LINE:COL: key: PATH" or "--flag PATH": the prefix of errors about a file. */
void kg_file_format(const struct kg_file *f, char *buf, size_t cap);
#endif
