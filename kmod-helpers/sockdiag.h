/* The kernel's view of one of our TCP sockets through sock_diag (libnl-3):
 * TCP state and counters, and the kTLS state the kernel reports as ULP info.
 * Also SOCK_DESTROY, to cut a connection whose client identity was revoked. */
#ifndef KG_SOCKDIAG_H
#define KG_SOCKDIAG_H
#include <stdbool.h>
#include <stdint.h>

struct sockaddr;
struct nlmsghdr;

/* What `ktlsgatectl show conns` prints per connection. The ULP part needs
 * CAP_NET_ADMIN: without it Linux 6.1 (checked in the UML guest) sends no ULP
 * info at all, so ulp_tls is false even on a kTLS socket; newer kernels
 * (2025 change to tcp_diag_put_ulp) send the name but not the tls_* details. */
struct kg_sock_view {
	bool found;
	uint8_t tcp_state;                 /* TCP_ESTABLISHED ... */
	bool have_tcp_info;                /* INET_DIAG_INFO was there */
	uint32_t rtt_us, snd_cwnd;
	uint64_t bytes_acked, bytes_received;
	bool ulp_tls;                      /* the ULP is "tls" */
	uint16_t tls_version;              /* TLS_1_3_VERSION (0x0304) ...; 0 unknown */
	uint16_t tls_cipher;               /* TLS_CIPHER_AES_GCM_128 ...; 0 unknown */
	uint16_t tls_txconf, tls_rxconf;   /* TLS_CONF_BASE, _SW, _HW, _HW_RECORD; 0 unknown */
	bool rx_no_pad, zc_ro_tx;
};

/* Queries one TCP connection by its 4-tuple (both IPv4 or both IPv6; local is
 * our end). 0 with view->found telling whether it exists (a listener on the
 * local port is not a match), -errno when the kernel could not be asked. */
int kg_sockdiag_query(const struct sockaddr *local, const struct sockaddr *peer,
		      struct kg_sock_view *view);

/* Parses one SOCK_DIAG_BY_FAMILY reply (struct inet_diag_msg + attributes);
 * nlh->nlmsg_len bytes must be readable. 0 and view->found, or -EBADMSG with
 * view zeroed: a malformed message is never half-believed. */
int kg_sockdiag_parse(const struct nlmsghdr *nlh, struct kg_sock_view *view);

/* Aborts the connection (the peer gets a reset, our socket ECONNABORTED).
 * The socket is looked up first and destroyed by its cookie, so only that
 * exact connection can go, never a listener sharing the port.
 * -EOPNOTSUPP without CONFIG_INET_DIAG_DESTROY, -EPERM without CAP_NET_ADMIN,
 * -ENOENT when no such connection. */
int kg_sockdiag_destroy(const struct sockaddr *local, const struct sockaddr *peer);

/* For show conns: "TLS 1.3", "AES-128-GCM", "sw"/"hw"/"hw-record"/"base";
 * "-" for 0 (not reported), "?" for a value this build does not know. */
const char *kg_sockdiag_version_name(uint16_t version);
const char *kg_sockdiag_cipher_name(uint16_t cipher);
const char *kg_sockdiag_conf_name(uint16_t conf);
#endif
