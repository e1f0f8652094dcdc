/* sock_diag: the parser on crafted replies (good, odd and hostile: run it
 * under ASan), and the real kernel on loopback connections (no kTLS needed).
 * Usage: test_sockdiag parse|live|destroy   (one meson test each, so that a
 * kernel without SOCK_DESTROY skips only that part). */
#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/sock_diag.h>
#include <linux/tls.h>
#include <netinet/tcp.h>
#include <netlink/attr.h>
#include <netlink/msg.h>
#include <poll.h>
#include <stdlib.h>

#include "netpair.h"
#include "sockdiag.h"
#include "test.h"

/* ---- crafted replies ---- */

static struct nl_msg *reply(uint16_t type, uint8_t family, uint8_t state)
{
	struct nl_msg *m = nlmsg_alloc();
	struct inet_diag_msg r = { .idiag_family = family, .idiag_state = state };
	struct nlmsghdr *nlh = nlmsg_put(m, 0, 1, type, sizeof(r), 0);

	memcpy(nlmsg_data(nlh), &r, sizeof(r));
	return m;
}

/* struct tcp_info as the kernel lays it out (uapi, append-only): rtt at 68,
 * snd_cwnd at 80, bytes_acked at 120, bytes_received at 128. */
static void put_tcp_info(struct nl_msg *m, int len)
{
	uint8_t ti[232] = { 0 };
	uint32_t rtt = 1234, cwnd = 10;
	uint64_t acked = 5000, received = 7000;

	memcpy(ti + 68, &rtt, 4);
	memcpy(ti + 80, &cwnd, 4);
	memcpy(ti + 120, &acked, 8);
	memcpy(ti + 128, &received, 8);
	nla_put(m, INET_DIAG_INFO, len, ti);
}

struct tls_attrs {
	const char *name;
	int version, cipher, tx, rx; /* -1: absent */
	bool zc, nopad, no_tls_nest;
};

static void put_ulp(struct nl_msg *m, const struct tls_attrs *t)
{
	struct nlattr *ulp = nla_nest_start(m, INET_DIAG_ULP_INFO), *tls;

	nla_put_string(m, INET_ULP_INFO_NAME, t->name);
	if (!t->no_tls_nest) {
		tls = nla_nest_start(m, INET_ULP_INFO_TLS);
		if (t->version >= 0)
			nla_put_u16(m, TLS_INFO_VERSION, (uint16_t)t->version);
		if (t->cipher >= 0)
			nla_put_u16(m, TLS_INFO_CIPHER, (uint16_t)t->cipher);
		if (t->tx >= 0)
			nla_put_u16(m, TLS_INFO_TXCONF, (uint16_t)t->tx);
		if (t->rx >= 0)
			nla_put_u16(m, TLS_INFO_RXCONF, (uint16_t)t->rx);
		if (t->zc)
			nla_put_flag(m, TLS_INFO_ZC_RO_TX);
		if (t->nopad)
			nla_put_flag(m, TLS_INFO_RX_NO_PAD);
		nla_nest_end(m, tls);
	}
	nla_nest_end(m, ulp);
}

static int parse(struct nl_msg *m, struct kg_sock_view *v)
{
	int rc = kg_sockdiag_parse(nlmsg_hdr(m), v);

	nlmsg_free(m);
	return rc;
}

static bool view_is_zero(const struct kg_sock_view *v)
{
	static const struct kg_sock_view zero;

	return memcmp(v, &zero, sizeof(zero)) == 0;
}

static void test_tls13_sw(void)
{
	struct nl_msg *m = reply(SOCK_DIAG_BY_FAMILY, AF_INET, TCP_ESTABLISHED);
	struct tls_attrs t = { "tls", TLS_1_3_VERSION, TLS_CIPHER_AES_GCM_128,
			       TLS_CONF_SW, TLS_CONF_SW, .nopad = true };
	struct kg_sock_view v;

	put_tcp_info(m, 232);
	put_ulp(m, &t);
	CHECK(parse(m, &v) == 0);
	CHECK(v.found && v.tcp_state == TCP_ESTABLISHED);
	CHECK(v.have_tcp_info && v.rtt_us == 1234 && v.snd_cwnd == 10);
	CHECK(v.bytes_acked == 5000 && v.bytes_received == 7000);
	CHECK(v.ulp_tls && v.tls_version == 0x0304 && v.tls_cipher == TLS_CIPHER_AES_GCM_128);
	CHECK(v.tls_txconf == TLS_CONF_SW && v.tls_rxconf == TLS_CONF_SW);
	CHECK(v.rx_no_pad && !v.zc_ro_tx);
	CHECK_STR(kg_sockdiag_version_name(v.tls_version), "TLS 1.3");
	CHECK_STR(kg_sockdiag_cipher_name(v.tls_cipher), "AES-128-GCM");
	CHECK_STR(kg_sockdiag_conf_name(v.tls_txconf), "sw");
}

