/* sock_diag on real kTLS sockets: needs a kernel with kTLS (the UML guest,
 * tests/ktls/run-uml.sh); elsewhere it exits 77. Sets up kTLS by hand on a
 * loopback pair with dummy keys, moves a record each way, then checks what
 * the kernel reports: ULP "tls", version, cipher, SW/base per direction.
 * Usage: test_sockdiag_ktls [--expect-ktls]  (fail rather than skip when the
 * kernel is known to have kTLS). */
#include <errno.h>
#include <linux/tls.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/wait.h>

#include "netpair.h"
#include "sockdiag.h"
#include "test.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

static int set_aes128(int fd, int dir, uint8_t keybyte)
{
	struct tls12_crypto_info_aes_gcm_128 ci;

	memset(&ci, 0, sizeof(ci));
	ci.info.version = TLS_1_3_VERSION;
	ci.info.cipher_type = TLS_CIPHER_AES_GCM_128;
	memset(ci.key, keybyte, sizeof(ci.key));
	memset(ci.salt, keybyte ^ 0x55, sizeof(ci.salt));
	return setsockopt(fd, SOL_TLS, dir, &ci, sizeof(ci));
}

static int set_chacha12(int fd, int dir)
{
	struct tls12_crypto_info_chacha20_poly1305 ci;

	memset(&ci, 0, sizeof(ci));
	ci.info.version = TLS_1_2_VERSION;
	ci.info.cipher_type = TLS_CIPHER_CHACHA20_POLY1305;
	memset(ci.key, 7, sizeof(ci.key));
	return setsockopt(fd, SOL_TLS, dir, &ci, sizeof(ci));
}

static int set_ulp(int fd)
{
	return setsockopt(fd, SOL_TCP, TCP_ULP, "tls", sizeof("tls"));
}

static bool recv_exact(int fd, const char *want)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	char buf[32];
	ssize_t n;

	if (poll(&pfd, 1, 3000) != 1)
		return false;
	n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
	return n == (ssize_t)strlen(want) && memcmp(buf, want, (size_t)n) == 0;
}

static void print_view(const char *who, const struct kg_sock_view *v)
{
	printf("%s: found %d state %u ulp_tls %d %s %s tx %s rx %s rx_no_pad %d zc_ro_tx %d "
	       "rtt %u us acked %llu received %llu\n", who, v->found, v->tcp_state, v->ulp_tls,
	       kg_sockdiag_version_name(v->tls_version), kg_sockdiag_cipher_name(v->tls_cipher),
	       kg_sockdiag_conf_name(v->tls_txconf), kg_sockdiag_conf_name(v->tls_rxconf),
	       v->rx_no_pad, v->zc_ro_tx, v->rtt_us, (unsigned long long)v->bytes_acked,
	       (unsigned long long)v->bytes_received);
}

static int query(const struct netpair *p, struct kg_sock_view *v)
{
	return kg_sockdiag_query((const struct sockaddr *)&p->srv_local,
				 (const struct sockaddr *)&p->srv_peer, v);
}

/* TLS 1.3 AES-128-GCM both ways, a record each way, RX expecting no padding. */
static void test_aes13(void)
{
	struct netpair p;
	struct kg_sock_view v;
	int one = 1, nopad;

	CHECK(netpair_open(&p, AF_INET) == 0);
	CHECK(set_ulp(p.server) == 0 && set_ulp(p.client) == 0);
	CHECK(set_aes128(p.server, TLS_TX, 1) == 0 && set_aes128(p.server, TLS_RX, 2) == 0);
	CHECK(set_aes128(p.client, TLS_TX, 2) == 0 && set_aes128(p.client, TLS_RX, 1) == 0);
	nopad = setsockopt(p.server, SOL_TLS, TLS_RX_EXPECT_NO_PAD, &one, sizeof(one));
	if (nopad < 0)
		printf("TLS_RX_EXPECT_NO_PAD: %s (not checked)\n", strerror(errno));
	CHECK(send(p.server, "ping", 4, 0) == 4);
	CHECK(recv_exact(p.client, "ping"));
	CHECK(send(p.client, "pong!", 5, 0) == 5);
	CHECK(recv_exact(p.server, "pong!"));

	CHECK(query(&p, &v) == 0);
	print_view("aes-128-gcm tls1.3 server", &v);
	CHECK(v.found && v.tcp_state == TCP_ESTABLISHED && v.ulp_tls);
	CHECK(v.tls_version == TLS_1_3_VERSION && v.tls_cipher == TLS_CIPHER_AES_GCM_128);
	CHECK(v.tls_txconf == TLS_CONF_SW && v.tls_rxconf == TLS_CONF_SW);
	CHECK(nopad < 0 || v.rx_no_pad);
	CHECK(!v.zc_ro_tx);
	/* TCP counts record bytes: plaintext + 5 header + 1 inner type + 16 tag;
	 * "pong!" carried the ACK for "ping". */
	CHECK(v.have_tcp_info && v.bytes_received == 5 + 5 + 1 + 16);
	CHECK(v.bytes_acked == 4 + 5 + 1 + 16);
	CHECK_STR(kg_sockdiag_version_name(v.tls_version), "TLS 1.3");
	CHECK_STR(kg_sockdiag_cipher_name(v.tls_cipher), "AES-128-GCM");
	CHECK_STR(kg_sockdiag_conf_name(v.tls_txconf), "sw");
	netpair_close(&p);
}

