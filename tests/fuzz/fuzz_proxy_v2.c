/* libFuzzer round trip for the PROXY v2 encoder: the fuzz input becomes a
 * kg_pp2_info (addresses, flags, TLV strings); the header must be exactly as
 * long as computed here independently, or -1 exactly when it cannot fit; and
 * the strict test decoder (tests/unit/pp2_decode.h) must read back every
 * input. The raw input is also fed to the decoder, which must never read out
 * of bounds. Build: CC=clang meson setup build-fuzz -Dfuzz=true. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pp2_decode.h"
#include "proxy_v2.h"

#define NSTR 7
/* Decoder buffer sizes minus the NUL: longer strings are clamped to these so
 * that a decode failure always means an encoder bug. */
static const size_t str_max[NSTR] = { 255, 63, 255, 127, 63, 63, 511 };
static const size_t caps[8] = { 16, 28, 64, 200, 512, KG_PP2_MAX, KG_PP2_MAX, KG_PP2_MAX };

struct input {
	const uint8_t *p;
	size_t n;
};

static const uint8_t *take(struct input *in, size_t n)
{
	static const uint8_t zeros[64];
	const uint8_t *p;

	if (in->n < n)
		return zeros; /* short input: the rest is zeros */
	p = in->p;
	in->p += n;
	in->n -= n;
	return p;
}

/* Strings are the NUL-separated rest of the input. */
static void take_strings(struct input *in, char str[NSTR][512])
{
	for (int i = 0; i < NSTR; i++) {
		const uint8_t *end = in->n ? memchr(in->p, 0, in->n) : NULL;
		size_t len = end ? (size_t)(end - in->p) : in->n;
		size_t keep = len < str_max[i] ? len : str_max[i];

		memcpy(str[i], in->p, keep);
		str[i][keep] = 0;
		in->p += len + (end ? 1 : 0);
		in->n -= len + (end ? 1 : 0);
	}
}

static size_t tlv_len(const char *s)
{
	return *s ? 3 + strlen(s) : 0;
}

#define FAIL(what) do { fprintf(stderr, "pp2 round trip: %s\n", what); abort(); } while (0)

static void check_str(const char *got, const char *want, const char *what)
{
	if (strcmp(got, want) != 0)
		FAIL(what);
}

static void check_addr(int af, const void *addr, const char *got, const char *what)
{
	char want[64];

	inet_ntop(af, addr, want, sizeof(want));
	check_str(got, want, what);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { data, size };
	struct sockaddr_in s4 = { .sin_family = AF_INET }, d4 = { .sin_family = AF_INET };
	struct sockaddr_in6 s6 = { .sin6_family = AF_INET6 }, d6 = { .sin6_family = AF_INET6 };
	char str[NSTR][512];
	uint8_t fp[32];
	struct pp2_decoded out;

	pp2_decode(data, size, &out); /* the decoder on raw bytes: no crash, no overread */

	uint8_t flags = *take(&in, 1);
	int mode = flags & 3; /* 0: IPv4, 1: IPv6, 2: mixed families, 3: no addresses */
	memcpy(&s6.sin6_addr, take(&in, 16), 16);
	memcpy(&d6.sin6_addr, take(&in, 16), 16);
	memcpy(&s4.sin_addr, &s6.sin6_addr, 4);
	memcpy(&d4.sin_addr, &d6.sin6_addr, 4);
	memcpy(&s4.sin_port, take(&in, 2), 2);
	memcpy(&d4.sin_port, take(&in, 2), 2);
	s6.sin6_port = s4.sin_port;
	d6.sin6_port = d4.sin_port;
	memcpy(fp, take(&in, 32), 32);
	take_strings(&in, str);

	struct kg_pp2_info info = {
		.src = mode == 0 ? (void *)&s4 : mode == 3 ? NULL : (void *)&s6,
		.dst = mode == 1 ? (void *)&d6 : mode == 3 ? NULL : (void *)&d4,
		.sni = str[0], .version = str[1], .cn = str[2], .cipher = str[3],
		.sig_alg = str[4], .key_alg = str[5], .spiffe = str[6],
		.fingerprint = flags & 0x10 ? fp : NULL,
		.has_cert = flags & 0x04, .resumed = flags & 0x08,
	};
	size_t cap = caps[flags >> 5];
	size_t addr_len = mode == 0 ? 12 : mode == 1 ? 36 : 0;
	size_t ssl_len = 5;
	for (int i = 1; i <= 5; i++)
		ssl_len += tlv_len(str[i]);
	size_t want = 16 + addr_len + tlv_len(str[0]) + 3 + ssl_len + tlv_len(str[6]) +
		      (info.fingerprint ? 35 : 0);
	uint8_t *buf = malloc(cap); /* exact size: ASan sees any write past it */
	ssize_t n = kg_pp2_encode(&info, buf, cap);

	if (want > cap) {
		if (n != -1)
			FAIL("encoded a header that does not fit");
		free(buf);
		return 0;
	}
	if (n < 0 || (size_t)n != want)
		FAIL("length differs from the independent computation");
	if (pp2_decode(buf, (size_t)n, &out) != 0 || out.total_len != (size_t)n)
		FAIL("decoder refused the encoder's output");
	if (out.family != (mode == 0 ? 0x11 : mode == 1 ? 0x21 : 0x00))
		FAIL("family");
	if (mode == 0) {
		check_addr(AF_INET, &s4.sin_addr, out.src, "IPv4 source");
		check_addr(AF_INET, &d4.sin_addr, out.dst, "IPv4 destination");
	} else if (mode == 1) {
		check_addr(AF_INET6, &s6.sin6_addr, out.src, "IPv6 source");
		check_addr(AF_INET6, &d6.sin6_addr, out.dst, "IPv6 destination");
	}
	if (addr_len && (out.sport != ntohs(s4.sin_port) || out.dport != ntohs(d4.sin_port)))
		FAIL("ports");
	check_str(out.sni, str[0], "authority");
	check_str(out.version, str[1], "version");
	check_str(out.cn, str[2], "cn");
	check_str(out.cipher, str[3], "cipher");
	check_str(out.sig_alg, str[4], "sig_alg");
	check_str(out.key_alg, str[5], "key_alg");
	check_str(out.spiffe, str[6], "spiffe");
	uint8_t client = KG_PP2_CLIENT_SSL;
	if (info.has_cert)
		client |= info.resumed ? KG_PP2_CLIENT_CERT_SESS : KG_PP2_CLIENT_CERT_CONN;
	if (!out.has_ssl || out.client != client || out.verify != 0)
		FAIL("ssl tlv flags");
	if (out.has_fingerprint != !!info.fingerprint ||
	    (info.fingerprint && memcmp(out.fingerprint, fp, 32) != 0))
		FAIL("fingerprint");
	free(buf);
	return 0;
}
