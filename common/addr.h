/* Socket addresses as operators write them: HOST:PORT, [v6]:PORT, unix:/path. */
#ifndef KG_ADDR_H
#define KG_ADDR_H
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define KG_ADDR_TEXT_MAX 128

struct kg_addr {
	struct sockaddr_storage ss;
	socklen_t len;
	char text[KG_ADDR_TEXT_MAX]; /* as given, for logs and errors */
};

/* Resolves numerically or via getaddrinfo (start-up only: may block).
 * Returns 0, or -1 with a reason (without the spec itself) in err. */
int kg_addr_parse(const char *spec, bool allow_unix, struct kg_addr *out,
		  char *err, size_t errlen);

/* "1.2.3.4:5", "[::1]:5" or "unix:/p"; never fails (truncates). */
void kg_addr_format(const struct sockaddr *sa, socklen_t len, char *buf, size_t cap);
#endif