/* TLS 1.2 ChaCha20-Poly1305, TX only: RX stays "base". */
static void test_chacha12_tx_only(void)
{
	struct netpair p;
	struct kg_sock_view v;

	CHECK(netpair_open(&p, AF_INET6) == 0 || netpair_open(&p, AF_INET) == 0);
	CHECK(set_ulp(p.server) == 0);
	if (set_chacha12(p.server, TLS_TX) < 0) {
		printf("ChaCha20-Poly1305 TX: %s (not checked)\n", strerror(errno));
		netpair_close(&p);
		return;
	}
	CHECK(query(&p, &v) == 0);
	print_view("chacha20 tls1.2 tx-only server", &v);
	CHECK(v.found && v.ulp_tls && v.tls_version == TLS_1_2_VERSION);
	CHECK(v.tls_cipher == TLS_CIPHER_CHACHA20_POLY1305);
	CHECK(v.tls_txconf == TLS_CONF_SW && v.tls_rxconf == TLS_CONF_BASE);
	CHECK(!v.rx_no_pad);
	netpair_close(&p);
}

/* The ULP without keys (between TCP_ULP and TLS_TX in the handoff). */
static void test_ulp_only(void)
{
	struct netpair p;
	struct kg_sock_view v;

	CHECK(netpair_open(&p, AF_INET) == 0);
	CHECK(set_ulp(p.server) == 0);
	CHECK(query(&p, &v) == 0);
	print_view("ulp without keys", &v);
	CHECK(v.found && v.ulp_tls && v.tls_version == 0 && v.tls_cipher == 0);
	CHECK(v.tls_txconf == TLS_CONF_BASE && v.tls_rxconf == TLS_CONF_BASE);
	netpair_close(&p);
}

/* Without CAP_NET_ADMIN (here: uid nobody) no TLS details: 6.1 leaves the
 * whole ULP info out, newer kernels send the name only (sockdiag.h). */
static void test_unprivileged(void)
{
	struct netpair p;
	pid_t pid;
	int status = 0;

	CHECK(netpair_open(&p, AF_INET) == 0);
	CHECK(set_ulp(p.server) == 0 && set_aes128(p.server, TLS_TX, 1) == 0);
	pid = fork();
	if (pid == 0) {
		struct kg_sock_view v;

		if (setgid(65534) < 0 || setuid(65534) < 0 || query(&p, &v) < 0)
			_exit(2);
		print_view("unprivileged", &v);
		_exit(v.found && v.tls_version == 0 && v.tls_cipher == 0 && v.tls_txconf == 0 ? 0 : 1);
	}
	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	netpair_close(&p);
}

/* This guest's kernel (Debian 6.1um) has no INET_DIAG_DESTROY: then the
 * answer must be EOPNOTSUPP; with it, the peer must see the reset. */
static void test_destroy(void)
{
	struct netpair p;
	char c;
	int rc;

	CHECK(netpair_open(&p, AF_INET) == 0);
	CHECK(set_ulp(p.server) == 0 && set_aes128(p.server, TLS_TX, 1) == 0);
	rc = kg_sockdiag_destroy((const struct sockaddr *)&p.srv_local,
				 (const struct sockaddr *)&p.srv_peer);
	printf("SOCK_DESTROY on a kTLS socket: %s\n", rc ? strerror(-rc) : "ok");
	CHECK(rc == 0 || rc == -EOPNOTSUPP);
	if (rc == 0) {
		struct pollfd pfd = { .fd = p.client, .events = POLLIN };

		CHECK(poll(&pfd, 1, 2000) == 1);
		errno = 0;
		CHECK(recv(p.client, &c, 1, MSG_DONTWAIT) < 0 && errno == ECONNRESET);
	}
	netpair_close(&p);
}

int main(int argc, char **argv)
{
	bool expect_ktls = argc > 1 && strcmp(argv[1], "--expect-ktls") == 0;
	struct netpair p;
	int rc;

	if (netpair_open(&p, AF_INET) < 0) {
		perror("loopback pair");
		return T_EXIT_FAIL;
	}
	rc = set_ulp(p.server);
	netpair_close(&p);
	if (rc < 0) {
		int e = errno;

		printf("SKIP: no kTLS on this kernel (TCP_ULP tls: %s)\n", strerror(e));
		if (expect_ktls && access("/proc/net/tls_stat", R_OK) == 0)
			return T_EXIT_FAIL; /* the module is there: this is a bug */
		return T_EXIT_SKIP;
	}
	if (geteuid() != 0) {
		printf("SKIP: not root: without CAP_NET_ADMIN the kernel leaves the TLS details out\n");
		return T_EXIT_SKIP;
	}
	test_aes13();
	test_chacha12_tx_only();
	test_ulp_only();
	test_unprivileged();
	test_destroy();
	return T_DONE();
}
