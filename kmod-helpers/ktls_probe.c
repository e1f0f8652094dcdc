#include "ktls_probe.h"

#include <errno.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ktls_modules.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

static const char *const cipher_names[] = { "AES-128-GCM", "AES-256-GCM", "CHACHA20-POLY1305" };

const char *kg_ktls_cipher_name(enum kg_ktls_cipher c)
{
	return c < KG_KTLS_NCIPHERS ? cipher_names[c] : "?";
}

/* A connected loopback TCP pair; the kernel only accepts the ULP on an
 * ESTABLISHED socket. Returns 0 and fds[0] (accepted side), fds[1]. */
static int loopback_pair(int fds[2])
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	fds[0] = fds[1] = -1;
	if (l < 0)
		return -1;
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 1) < 0 ||
	    getsockname(l, (struct sockaddr *)&a, &len) < 0)
		goto fail;
	fds[1] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fds[1] < 0 || connect(fds[1], (struct sockaddr *)&a, sizeof(a)) < 0)
		goto fail;
	fds[0] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	if (fds[0] < 0)
		goto fail;
	close(l);
	return 0;
fail:
	if (fds[1] >= 0)
		close(fds[1]);
	close(l);
	return -1;
}

static void close_pair(int fds[2])
{
	close(fds[0]);
	close(fds[1]);
}

static int try_crypto(int fd, int dir, enum kg_ktls_cipher c)
{
	union {
		struct tls12_crypto_info_aes_gcm_128 g128;
		struct tls12_crypto_info_aes_gcm_256 g256;
		struct tls12_crypto_info_chacha20_poly1305 cc;
	} ci;
	socklen_t len;

	memset(&ci, 0, sizeof(ci)); /* an all-zero key is fine: nothing is sent */
	ci.g128.info.version = TLS_1_3_VERSION;
	switch (c) {
	case KG_KTLS_AES_128_GCM:
		ci.g128.info.cipher_type = TLS_CIPHER_AES_GCM_128;
		len = sizeof(ci.g128);
		break;
	case KG_KTLS_AES_256_GCM:
		ci.g256.info.cipher_type = TLS_CIPHER_AES_GCM_256;
		len = sizeof(ci.g256);
		break;
	default:
		ci.cc.info.cipher_type = TLS_CIPHER_CHACHA20_POLY1305;
		len = sizeof(ci.cc);
	}
	return setsockopt(fd, SOL_TLS, dir, &ci, len);
}

/* One fresh pair per cipher: crypto info can be set only once per socket. */
static void probe_cipher(struct kg_ktls_caps *caps, enum kg_ktls_cipher c)
{
	int fds[2];

	if (loopback_pair(fds) < 0)
		return;
	if (setsockopt(fds[0], SOL_TCP, TCP_ULP, "tls", sizeof("tls")) < 0) {
		caps->ulp_errno = errno;
		close_pair(fds);
		return;
	}
	caps->tx[c] = try_crypto(fds[0], TLS_TX, c) == 0;
	caps->rx[c] = try_crypto(fds[0], TLS_RX, c) == 0;
	/* Rekey (6.14+): a second TLS_RX with the same version and cipher is a
	 * new key; older kernels refuse any second one (EBUSY). */
	if (caps->rx[c] && !caps->rekey)
		caps->rekey = try_crypto(fds[0], TLS_RX, c) == 0;
	close_pair(fds);
}

void kg_ktls_probe(struct kg_ktls_caps *caps)
{
	char why[160] = "";

	memset(caps, 0, sizeof(*caps));
	caps->module_loaded = kg_ktls_load_modules(why, sizeof(why)) == 0;
	for (int c = 0; c < KG_KTLS_NCIPHERS; c++) {
		probe_cipher(caps, (enum kg_ktls_cipher)c);
		if (caps->ulp_errno)
			break;
		caps->available |= caps->tx[c] && caps->rx[c];
	}
	if (caps->ulp_errno)
		snprintf(caps->reason, sizeof(caps->reason), "TCP_ULP tls: %s%s%s",
			 strerror(caps->ulp_errno), why[0] ? "; " : "", why);
	else if (!caps->available)
		snprintf(caps->reason, sizeof(caps->reason), "no cipher accepted for both TX and RX");
	else
		snprintf(caps->reason, sizeof(caps->reason), "%s",
			 caps->module_loaded ? "tls module loaded" : why);
}

void kg_ktls_caps_describe(const struct kg_ktls_caps *caps, char *buf, size_t len)
{
	size_t n;

	if (!caps->available) {
		snprintf(buf, len, "unavailable (%s)", caps->reason);
		return;
	}
	n = (size_t)snprintf(buf, len, "available (%s; TX/RX", caps->reason);
	for (int c = 0; c < KG_KTLS_NCIPHERS && n < len; c++)
		if (caps->tx[c] && caps->rx[c])
			n += (size_t)snprintf(buf + n, len - n, " %s", cipher_names[c]);
	if (n < len)
		snprintf(buf + n, len - n, "; rekey: %s)", caps->rekey ? "yes" : "no");
}