static void test_tls12_chacha_hw(void)
{
	struct nl_msg *m = reply(SOCK_DIAG_BY_FAMILY, AF_INET6, TCP_CLOSE_WAIT);
	struct tls_attrs t = { "tls", TLS_1_2_VERSION, TLS_CIPHER_CHACHA20_POLY1305,
			       TLS_CONF_HW, TLS_CONF_SW, .zc = true };
	struct kg_sock_view v;

	put_tcp_info(m, 104); /* an older kernel's tcp_info: no byte counters */
	put_ulp(m, &t);
	CHECK(parse(m, &v) == 0);
	CHECK(v.found && v.tcp_state == TCP_CLOSE_WAIT);
	CHECK(v.have_tcp_info && v.rtt_us == 1234 && v.bytes_acked == 0 && v.bytes_received == 0);
	CHECK(v.ulp_tls && v.tls_version == 0x0303);
	CHECK_STR(kg_sockdiag_version_name(v.tls_version), "TLS 1.2");
	CHECK_STR(kg_sockdiag_cipher_name(v.tls_cipher), "CHACHA20-POLY1305");
	CHECK_STR(kg_sockdiag_conf_name(v.tls_txconf), "hw");
	CHECK_STR(kg_sockdiag_conf_name(v.tls_rxconf), "sw");
	CHECK(v.zc_ro_tx && !v.rx_no_pad);
}

static void test_no_ulp_and_others(void)
{
	struct tls_attrs mptcp = { .name = "mptcp", .version = 0x0304, .cipher = 51, .tx = 2, .rx = 2 };
	struct tls_attrs unpriv = { .name = "tls", .no_tls_nest = true };
	struct tls_attrs base = { .name = "tls", .version = -1, .cipher = -1,
				  .tx = TLS_CONF_BASE, .rx = TLS_CONF_BASE };
	struct nl_msg *m;
	struct kg_sock_view v;

	m = reply(SOCK_DIAG_BY_FAMILY, AF_INET, TCP_ESTABLISHED);
	CHECK(parse(m, &v) == 0); /* no attributes at all */
	CHECK(v.found && !v.ulp_tls && !v.have_tcp_info && v.tls_version == 0);

	m = reply(SOCK_DIAG_BY_FAMILY, AF_INET, TCP_ESTABLISHED);
	put_tcp_info(m, 40); /* too short to hold snd_cwnd */
	put_ulp(m, &mptcp);
	CHECK(parse(m, &v) == 0);
	CHECK(v.found && !v.have_tcp_info && !v.ulp_tls && v.tls_version == 0 && v.tls_cipher == 0);

	/* Without CAP_NET_ADMIN a recent kernel names the ULP and nothing more. */
	m = reply(SOCK_DIAG_BY_FAMILY, AF_INET, TCP_ESTABLISHED);
	put_ulp(m, &unpriv);
	CHECK(parse(m, &v) == 0);
	CHECK(v.found && v.ulp_tls && v.tls_version == 0 && v.tls_txconf == 0);
	CHECK_STR(kg_sockdiag_version_name(v.tls_version), "-");
	CHECK_STR(kg_sockdiag_cipher_name(v.tls_cipher), "-");
	CHECK_STR(kg_sockdiag_conf_name(v.tls_txconf), "-");

	/* ULP set, no keys yet. */
	m = reply(SOCK_DIAG_BY_FAMILY, AF_INET, TCP_ESTABLISHED);
	put_ulp(m, &base);
	CHECK(parse(m, &v) == 0);
	CHECK(v.ulp_tls && v.tls_version == 0 && v.tls_cipher == 0);
	CHECK_STR(kg_sockdiag_conf_name(v.tls_txconf), "base");
}

