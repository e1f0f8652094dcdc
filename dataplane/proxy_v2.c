#include "proxy_v2.h"

#include <netinet/in.h>
#include <string.h>

struct pp2_out {
	uint8_t *p;
	size_t len, cap;
	bool overflow;
};

static void put(struct pp2_out *o, const void *data, size_t n)
{
	if (o->overflow || o->len + n > o->cap) {
		o->overflow = true;
		return;
	}
	memcpy(o->p + o->len, data, n);
	o->len += n;
}

static void put_u8(struct pp2_out *o, uint8_t v) { put(o, &v, 1); }

static void put_be16(struct pp2_out *o, uint16_t v)
{
	uint8_t b[2] = { (uint8_t)(v >> 8), (uint8_t)v };
	put(o, b, 2);
}

static void patch_be16(struct pp2_out *o, size_t at, size_t v)
{
	if (!o->overflow && v <= 0xffff) {
		o->p[at] = (uint8_t)(v >> 8);
		o->p[at + 1] = (uint8_t)v;
	} else {
		o->overflow = true;
	}
}

static void put_tlv(struct pp2_out *o, uint8_t type, const void *v, size_t n)
{
	if (!v || n > 0xffff)
		return;
	put_u8(o, type);
	put_be16(o, (uint16_t)n);
	put(o, v, n);
}

static void put_tlv_str(struct pp2_out *o, uint8_t type, const char *s)
{
	if (s && *s)
		put_tlv(o, type, s, strlen(s));
}

/* Family byte and address block; UNSPEC when the families differ or are local. */
static void put_addresses(struct pp2_out *o, const struct sockaddr *src,
			  const struct sockaddr *dst)
{
	if (src && dst && src->sa_family == AF_INET && dst->sa_family == AF_INET) {
		const struct sockaddr_in *s = (const void *)src, *d = (const void *)dst;
		put_u8(o, 0x11);
		put_be16(o, 12);
		put(o, &s->sin_addr, 4);
		put(o, &d->sin_addr, 4);
		put(o, &s->sin_port, 2);
		put(o, &d->sin_port, 2);
	} else if (src && dst && src->sa_family == AF_INET6 && dst->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const void *)src, *d = (const void *)dst;
		put_u8(o, 0x21);
		put_be16(o, 36);
		put(o, &s->sin6_addr, 16);
		put(o, &d->sin6_addr, 16);
		put(o, &s->sin6_port, 2);
		put(o, &d->sin6_port, 2);
	} else {
		put_u8(o, 0x00);
		put_be16(o, 0);
	}
}

static void put_ssl_tlv(struct pp2_out *o, const struct kg_pp2_info *in)
{
	size_t start;
	uint8_t client = KG_PP2_CLIENT_SSL;

	if (in->has_cert)
		client |= in->resumed ? KG_PP2_CLIENT_CERT_SESS : KG_PP2_CLIENT_CERT_CONN;
	put_u8(o, KG_PP2_TYPE_SSL);
	start = o->len;
	put_be16(o, 0);
	put_u8(o, client);
	put(o, "\0\0\0\0", 4); /* verify: 0 = the client certificate was verified */
	put_tlv_str(o, KG_PP2_SUBTYPE_SSL_VERSION, in->version);
	put_tlv_str(o, KG_PP2_SUBTYPE_SSL_CN, in->cn);
	put_tlv_str(o, KG_PP2_SUBTYPE_SSL_CIPHER, in->cipher);
	put_tlv_str(o, KG_PP2_SUBTYPE_SSL_SIG_ALG, in->sig_alg);
	put_tlv_str(o, KG_PP2_SUBTYPE_SSL_KEY_ALG, in->key_alg);
	patch_be16(o, start, o->len - start - 2);
}

ssize_t kg_pp2_encode(const struct kg_pp2_info *in, uint8_t *out, size_t cap)
{
	struct pp2_out o = { .p = out, .cap = cap };
	size_t len_at;

	put(&o, KG_PP2_SIGNATURE, KG_PP2_SIG_LEN);
	put_u8(&o, 0x21); /* version 2, PROXY command */
	put_addresses(&o, in->src, in->dst);
	len_at = KG_PP2_SIG_LEN + 2;
	put_tlv_str(&o, KG_PP2_TYPE_AUTHORITY, in->sni);
	if (!in->plain)
		put_ssl_tlv(&o, in);
	put_tlv_str(&o, KG_PP2_TYPE_KTLSGATE_SPIFFE, in->spiffe);
	if (in->fingerprint)
		put_tlv(&o, KG_PP2_TYPE_KTLSGATE_FINGERPRINT, in->fingerprint, 32);
	patch_be16(&o, len_at, o.len - KG_PP2_SIG_LEN - 4);
	return o.overflow ? -1 : (ssize_t)o.len;
}
