/* A connected loopback TCP pair for tests that need a real kernel socket. */
#ifndef KG_TEST_NETPAIR_H
#define KG_TEST_NETPAIR_H
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct netpair {
	int listener, server, client;          /* server: the accepted side */
	struct sockaddr_storage srv_local, srv_peer; /* the server side's 4-tuple */
};

/* family AF_INET (127.0.0.1) or AF_INET6 (::1). 0 ok, -1 with errno. */
static inline int netpair_open(struct netpair *p, int family)
{
	struct sockaddr_storage a;
	socklen_t len = family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);

	memset(p, 0, sizeof(*p));
	p->listener = p->server = p->client = -1;
	memset(&a, 0, sizeof(a));
	a.ss_family = (sa_family_t)family;
	if (family == AF_INET)
		((struct sockaddr_in *)&a)->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	else
		((struct sockaddr_in6 *)&a)->sin6_addr = in6addr_loopback;
	p->listener = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (p->listener < 0 || bind(p->listener, (struct sockaddr *)&a, len) < 0 ||
	    listen(p->listener, 4) < 0 || getsockname(p->listener, (struct sockaddr *)&a, &len) < 0)
		return -1;
	p->client = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (p->client < 0 || connect(p->client, (struct sockaddr *)&a, len) < 0)
		return -1;
	p->server = accept4(p->listener, NULL, NULL, SOCK_CLOEXEC);
	if (p->server < 0)
		return -1;
	len = sizeof(p->srv_local);
	if (getsockname(p->server, (struct sockaddr *)&p->srv_local, &len) < 0)
		return -1;
	len = sizeof(p->srv_peer);
	return getpeername(p->server, (struct sockaddr *)&p->srv_peer, &len);
}

static inline void netpair_close(struct netpair *p)
{
	if (p->listener >= 0)
		close(p->listener);
	if (p->server >= 0)
		close(p->server);
	if (p->client >= 0)
		close(p->client);
	p->listener = p->server = p->client = -1;
}

static inline void netpair_set_port(struct sockaddr_storage *a, uint16_t port)
{
	if (a->ss_family == AF_INET)
		((struct sockaddr_in *)a)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)a)->sin6_port = htons(port);
}

static inline uint16_t netpair_port(const struct sockaddr_storage *a)
{
	return ntohs(a->ss_family == AF_INET ? ((const struct sockaddr_in *)a)->sin_port
					     : ((const struct sockaddr_in6 *)a)->sin6_port);
}
#endif