static void test_names(void)
{
	CHECK_STR(kg_sockdiag_cipher_name(TLS_CIPHER_AES_GCM_256), "AES-256-GCM");
	CHECK_STR(kg_sockdiag_cipher_name(TLS_CIPHER_AES_CCM_128), "AES-128-CCM");
	CHECK_STR(kg_sockdiag_cipher_name(999), "?");
	CHECK_STR(kg_sockdiag_version_name(0x0301), "?");
	CHECK_STR(kg_sockdiag_conf_name(TLS_CONF_HW_RECORD), "hw-record");
	CHECK_STR(kg_sockdiag_conf_name(77), "?");
}

/* A TLS nest whose one attribute is raw bytes of the given length. */
static int parse_raw_tls_attr(int type, const void *data, int len, struct kg_sock_view *v)
{
	struct nl_msg *m = reply(SOCK_DIAG_BY_FAMILY, AF_INET, TCP_ESTABLISHED);
	struct nlattr *ulp = nla_nest_start(m, INET_DIAG_ULP_INFO), *tls;

	nla_put_string(m, INET_ULP_INFO_NAME, "tls");
	tls = nla_nest_start(m, INET_ULP_INFO_TLS);
	nla_put(m, type, len, data);
	nla_nest_end(m, tls);
	nla_nest_end(m, ulp);
	return parse(m, v);
}

static void test_malformed(void)
{
	uint32_t u32 = 0x0304;
	uint8_t u8 = 4;
	struct nl_msg *m;
	struct nlattr *ulp;
	struct kg_sock_view v;

	/* Wrong integer widths and a flag with a payload are not the kernel's. */
	CHECK(parse_raw_tls_attr(TLS_INFO_VERSION, &u32, 4, &v) == -EBADMSG && view_is_zero(&v));
	CHECK(parse_raw_tls_attr(TLS_INFO_CIPHER, &u8, 1, &v) == -EBADMSG && view_is_zero(&v));
	CHECK(parse_raw_tls_attr(TLS_INFO_TXCONF, NULL, 0, &v) == -EBADMSG);
	CHECK(parse_raw_tls_attr(TLS_INFO_RX_NO_PAD, &u32, 4, &v) == -EBADMSG);
	/* Unknown TLS attributes (a newer kernel) are skipped. */
	CHECK(parse_raw_tls_attr(TLS_INFO_MAX + 5, &u32, 4, &v) == 0 && v.ulp_tls);

	/* ULP name: not NUL-terminated, empty, longer than TCP_ULP_NAME_MAX. */
	m = reply(SOCK_DIAG_BY_FAMILY, AF_INET, TCP_ESTABLISHED);
	ulp = nla_nest_start(m, INET_DIAG_ULP_INFO);
	nla_put(m, INET_ULP_INFO_NAME, 3, "tls");
	nla_nest_end(m, ulp);
	CHECK(parse(m, &v) == -EBADMSG && view_is_zero(&v));
	m = reply(SOCK_DIAG_BY_FAMILY, AF_INET, TCP_ESTABLISHED);
	ulp = nla_nest_start(m, INET_DIAG_ULP_INFO);
	nla_put(m, INET_ULP_INFO_NAME, 0, NULL);
	nla_nest_end(m, ulp);
	CHECK(parse(m, &v) == -EBADMSG);
	m = reply(SOCK_DIAG_BY_FAMILY, AF_INET, TCP_ESTABLISHED);
	ulp = nla_nest_start(m, INET_DIAG_ULP_INFO);
	nla_put_string(m, INET_ULP_INFO_NAME, "tls-but-much-too-long");
	nla_nest_end(m, ulp);
	CHECK(parse(m, &v) == -EBADMSG);

	/* Nested garbage: bytes that are no attributes at all are ignored. */
	m = reply(SOCK_DIAG_BY_FAMILY, AF_INET, TCP_ESTABLISHED);
	nla_put(m, INET_DIAG_ULP_INFO, 7, "\xff\xff\x01\x00tls");
	CHECK(parse(m, &v) == 0 && v.found && !v.ulp_tls);
	m = reply(SOCK_DIAG_BY_FAMILY, AF_INET, TCP_ESTABLISHED);
	ulp = nla_nest_start(m, INET_DIAG_ULP_INFO);
	nla_put(m, INET_ULP_INFO_TLS, 5, "\x08\x00\x01\x00\x04"); /* inner attr overruns */
	nla_put_string(m, INET_ULP_INFO_NAME, "tls");
	nla_nest_end(m, ulp);
	CHECK(parse(m, &v) == 0 && v.ulp_tls && v.tls_version == 0);

	/* Not a TCP diag reply. */
	CHECK(parse(reply(NLMSG_ERROR, AF_INET, 1), &v) == -EBADMSG && view_is_zero(&v));
	CHECK(parse(reply(SOCK_DIAG_BY_FAMILY, AF_UNIX, 1), &v) == -EBADMSG);
}

