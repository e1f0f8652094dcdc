#include "ktls_rekey.h"

#include <errno.h>
#include <linux/tls.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

#define TLS_RT_HANDSHAKE 22
#define TLS_HS_KEY_UPDATE 24

static int real_setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
	return setsockopt(fd, level, name, val, len);
}

static ssize_t real_sendmsg(int fd, const struct msghdr *msg, int flags)
{
	return sendmsg(fd, msg, flags);
}

const struct kg_ktls_sys kg_ktls_sys_real = { real_setsockopt, real_sendmsg };

struct kg_ktls_rekey *kg_ktls_rekey_new(int cipher, const uint8_t *client, const uint8_t *server,
					size_t secret_len)
{
	struct kg_ktls_rekey *rk;

	if (secret_len == 0 || secret_len > KG_TLS13_SECRET_MAX)
		return NULL;
	rk = calloc(1, sizeof(*rk));
	if (!rk)
		return NULL;
	memcpy(rk->rx_secret, client, secret_len);
	memcpy(rk->tx_secret, server, secret_len);
	rk->secret_len = (uint8_t)secret_len;
	rk->cipher = cipher;
	return rk;
}

void kg_ktls_rekey_free(struct kg_ktls_rekey *rk)
{
	if (!rk)
		return;
	OPENSSL_cleanse(rk, sizeof(*rk));
	free(rk);
}

const char *kg_ktls_rekey_md(int cipher)
{
	return cipher == TLS_CIPHER_AES_GCM_256 ? "SHA384" : "SHA256";
}

int kg_tls13_next_secret(const char *md, const uint8_t *secret, size_t len, uint8_t *next)
{
	return kg_tls13_expand_label(md, secret, len, "traffic upd", next, len);
}

int kg_ktls_key_update_parse(const uint8_t *p, size_t n, bool *requested)
{
	/* msg_type 24, uint24 length 1, KeyUpdateRequest 0 or 1 (RFC 8446 §4.6.3) */
	if (n != 5 || p[0] != TLS_HS_KEY_UPDATE || p[1] || p[2] || p[3] != 1 || p[4] > 1)
		return -1;
	*requested = p[4] == 1;
	return 0;
}

/* Steps *secret in place and fills the crypto_info of its key, sequence 0
 * (RFC 8446 §5.3: every new traffic key starts at record 0). */
static int step_and_fill(int cipher, uint8_t *secret, size_t len, union kg_crypto_info *ci,
			 socklen_t *cilen)
{
	const char *md = kg_ktls_rekey_md(cipher);
	uint8_t next[KG_TLS13_SECRET_MAX], key[32], iv[12];
	size_t klen = kg_ktls_key_len(cipher);
	int rc = -1;

	if (kg_tls13_next_secret(md, secret, len, next) < 0 ||
	    kg_tls13_expand_label(md, next, len, "key", key, klen) < 0 ||
	    kg_tls13_expand_label(md, next, len, "iv", iv, sizeof(iv)) < 0)
		goto out;
	*cilen = kg_ktls_fill_info(ci, cipher, true, key, iv, 0);
	memcpy(secret, next, len);
	rc = 0;
out:
	OPENSSL_cleanse(next, sizeof(next));
	OPENSSL_cleanse(key, sizeof(key));
	OPENSSL_cleanse(iv, sizeof(iv));
	return rc;
}

/* Installs the next key of one direction; the stored secret moves on only
 * when the kernel took the key (a failed rekey leaves the context as it was). */
static int rekey_dir(struct kg_ktls_rekey *rk, int fd, const struct kg_ktls_sys *sys, bool tx,
		     char *why, size_t whylen)
{
	uint8_t secret[KG_TLS13_SECRET_MAX];
	union kg_crypto_info ci;
	socklen_t cilen = 0;
	int rc = -1;

	memcpy(secret, tx ? rk->tx_secret : rk->rx_secret, rk->secret_len);
	if (step_and_fill(rk->cipher, secret, rk->secret_len, &ci, &cilen) < 0) {
		snprintf(why, whylen, "KeyUpdate: %s key derivation failed", tx ? "TX" : "RX");
	} else if (sys->setsockopt(fd, SOL_TLS, tx ? TLS_TX : TLS_RX, &ci, cilen) < 0) {
		snprintf(why, whylen, "KeyUpdate: %s: %s", tx ? "TLS_TX" : "TLS_RX", strerror(errno));
	} else {
		memcpy(tx ? rk->tx_secret : rk->rx_secret, secret, rk->secret_len);
		*(tx ? &rk->tx_updates : &rk->rx_updates) += 1;
		rc = 0;
	}
	OPENSSL_cleanse(secret, sizeof(secret));
	OPENSSL_cleanse(&ci, sizeof(ci));
	return rc;
}

int kg_ktls_rekey_rx(struct kg_ktls_rekey *rk, int fd, const struct kg_ktls_sys *sys,
		     char *why, size_t whylen)
{
	return rekey_dir(rk, fd, sys, false, why, whylen);
}

int kg_ktls_rekey_tx(struct kg_ktls_rekey *rk, int fd, const struct kg_ktls_sys *sys,
		     char *why, size_t whylen)
{
	uint8_t ku[5] = { TLS_HS_KEY_UPDATE, 0, 0, 1, 0 }; /* update_not_requested */
	union { char buf[CMSG_SPACE(sizeof(uint8_t))]; struct cmsghdr align; } cbuf;
	struct iovec iov = { .iov_base = ku, .iov_len = sizeof(ku) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf,
			      .msg_controllen = sizeof(cbuf.buf) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	ssize_t n;

	memset(&cbuf, 0, sizeof(cbuf));
	cm->cmsg_level = SOL_TLS;
	cm->cmsg_type = TLS_SET_RECORD_TYPE;
	cm->cmsg_len = CMSG_LEN(sizeof(uint8_t));
	*CMSG_DATA(cm) = TLS_RT_HANDSHAKE;
	n = sys->sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return -EAGAIN;
	if (n != (ssize_t)sizeof(ku)) {
		snprintf(why, whylen, "KeyUpdate: sending ours: %s",
			 n < 0 ? strerror(errno) : "short write");
		return -1;
	}
	/* From here the client expects our next record under the new key. */
	if (rekey_dir(rk, fd, sys, true, why, whylen) < 0)
		return -1;
	rk->tx_wanted = false;
	return 0;
}
