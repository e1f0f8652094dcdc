/* The access log's strings about one connection, packed into one allocation
 * sized to their content: a handful of short strings instead of ~1.2 KiB of
 * fixed arrays that every idle connection used to carry. They usually fit in
 * the connection's inline area; longer ones go to the heap. Writes are rare
 * (a few per handshake, one per error), so each one simply repacks. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"

/* Longest value kept per field (bytes, without the NUL): the old array sizes. */
static const size_t field_cap[KG_PEER_NFIELDS] = {
	[KG_PEER_CLIENT] = 63,  [KG_PEER_SNI] = 255,    [KG_PEER_SUBJECT] = 255,
	[KG_PEER_ISSUER] = 255, [KG_PEER_SERIAL] = 79,  [KG_PEER_FINGERPRINT] = 64, [KG_PEER_DETAIL] = 159,
	[KG_PEER_BACKEND] = 127, [KG_PEER_SPIFFE] = 255,
};

const char *kg_peer_get(const struct kg_conn *c, enum kg_peer_field f)
{
	const char *p = c->peer.text;

	if (!p)
		return "";
	for (int i = 0; i < (int)f; i++)
		p += strlen(p) + 1;
	return p;
}

void kg_peer_set(struct kg_conn *c, enum kg_peer_field f, const char *s)
{
	char packed[1280]; /* caps + NULs: 1200; fields may point into the old text */
	size_t total = 0;
	char *text;

	for (int i = 0; i < KG_PEER_NFIELDS; i++) {
		const char *v = i == (int)f ? s : kg_peer_get(c, (enum kg_peer_field)i);
		size_t len = strnlen(v, field_cap[i]);

		memcpy(packed + total, v, len);
		packed[total + len] = '\0';
		total += len + 1;
	}
	if (total <= sizeof(c->peer.inline_text)) {
		text = c->peer.inline_text;
	} else {
		text = malloc(total);
		if (!text)
			return;
	}
	memcpy(text, packed, total);
	if (c->peer.text != c->peer.inline_text && c->peer.text != text)
		free(c->peer.text);
	c->peer.text = text;
}

void kg_peer_setf(struct kg_conn *c, enum kg_peer_field f, const char *fmt, ...)
{
	char buf[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	kg_peer_set(c, f, buf);
}

void kg_peer_free(struct kg_conn *c)
{
	if (c->peer.text != c->peer.inline_text)
		free(c->peer.text);
	c->peer.text = NULL;
}
