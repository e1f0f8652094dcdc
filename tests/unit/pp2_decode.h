/* A strict PROXY v2 decoder for tests and the round-trip fuzzer: everything
 * the encoder writes must parse back exactly. Returns 0 or -1. */
#ifndef KG_PP2_DECODE_H
#define KG_PP2_DECODE_H
#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>

#include "proxy_v2.h"

struct pp2_decoded {
	uint8_t family;
	char src[64], dst[64];
	uint16_t sport, dport;
	char sni[256], version[64], cn[256], cipher[128], sig_alg[64], key_alg[64], spiffe[512];
	uint8_t fingerprint[32];
	int has_fingerprint, has_ssl;
	uint8_t client;
	uint32_t verify;
	size_t total_len;
};

static inline int pp2_copy_str(char *dst, size_t cap, const uint8_t *v, size_t n)
{
	if (n >= cap || memchr(v, 0, n))
		return -1;
	memcpy(dst, v, n);
	dst[n] = 0;
	return 0;
}

static inline int pp2_decode_ssl(struct pp2_decoded *d, const uint8_t *p, size_t n)
{
	if (n < 5)
		return -1;
	d->has_ssl = 1;
	d->client = p[0];
	d->verify = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
	for (size_t i = 5; i < n;) {
		if (n - i < 3)
			return -1;
		uint8_t t = p[i];
		size_t l = (size_t)p[i + 1] << 8 | p[i + 2];
		const uint8_t *v = p + i + 3;
		if (n - i - 3 < l)
			return -1;
		int rc = 0;
		if (t == KG_PP2_SUBTYPE_SSL_VERSION) rc = pp2_copy_str(d->version, sizeof(d->version), v, l);
		else if (t == KG_PP2_SUBTYPE_SSL_CN) rc = pp2_copy_str(d->cn, sizeof(d->cn), v, l);
		else if (t == KG_PP2_SUBTYPE_SSL_CIPHER) rc = pp2_copy_str(d->cipher, sizeof(d->cipher), v, l);
		else if (t == KG_PP2_SUBTYPE_SSL_SIG_ALG) rc = pp2_copy_str(d->sig_alg, sizeof(d->sig_alg), v, l);
		else if (t == KG_PP2_SUBTYPE_SSL_KEY_ALG) rc = pp2_copy_str(d->key_alg, sizeof(d->key_alg), v, l);
		if (rc)
			return -1;
		i += 3 + l;
	}
	return 0;
}

static inline int pp2_decode_tlvs(struct pp2_decoded *d, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n;) {
		if (n - i < 3)
			return -1;
		uint8_t t = p[i];
		size_t l = (size_t)p[i + 1] << 8 | p[i + 2];
		const uint8_t *v = p + i + 3;
		if (n - i - 3 < l)
			return -1;
		int rc = 0;
		if (t == KG_PP2_TYPE_AUTHORITY) rc = pp2_copy_str(d->sni, sizeof(d->sni), v, l);
		else if (t == KG_PP2_TYPE_SSL) rc = pp2_decode_ssl(d, v, l);
		else if (t == KG_PP2_TYPE_KTLSGATE_SPIFFE) rc = pp2_copy_str(d->spiffe, sizeof(d->spiffe), v, l);
		else if (t == KG_PP2_TYPE_KTLSGATE_FINGERPRINT) {
			if (l != 32) return -1;
			memcpy(d->fingerprint, v, 32);
			d->has_fingerprint = 1;
		}
		if (rc)
			return -1;
		i += 3 + l;
	}
	return 0;
}

static inline int pp2_decode(const uint8_t *p, size_t n, struct pp2_decoded *d)
{
	memset(d, 0, sizeof(*d));
	if (n < 16 || memcmp(p, KG_PP2_SIGNATURE, KG_PP2_SIG_LEN) || p[12] != 0x21)
		return -1;
	size_t len = (size_t)p[14] << 8 | p[15];
	if (n < 16 + len)
		return -1;
	d->family = p[13];
	d->total_len = 16 + len;
	const uint8_t *a = p + 16;
	size_t alen = d->family == 0x11 ? 12 : d->family == 0x21 ? 36 : 0;
	if (d->family != 0x11 && d->family != 0x21 && d->family != 0x00)
		return -1;
	if (len < alen)
		return -1;
	int af = d->family == 0x11 ? AF_INET : AF_INET6;
	size_t asz = d->family == 0x11 ? 4 : 16;
	if (alen) {
		inet_ntop(af, a, d->src, sizeof(d->src));
		inet_ntop(af, a + asz, d->dst, sizeof(d->dst));
		d->sport = (uint16_t)(a[2 * asz] << 8 | a[2 * asz + 1]);
		d->dport = (uint16_t)(a[2 * asz + 2] << 8 | a[2 * asz + 3]);
	}
	return pp2_decode_tlvs(d, a + alen, len - alen);
}
#endif
