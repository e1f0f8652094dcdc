/* --max-conns-per-source: one process-wide count of live connections per
 * client IP address, shared by every worker. Operators of HAProxy and nginx
 * expect a per-source cap to be global; a per-worker cap would let a client
 * have N times the limit, and which worker a connection lands on is up to the
 * kernel's SO_REUSEPORT hash. */
#ifndef KG_SRCLIMIT_H
#define KG_SRCLIMIT_H
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

/* The address only (no port); IPv4-mapped IPv6 counts as the IPv4 address. */
struct kg_src_key {
	uint8_t family; /* AF_INET or AF_INET6; 0: not counted */
	uint8_t addr[16];
};

/* Sets the cap (0 = off). Called before the workers start. */
void kg_srclimit_configure(unsigned max_per_source);
bool kg_srclimit_enabled(void);
/* Fills key from sa and counts one more connection for it. False when the
 * source is at the cap (nothing counted, key->family set to 0). */
bool kg_srclimit_acquire(const struct sockaddr *sa, struct kg_src_key *key);
/* Undoes a successful acquire; no-op for a key with family 0. */
void kg_srclimit_release(struct kg_src_key *key);
/* Sources currently tracked (for tests and stats). */
unsigned kg_srclimit_sources(void);
#endif
