/* After the handshake and the backend connect, one relay strategy moves the
 * bytes: userspace OpenSSL (relay_user.c) now, kernel TLS + splice later.
 * Chosen once at handoff; shares struct kg_conn (like net/tls main/sw/device). */
#ifndef KG_RELAY_H
#define KG_RELAY_H
#include "ring.h"

struct kg_conn;

struct kg_relay_ops {
	const char *name; /* "user" | "ktls": the access log's path= */
	void (*start)(struct kg_conn *c);
	/* Completions of the CLI_*, BE_RECV/SEND/SHUT operations while relaying. */
	void (*on_cqe)(struct kg_conn *c, enum kg_op op, int res);
};

extern const struct kg_relay_ops kg_relay_user;
/* TLS (or plain TCP) from the client, TLS to the backend: relay_up.c. */
extern const struct kg_relay_ops kg_relay_up;
#endif
