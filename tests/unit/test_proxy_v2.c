#include <arpa/inet.h>
#include <netinet/in.h>

#include "pp2_decode.h"
#include "proxy_v2.h"
#include "test.h"

static const uint8_t fp[32] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
				17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32 };

static void ipv4_with_every_tlv(void)
{
	struct sockaddr_in s = { .sin_family = AF_INET, .sin_port = htons(40000) };
	struct sockaddr_in d = { .sin_family = AF_INET, .sin_port = htons(8443) };
	uint8_t buf[KG_PP2_MAX];
	struct pp2_decoded out;

	inet_pton(AF_INET, "192.0.2.7", &s.sin_addr);
	inet_pton(AF_INET, "127.0.0.1", &d.sin_addr);
	struct kg_pp2_info in = {
		.src = (void *)&s, .dst = (void *)&d, .sni = "api.example", .version = "TLSv1.3",
		.cn = "client.demo", .cipher = "TLS_AES_256_GCM_SHA384", .sig_alg = "ecdsa-with-SHA256",
		.key_alg = "EC256", .spiffe = "spiffe://demo.test/client", .fingerprint = fp,
		.has_cert = true,
	};
	ssize_t n = kg_pp2_encode(&in, buf, sizeof(buf));
	CHECK(n > 16);
	CHECK(pp2_decode(buf, (size_t)n, &out) == 0);
	CHECK((ssize_t)out.total_len == n);
	CHECK(out.family == 0x11);
	CHECK_STR(out.src, "192.0.2.7");
	CHECK_STR(out.dst, "127.0.0.1");
	CHECK(out.sport == 40000 && out.dport == 8443);
	CHECK_STR(out.sni, "api.example");
	CHECK(out.has_ssl && out.client == (KG_PP2_CLIENT_SSL | KG_PP2_CLIENT_CERT_CONN));
	CHECK(out.verify == 0);
	CHECK_STR(out.version, "TLSv1.3");
	CHECK_STR(out.cn, "client.demo");
	CHECK_STR(out.cipher, "TLS_AES_256_GCM_SHA384");
	CHECK_STR(out.sig_alg, "ecdsa-with-SHA256");
	CHECK_STR(out.key_alg, "EC256");
	CHECK_STR(out.spiffe, "spiffe://demo.test/client");
	CHECK(out.has_fingerprint && memcmp(out.fingerprint, fp, 32) == 0);
}

static void ipv6_resumed_minimal(void)
{
	struct sockaddr_in6 s = { .sin6_family = AF_INET6, .sin6_port = htons(1) };
	struct sockaddr_in6 d = { .sin6_family = AF_INET6, .sin6_port = htons(2) };
	uint8_t buf[KG_PP2_MAX];
	struct pp2_decoded out;

	inet_pton(AF_INET6, "2001:db8::1", &s.sin6_addr);
	inet_pton(AF_INET6, "::1", &d.sin6_addr);
	struct kg_pp2_info in = { .src = (void *)&s, .dst = (void *)&d, .has_cert = true,
				  .resumed = true, .version = "TLSv1.2" };
	ssize_t n = kg_pp2_encode(&in, buf, sizeof(buf));
	CHECK(pp2_decode(buf, (size_t)n, &out) == 0);
	CHECK(out.family == 0x21);
	CHECK_STR(out.src, "2001:db8::1");
	CHECK_STR(out.dst, "::1");
	CHECK(out.client == (KG_PP2_CLIENT_SSL | KG_PP2_CLIENT_CERT_SESS));
	CHECK(!out.has_fingerprint && out.sni[0] == 0);
}

static void mixed_families_are_unspec(void)
{
	struct sockaddr_in s = { .sin_family = AF_INET };
	struct sockaddr_in6 d = { .sin6_family = AF_INET6 };
	uint8_t buf[KG_PP2_MAX];
	struct pp2_decoded out;
	struct kg_pp2_info in = { .src = (void *)&s, .dst = (void *)&d };
	ssize_t n = kg_pp2_encode(&in, buf, sizeof(buf));

	CHECK(pp2_decode(buf, (size_t)n, &out) == 0);
	CHECK(out.family == 0x00);
}

/* Egress mode: a plain TCP client gets no SSL TLV, only its addresses. */
static void plain_client_has_no_ssl_tlv(void)
{
	struct sockaddr_in s = { .sin_family = AF_INET, .sin_port = htons(1) };
	struct sockaddr_in d = { .sin_family = AF_INET, .sin_port = htons(2) };
	uint8_t buf[KG_PP2_MAX];
	struct kg_pp2_info in = { .src = (void *)&s, .dst = (void *)&d, .plain = true };
	ssize_t n = kg_pp2_encode(&in, buf, sizeof(buf));

	CHECK(n == 16 + 12);
	CHECK(buf[13] == 0x11 && buf[14] == 0 && buf[15] == 12);
}

static void too_small_buffer_fails_cleanly(void)
{
	uint8_t buf[20];
	struct kg_pp2_info in = { .cn = "a-rather-long-common-name-that-does-not-fit" };

	CHECK(kg_pp2_encode(&in, buf, sizeof(buf)) == -1);
}

int main(void)
{
	ipv4_with_every_tlv();
	ipv6_resumed_minimal();
	mixed_families_are_unspec();
	plain_client_has_no_ssl_tlv();
	too_small_buffer_fails_cleanly();
	return T_DONE();
}
