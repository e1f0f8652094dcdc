/* PROXY protocol v2 header (haproxy.org proxy-protocol.txt §2.2) that tells
 * the backend who the client is: address, and the TLS facts as TLVs. */
#ifndef KG_PROXY_V2_H
#define KG_PROXY_V2_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#define KG_PP2_SIGNATURE "\r\n\r\n\0\r\nQUIT\n"
#define KG_PP2_SIG_LEN 12
#define KG_PP2_TYPE_AUTHORITY 0x02      /* SNI the client asked for */
#define KG_PP2_TYPE_SSL 0x20
#define KG_PP2_SUBTYPE_SSL_VERSION 0x21
#define KG_PP2_SUBTYPE_SSL_CN 0x22
#define KG_PP2_SUBTYPE_SSL_CIPHER 0x23
#define KG_PP2_SUBTYPE_SSL_SIG_ALG 0x24
#define KG_PP2_SUBTYPE_SSL_KEY_ALG 0x25
#define KG_PP2_TYPE_KTLSGATE_SPIFFE 0xE0      /* custom: URI SAN spiffe://... */
#define KG_PP2_TYPE_KTLSGATE_FINGERPRINT 0xE1 /* custom: SHA-256 of the leaf DER, 32 bytes */
#define KG_PP2_CLIENT_SSL 0x01
#define KG_PP2_CLIENT_CERT_CONN 0x02
#define KG_PP2_CLIENT_CERT_SESS 0x04
#define KG_PP2_MAX 1024

struct kg_pp2_info {
	const struct sockaddr *src, *dst; /* client and the address it reached */
	const char *sni, *version, *cn, *cipher, *sig_alg, *key_alg, *spiffe;
	const uint8_t *fingerprint;       /* 32 bytes, or NULL */
	bool has_cert, resumed;
	bool plain;                       /* the client spoke plain TCP (egress): no SSL TLV */
};

/* Returns the header length, or -1 when it does not fit in cap. */
ssize_t kg_pp2_encode(const struct kg_pp2_info *in, uint8_t *out, size_t cap);
#endif
