#include "metrics_http.h"

#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef KG_HAVE_MHD
#include <microhttpd.h>

struct kg_metrics_http {
	struct MHD_Daemon *mhd;
	struct kg_daemon *d;
};

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *type,
			     char *body, enum MHD_ResponseMemoryMode mode)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), body, mode);
	enum MHD_Result rc;

	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, "Content-Type", type);
	rc = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *upload,
				  size_t *upload_len, void **state)
{
	struct kg_metrics_http *h = cls;
	char *text;

	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", "only GET\n",
			     MHD_RESPMEM_PERSISTENT);
	if (strcmp(url, "/metrics") != 0)
		return reply(conn, MHD_HTTP_NOT_FOUND, "text/plain", "try /metrics\n",
			     MHD_RESPMEM_PERSISTENT);
	text = kg_metrics_text(h->d);
	if (!text)
		return reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain",
			     "a worker did not answer in time\n", MHD_RESPMEM_PERSISTENT);
	return reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", text,
		     MHD_RESPMEM_MUST_FREE);
}

struct kg_metrics_http *kg_metrics_http_start(struct kg_daemon *d, const struct kg_addr_spec *at,
					      char *err, size_t errlen)
{
	struct kg_metrics_http *h = calloc(1, sizeof(*h));
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
	char where[512];

	if (!h)
		return snprintf(err, errlen, "out of memory"), NULL;
	h->d = d;
	if (at->addr.ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	/* Scrapes are small and rare: one thread, a few connections, short timeouts. */
	h->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h,
				  MHD_OPTION_SOCK_ADDR, (const struct sockaddr *)&at->addr.ss,
				  MHD_OPTION_CONNECTION_LIMIT, 16u, MHD_OPTION_CONNECTION_TIMEOUT, 10u,
				  MHD_OPTION_END);
	if (!h->mhd) {
		kg_where_format(&at->at, where, sizeof(where));
		snprintf(err, errlen, at->at.file ? "%s: %s: cannot listen (address in use or not ours)"
						  : "%s %s: cannot listen (address in use or not ours)",
			 where, at->addr.text);
		free(h);
		return NULL;
	}
	return h;
}

void kg_metrics_http_stop(struct kg_metrics_http *h)
{
	if (!h)
		return;
	MHD_stop_daemon(h->mhd);
	free(h);
}
#else
struct kg_metrics_http *kg_metrics_http_start(struct kg_daemon *d, const struct kg_addr_spec *at,
					      char *err, size_t errlen)
{
	snprintf(err, errlen, "metrics_listen %s: this ktlsgate was built without libmicrohttpd",
		 at->addr.text);
	return NULL;
}

void kg_metrics_http_stop(struct kg_metrics_http *h)
{
}
#endif
