/* Prometheus text exposition (version 0.0.4) of the daemon's counters. */
#ifndef KG_METRICS_H
#define KG_METRICS_H
#include "daemon.h"

/* malloc'd text, or NULL when a worker did not answer. */
char *kg_metrics_text(struct kg_daemon *d);
#endif