/* Every prefix and every single-byte change of a full reply, each in a
 * buffer of exactly that size: ASan sees any read past the message. */
static void test_truncations_and_flips(void)
{
	struct nl_msg *m = reply(SOCK_DIAG_BY_FAMILY, AF_INET, TCP_ESTABLISHED);
	struct tls_attrs t = { .name = "tls", .version = TLS_1_3_VERSION,
			       .cipher = TLS_CIPHER_AES_GCM_256, .tx = TLS_CONF_SW,
			       .rx = TLS_CONF_HW_RECORD, .zc = true, .nopad = true };
	struct kg_sock_view v;
	size_t full;
	const uint8_t *src;
	int ok = 0, bad = 0;

	put_tcp_info(m, 232);
	put_ulp(m, &t);
	full = nlmsg_hdr(m)->nlmsg_len;
	src = (const uint8_t *)nlmsg_hdr(m);
	for (size_t len = sizeof(struct nlmsghdr); len <= full; len++) {
		struct nlmsghdr *h = malloc(len);

		memcpy(h, src, len);
		h->nlmsg_len = (uint32_t)len;
		int rc = kg_sockdiag_parse(h, &v);
		CHECK(rc == 0 || (rc == -EBADMSG && view_is_zero(&v)));
		CHECK(len >= NLMSG_LENGTH(sizeof(struct inet_diag_msg)) || rc == -EBADMSG);
		free(h);
	}
	for (size_t i = sizeof(struct nlmsghdr); i < full; i++) {
		for (int bit = 0; bit < 8; bit++) {
			uint8_t *b = malloc(full);

			memcpy(b, src, full);
			b[i] ^= (uint8_t)(1u << bit);
			int rc = kg_sockdiag_parse((struct nlmsghdr *)b, &v);
			CHECK(rc == 0 || (rc == -EBADMSG && view_is_zero(&v)));
			if (rc == 0)
				ok++;
			else
				bad++;
			free(b);
		}
	}
	printf("bit flips: %d parsed, %d refused\n", ok, bad);
	nlmsg_free(m);
}

static int run_parse(void)
{
	test_tls13_sw();
	test_tls12_chacha_hw();
	test_no_ulp_and_others();
	test_names();
	test_malformed();
	test_truncations_and_flips();
	return T_DONE();
}

/* ---- the real kernel ---- */

static const struct sockaddr *sa(const struct sockaddr_storage *s)
{
	return (const struct sockaddr *)s;
}

