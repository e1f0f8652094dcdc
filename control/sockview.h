/* show conns: the kernel's own view of a kTLS connection (sock_diag). */
#ifndef KG_SOCKVIEW_H
#define KG_SOCKVIEW_H
#include <jansson.h>
#include <sys/socket.h>

/* {"tcp_state":..,"rtt_us":..,"tls_version":"TLS 1.3","cipher":"AES-128-GCM","tx":"sw","rx":"sw"}
 * or {"error":"..."} when the kernel could not be asked. */
json_t *kg_sockview_json(const struct sockaddr_storage *local, const struct sockaddr_storage *peer);
#endif
