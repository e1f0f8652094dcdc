/* Optional Prometheus endpoint: GET /metrics over plain HTTP on the address
 * global.metrics_listen names (libmicrohttpd; off unless configured). */
#ifndef KG_METRICS_HTTP_H
#define KG_METRICS_HTTP_H
#include <stddef.h>

#include "daemon.h"

struct kg_metrics_http;

/* Binds now (before privileges are dropped); NULL with err on failure. */
struct kg_metrics_http *kg_metrics_http_start(struct kg_daemon *d, const struct kg_addr_spec *at,
					      char *err, size_t errlen);
void kg_metrics_http_stop(struct kg_metrics_http *h);
#endif
