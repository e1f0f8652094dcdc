/* What kernel TLS this kernel offers, probed once at start-up on a real
 * loopback connection (the only reliable test: config and module files lie
 * in containers and under user-mode kernels). */
#ifndef KG_KTLS_PROBE_H
#define KG_KTLS_PROBE_H
#include <stdbool.h>
#include <stddef.h>

enum kg_ktls_cipher { KG_KTLS_AES_128_GCM, KG_KTLS_AES_256_GCM, KG_KTLS_CHACHA20_POLY1305,
		      KG_KTLS_NCIPHERS };

struct kg_ktls_caps {
	bool available;      /* TCP_ULP "tls" works and at least one cipher both ways */
	bool module_loaded;
	int ulp_errno;       /* why TCP_ULP failed, 0 if it worked */
	bool tx[KG_KTLS_NCIPHERS], rx[KG_KTLS_NCIPHERS];
	bool rekey;          /* TLS 1.3 KeyUpdate: TLS_RX accepted again (Linux >= 6.14) */
	char reason[160];    /* why unavailable, or the module loading note */
};

/* Loads the modules when root, then probes. Never blocks, never fails hard. */
void kg_ktls_probe(struct kg_ktls_caps *caps);
/* "available (tls module loaded; TX/RX AES-128-GCM ...; rekey: no)" or "unavailable (...)" */
void kg_ktls_caps_describe(const struct kg_ktls_caps *caps, char *buf, size_t len);
const char *kg_ktls_cipher_name(enum kg_ktls_cipher c);
#endif