static int live_family(int family)
{
	struct netpair p;
	struct sockaddr_storage fake;
	struct kg_sock_view v;
	char buf[8];
	int rc;

	if (netpair_open(&p, family) < 0) {
		netpair_close(&p);
		printf("family %d: no loopback pair (%s), not tested\n", family, strerror(errno));
		return family == AF_INET ? -1 : 0;
	}
	CHECK(write(p.client, "hello", 5) == 5);
	CHECK(read(p.server, buf, sizeof(buf)) == 5);
	rc = kg_sockdiag_query(sa(&p.srv_local), sa(&p.srv_peer), &v);
	if (rc == -EPROTONOSUPPORT || rc == -EACCES) {
		printf("SKIP: sock_diag unavailable here: %s\n", strerror(-rc));
		netpair_close(&p);
		return T_EXIT_SKIP;
	}
	if (rc < 0)
		printf("query: %s\n", strerror(-rc));
	CHECK(rc == 0);
	CHECK(v.found && v.tcp_state == TCP_ESTABLISHED && !v.ulp_tls);
	CHECK(v.have_tcp_info && v.snd_cwnd > 0 && v.bytes_received == 5);
	printf("family %d: state %u rtt %u us cwnd %u acked %llu received %llu ulp_tls %d\n",
	       family, v.tcp_state, v.rtt_us, v.snd_cwnd, (unsigned long long)v.bytes_acked,
	       (unsigned long long)v.bytes_received, v.ulp_tls);

	/* The peer port of a connection that does not exist: the kernel's lookup
	 * falls back to the listener on our port, which must not count. */
	fake = p.srv_peer;
	netpair_set_port(&fake, (uint16_t)(netpair_port(&p.srv_peer) ^ 0x5a5a));
	CHECK(kg_sockdiag_query(sa(&p.srv_local), sa(&fake), &v) == 0 && !v.found);
	/* And with nothing on the local port either. */
	fake = p.srv_local;
	netpair_set_port(&fake, 1);
	CHECK(kg_sockdiag_query(sa(&fake), sa(&p.srv_peer), &v) == 0 && !v.found);
	/* Mixed families are refused before asking. */
	fake.ss_family = family == AF_INET ? AF_INET6 : AF_INET;
	CHECK(kg_sockdiag_query(sa(&fake), sa(&p.srv_peer), &v) == -EINVAL);
	netpair_close(&p);
	return 0;
}

static int run_live(void)
{
	int rc = live_family(AF_INET);

	if (rc == T_EXIT_SKIP)
		return rc;
	if (rc < 0)
		return T_EXIT_FAIL;
	if (live_family(AF_INET6) == T_EXIT_SKIP)
		return T_EXIT_SKIP;
	return T_DONE();
}

static int run_destroy(void)
{
	struct netpair p;
	struct sockaddr_storage fake;
	struct pollfd pfd;
	char c;
	int rc;

	if (netpair_open(&p, AF_INET) < 0) {
		perror("loopback pair");
		return T_EXIT_FAIL;
	}
	/* A 4-tuple that only matches the listener by fallback: never destroyed. */
	fake = p.srv_peer;
	netpair_set_port(&fake, (uint16_t)(netpair_port(&p.srv_peer) ^ 0x5a5a));
	rc = kg_sockdiag_destroy(sa(&p.srv_local), sa(&fake));
	CHECK(rc == -ENOENT);

	rc = kg_sockdiag_destroy(sa(&p.srv_local), sa(&p.srv_peer));
	if (rc == -EOPNOTSUPP || rc == -EPERM) {
		printf("SKIP: SOCK_DESTROY: %s (%s)\n", strerror(-rc), rc == -EOPNOTSUPP ?
		       "kernel built without CONFIG_INET_DIAG_DESTROY" : "needs CAP_NET_ADMIN");
		netpair_close(&p);
		return t_failures ? T_EXIT_FAIL : T_EXIT_SKIP;
	}
	CHECK(rc == 0);
	pfd = (struct pollfd){ .fd = p.client, .events = POLLIN };
	CHECK(poll(&pfd, 1, 2000) == 1);
	errno = 0;
	CHECK(recv(p.client, &c, 1, MSG_DONTWAIT) < 0 && errno == ECONNRESET);
	errno = 0;
	CHECK(recv(p.server, &c, 1, MSG_DONTWAIT) < 0 && errno == ECONNABORTED);
	CHECK(kg_sockdiag_destroy(sa(&p.srv_local), sa(&p.srv_peer)) == -ENOENT);

	/* The listener survived the fallback lookups above. */
	{
		int c2 = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		struct sockaddr_storage l;
		socklen_t len = sizeof(l);

		getsockname(p.listener, (struct sockaddr *)&l, &len);
		CHECK(connect(c2, (struct sockaddr *)&l, len) == 0);
		close(c2);
	}
	netpair_close(&p);
	return T_DONE();
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "parse";

	if (strcmp(mode, "parse") == 0)
		return run_parse();
	if (strcmp(mode, "live") == 0)
		return run_live();
	if (strcmp(mode, "destroy") == 0)
		return run_destroy();
	fprintf(stderr, "usage: %s parse|live|destroy\n", argv[0]);
	return T_EXIT_FAIL;
}
