#include "addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

static int parse_unix(const char *path, struct kg_addr *out, char *err, size_t errlen)
{
	struct sockaddr_un *sun = (struct sockaddr_un *)&out->ss;

	if (path[0] != '/' || strlen(path) >= sizeof(sun->sun_path)) {
		snprintf(err, errlen, "unix socket path must be absolute and shorter than %zu bytes",
			 sizeof(sun->sun_path));
		return -1;
	}
	sun->sun_family = AF_UNIX;
	strcpy(sun->sun_path, path);
	out->len = (socklen_t)sizeof(*sun);
	return 0;
}

/* Splits "host:port" / "[v6]:port" in place; returns the port string. */
static char *split_host_port(char *s, char **host)
{
	char *colon;

	if (s[0] == '[') {
		char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return NULL;
		*close = '\0';
		*host = s + 1;
		return close + 2;
	}
	colon = strrchr(s, ':');
	if (!colon || strchr(s, ':') != colon)
		return NULL; /* bare IPv6 without brackets is ambiguous */
	*colon = '\0';
	*host = s;
	return colon + 1;
}

static int parse_port(const char *p, unsigned *port)
{
	char *end;
	unsigned long v;

	if (!*p)
		return -1;
	errno = 0;
	v = strtoul(p, &end, 10);
	if (errno || *end || v > 65535 || p[0] == '-' || p[0] == '+')
		return -1;
	*port = (unsigned)v;
	return 0;
}

static int resolve(const char *host, const char *port, struct kg_addr *out,
		   char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
	struct addrinfo *res = NULL;
	int rc;

	rc = getaddrinfo(*host ? host : NULL, port, &hints, &res);
	if (rc != 0) {
		snprintf(err, errlen, "cannot resolve host '%s': %s", host, gai_strerror(rc));
		return -1;
	}
	memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
	out->len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

int kg_addr_parse(const char *spec, bool allow_unix, struct kg_addr *out,
		  char *err, size_t errlen)
{
	char copy[KG_ADDR_TEXT_MAX];
	char *host, *port;
	unsigned portnum;

	size_t len = strlen(spec);

	memset(out, 0, sizeof(*out));
	if (len >= sizeof(copy) || len >= sizeof(out->text)) {
		snprintf(err, errlen, "address too long");
		return -1;
	}
	memcpy(out->text, spec, len + 1);
	if (strncmp(spec, "unix:", 5) == 0) {
		if (!allow_unix) {
			snprintf(err, errlen, "unix sockets are not allowed here");
			return -1;
		}
		return parse_unix(spec + 5, out, err, errlen);
	}
	strcpy(copy, spec);
	port = split_host_port(copy, &host);
	if (!port || parse_port(port, &portnum) < 0) {
		snprintf(err, errlen, "expected HOST:PORT or [IPv6]:PORT%s",
			 allow_unix ? " or unix:/path" : "");
		return -1;
	}
	return resolve(host, port, out, err, errlen);
}

void kg_addr_format(const struct sockaddr *sa, socklen_t len, char *buf, size_t cap)
{
	char host[INET6_ADDRSTRLEN];

	switch (sa->sa_family) {
	case AF_INET: {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		snprintf(buf, cap, "%s:%u", host, ntohs(in->sin_port));
		return;
	}
	case AF_INET6: {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(buf, cap, "[%s]:%u", host, ntohs(in6->sin6_port));
		return;
	}
	case AF_UNIX: {
		const struct sockaddr_un *sun = (const struct sockaddr_un *)sa;
		snprintf(buf, cap, "unix:%s", len > sizeof(sa_family_t) ? sun->sun_path : "");
		return;
	}
	default:
		snprintf(buf, cap, "af%d", sa->sa_family);
	}
}
