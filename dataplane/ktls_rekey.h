/* TLS 1.3 KeyUpdate on a kTLS socket (Linux >= 6.14 accepts TLS_RX/TLS_TX
 * again on a live socket): the traffic secrets kept for it, the next-key
 * derivation (RFC 8446 §7.2) and the install. Only for kernels that can
 * rekey: elsewhere nothing is kept and a client KeyUpdate closes. */
#ifndef KG_KTLS_REKEY_H
#define KG_KTLS_REKEY_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "ktls_keys.h"

#define KG_TLS13_SECRET_MAX 48 /* SHA-384 */

struct kg_ktls_rekey {
	uint8_t rx_secret[KG_TLS13_SECRET_MAX]; /* client_application_traffic_secret_N */
	uint8_t tx_secret[KG_TLS13_SECRET_MAX]; /* server_application_traffic_secret_N */
	uint8_t secret_len;
	int cipher;          /* TLS_CIPHER_*: fixes the hash and the key length */
	bool tx_wanted;      /* the client asked for our KeyUpdate: not sent yet */
	unsigned rx_updates, tx_updates;
};

/* The syscalls the install makes: real ones in the daemon, fakes in tests. */
struct kg_ktls_sys {
	int (*setsockopt)(int fd, int level, int name, const void *val, socklen_t len);
	ssize_t (*sendmsg)(int fd, const struct msghdr *msg, int flags);
};
extern const struct kg_ktls_sys kg_ktls_sys_real;

/* Copies the secrets (cleanse the source yourself); NULL without memory. */
struct kg_ktls_rekey *kg_ktls_rekey_new(int cipher, const uint8_t *client, const uint8_t *server,
					size_t secret_len);
void kg_ktls_rekey_free(struct kg_ktls_rekey *rk);
/* "SHA384" for AES-256-GCM, "SHA256" for the other TLS 1.3 suites. */
const char *kg_ktls_rekey_md(int cipher);
/* next = HKDF-Expand-Label(secret, "traffic upd", "", hash_len). */
int kg_tls13_next_secret(const char *md, const uint8_t *secret, size_t len, uint8_t *next);
/* A KeyUpdate handshake message, alone in its record: 0 and *requested, or -1. */
int kg_ktls_key_update_parse(const uint8_t *p, size_t n, bool *requested);
/* Steps the client secret and installs its key with TLS_RX, sequence 0. */
int kg_ktls_rekey_rx(struct kg_ktls_rekey *rk, int fd, const struct kg_ktls_sys *sys,
		     char *why, size_t whylen);
/* Sends our KeyUpdate (update_not_requested) under the current key, then
 * steps the server secret and installs it with TLS_TX, sequence 0.
 * -EAGAIN when the send buffer is full (nothing changed: retry later). */
int kg_ktls_rekey_tx(struct kg_ktls_rekey *rk, int fd, const struct kg_ktls_sys *sys,
		     char *why, size_t whylen);
#endif
