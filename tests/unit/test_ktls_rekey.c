/* TLS 1.3 KeyUpdate on kTLS (dataplane/ktls_rekey.c), without a kernel that
 * can rekey: the syscalls are fakes that record what the kernel would get.
 * 1. HKDF-Expand-Label(secret, "traffic upd") and the key/iv of the result
 *    against vectors from an independent implementation (Python hmac, RFC
 *    5869 + RFC 8446 §7.1 built by hand), SHA-256 and SHA-384.
 * 2. Against OpenSSL itself, per suite: a real client sends KeyUpdate
 *    (update_requested) and data under its next key; the TLS_RX info we
 *    install must decrypt that record at sequence 0. A real server answers
 *    with its KeyUpdate and data under its next key; we must send the same
 *    KeyUpdate message and our TLS_TX info must decrypt that record.
 * 3. The KeyUpdate parser; a refused setsockopt or a full send buffer
 *    leaves the stored secrets as they were. */
#include <errno.h>
#include <linux/tls.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdlib.h>

#include "ktls_rekey.h"
#include "test.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

static size_t unhex(const char *h, uint8_t *out)
{
	size_t n = 0;

	for (; h[0] && h[1]; h += 2)
		sscanf(h, "%2hhx", &out[n++]);
	return n;
}

static void check_vectors(void)
{
	static const struct {
		const char *md, *next, *key, *iv;
		size_t len, klen;
	} v[] = {
		{ "SHA256", "2cecd0a17506ef5fa73edc062d6e7b5397cf074ec1b4d8f99a120772932f0b45",
		  "05cdc7251fb9f925889f80ebc1fd385f", "4ef68fed17d39b5f23bb4b30", 32, 16 },
		{ "SHA384", "401331b63e9d59f202e8f041042d9516f4cd7fa2e2ee14631d3b49fc340d7af3"
			    "7fc2c0c9f252d8036f81ec5b85cbe5db",
		  "eb354f3b48924ed78de34dd8aa6a6a0a51d857ddad1454d5cfa7b69f60712911",
		  "8478ffbe4f2e5450789775b3", 48, 32 },
	};

	for (size_t i = 0; i < 2; i++) {
		uint8_t secret[48], next[48], want[48], key[32], iv[12];

		for (size_t j = 0; j < v[i].len; j++)
			secret[j] = (uint8_t)j;
		CHECK(kg_tls13_next_secret(v[i].md, secret, v[i].len, next) == 0);
		CHECK(unhex(v[i].next, want) == v[i].len && memcmp(next, want, v[i].len) == 0);
		CHECK(kg_tls13_expand_label(v[i].md, next, v[i].len, "key", key, v[i].klen) == 0);
		CHECK(unhex(v[i].key, want) == v[i].klen && memcmp(key, want, v[i].klen) == 0);
		CHECK(kg_tls13_expand_label(v[i].md, next, v[i].len, "iv", iv, 12) == 0);
		CHECK(unhex(v[i].iv, want) == 12 && memcmp(iv, want, 12) == 0);
	}
}

/* ---- fake syscalls ---- */

static struct {
	int fail_errno;            /* setsockopt fails with this when set */
	bool send_eagain;
	int calls;                 /* setsockopt calls */
	int last_name;
	union kg_crypto_info info;
	socklen_t info_len;
	uint8_t sent[16];
	size_t sent_len;
	int sent_type;
	int order;                 /* 1: sendmsg came before the TLS_TX setsockopt */
} fake;

static int fake_setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
	(void)fd;
	fake.calls++;
	if (fake.fail_errno) {
		errno = fake.fail_errno;
		return -1;
	}
	CHECK(level == SOL_TLS);
	fake.last_name = name;
	if (name == TLS_TX && fake.sent_len)
		fake.order = 1;
	memcpy(&fake.info, val, len < sizeof(fake.info) ? len : sizeof(fake.info));
	fake.info_len = len;
	return 0;
}

static ssize_t fake_sendmsg(int fd, const struct msghdr *msg, int flags)
{
	struct cmsghdr *cm = CMSG_FIRSTHDR((struct msghdr *)msg);

	(void)fd;
	CHECK(flags & MSG_DONTWAIT);
	if (fake.send_eagain) {
		errno = EAGAIN;
		return -1;
	}
	CHECK(cm && cm->cmsg_level == SOL_TLS && cm->cmsg_type == TLS_SET_RECORD_TYPE);
	fake.sent_type = cm ? *CMSG_DATA(cm) : -1;
	fake.sent_len = msg->msg_iov[0].iov_len;
	memcpy(fake.sent, msg->msg_iov[0].iov_base, fake.sent_len < 16 ? fake.sent_len : 16);
	return (ssize_t)fake.sent_len;
}

static const struct kg_ktls_sys fake_sys = { fake_setsockopt, fake_sendmsg };

/* ---- decrypting a TLS 1.3 record with what the kernel was given ---- */

static int info_key(const union kg_crypto_info *ci, const uint8_t **key, uint8_t nonce[12],
		    const uint8_t **seq, const EVP_CIPHER **ev)
{
	switch (ci->info.cipher_type) {
	case TLS_CIPHER_AES_GCM_128:
		*key = ci->aes128.key, *seq = ci->aes128.rec_seq, *ev = EVP_aes_128_gcm();
		memcpy(nonce, ci->aes128.salt, 4), memcpy(nonce + 4, ci->aes128.iv, 8);
		return 0;
	case TLS_CIPHER_AES_GCM_256:
		*key = ci->aes256.key, *seq = ci->aes256.rec_seq, *ev = EVP_aes_256_gcm();
		memcpy(nonce, ci->aes256.salt, 4), memcpy(nonce + 4, ci->aes256.iv, 8);
		return 0;
	case TLS_CIPHER_CHACHA20_POLY1305:
		*key = ci->chacha.key, *seq = ci->chacha.rec_seq, *ev = EVP_chacha20_poly1305();
		memcpy(nonce, ci->chacha.iv, 12);
		return 0;
	}
	return -1;
}

/* rec: one whole record (header + ciphertext + tag). Returns the inner
 * plaintext length (content type stripped) or -1. */
static int open_record(const union kg_crypto_info *ci, const uint8_t *rec, size_t n, uint8_t *out)
{
	const uint8_t *key, *seq;
	const EVP_CIPHER *ev;
	uint8_t nonce[12];
	EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
	int len = -1, l1 = 0, l2 = 0;
	size_t clen = n - 5 - 16;

	if (!x || n < 5 + 16 + 1 || info_key(ci, &key, nonce, &seq, &ev) < 0)
		goto out;
	for (int i = 0; i < 8; i++)
		nonce[4 + i] ^= seq[i];
	if (EVP_DecryptInit_ex(x, ev, NULL, NULL, NULL) != 1 ||
	    EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_SET_IVLEN, 12, NULL) != 1 ||
	    EVP_DecryptInit_ex(x, NULL, NULL, key, nonce) != 1 ||
	    EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_SET_TAG, 16, (void *)(rec + 5 + clen)) != 1 ||
	    EVP_DecryptUpdate(x, NULL, &l1, rec, 5) != 1 ||
	    EVP_DecryptUpdate(x, out, &l1, rec + 5, (int)clen) != 1 ||
	    EVP_DecryptFinal_ex(x, out + l1, &l2) != 1)
		goto out;
	len = l1 + l2;
	while (len > 0 && out[len - 1] == 0) /* padding */
		len--;
	if (len < 1 || out[len - 1] != 23) /* inner type: application_data */
		len = -1;
	else
		len--;
out:
	EVP_CIPHER_CTX_free(x);
	return len;
}

/* The n-th (0-based) record in buf. */
static const uint8_t *nth_record(const uint8_t *buf, size_t len, int nth, size_t *rlen)
{
	size_t off = 0;

	while (off + 5 <= len) {
		size_t r = 5 + ((size_t)buf[off + 3] << 8 | buf[off + 4]);
		if (nth-- == 0) {
			*rlen = r;
			return off + r <= len ? buf + off : NULL;
		}
		off += r;
	}
	return NULL;
}

/* ---- an in-memory TLS 1.3 connection with OpenSSL on both ends ---- */

static struct { uint8_t client[48], server[48]; size_t len; } captured;

static void keylog(const SSL *ssl, const char *line)
{
	const char *hex = strrchr(line, ' ');

	(void)ssl;
	if (strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24) == 0)
		captured.len = unhex(hex + 1, captured.client);
	else if (strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24) == 0)
		captured.len = unhex(hex + 1, captured.server);
}

static SSL_CTX *server_ctx(const char *suite)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	EVP_PKEY *pk = EVP_EC_gen("P-256");
	X509 *x = X509_new();

	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
				   (const unsigned char *)"rekey-test", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	X509_set_pubkey(x, pk);
	X509_sign(x, pk, EVP_sha256());
	SSL_CTX_use_certificate(ctx, x);
	SSL_CTX_use_PrivateKey(ctx, pk);
	SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_ciphersuites(ctx, suite);
	SSL_CTX_set_num_tickets(ctx, 0);
	SSL_CTX_set_keylog_callback(ctx, keylog);
	X509_free(x);
	EVP_PKEY_free(pk);
	return ctx;
}

static void pump(BIO *from, BIO *to)
{
	uint8_t buf[16384];
	int n;

	while ((n = BIO_read(from, buf, sizeof(buf))) > 0)
		BIO_write(to, buf, n);
}

static size_t drain(BIO *b, uint8_t *buf, size_t cap)
{
	int n = BIO_read(b, buf, (int)cap);
	return n > 0 ? (size_t)n : 0;
}

static void check_against_openssl(const char *suite, int cipher)
{
	SSL_CTX *sctx = server_ctx(suite), *cctx = SSL_CTX_new(TLS_client_method());
	SSL *srv = SSL_new(sctx), *cli;
	BIO *c_in = BIO_new(BIO_s_mem()), *c_out = BIO_new(BIO_s_mem());
	BIO *s_in = BIO_new(BIO_s_mem()), *s_out = BIO_new(BIO_s_mem());
	uint8_t wire[65536], plain[256];
	size_t n, rlen;
	const uint8_t *rec;
	struct kg_ktls_rekey *rk;
	char why[160];
	bool requested = false;
	int len;

	SSL_CTX_set_ciphersuites(cctx, suite);
	SSL_CTX_set_min_proto_version(cctx, TLS1_3_VERSION);
	cli = SSL_new(cctx);
	SSL_set_bio(cli, c_in, c_out);
	SSL_set_bio(srv, s_in, s_out);
	SSL_set_connect_state(cli);
	SSL_set_accept_state(srv);
	memset(&captured, 0, sizeof(captured));
	for (int i = 0; i < 10 && !(SSL_is_init_finished(cli) && SSL_is_init_finished(srv)); i++) {
		SSL_do_handshake(cli);
		pump(c_out, s_in);
		SSL_do_handshake(srv);
		pump(s_out, c_in);
	}
	CHECK(SSL_is_init_finished(cli) && SSL_is_init_finished(srv));
	CHECK(captured.len == (cipher == TLS_CIPHER_AES_GCM_256 ? 48u : 32u));
	rk = kg_ktls_rekey_new(cipher, captured.client, captured.server, captured.len);
	CHECK(rk != NULL);
	if (!rk)
		goto out;

	/* Client: KeyUpdate (update_requested), then data under its next key. */
	CHECK(SSL_key_update(cli, SSL_KEY_UPDATE_REQUESTED) == 1);
	CHECK(SSL_write(cli, "after update", 12) == 12);
	n = drain(c_out, wire, sizeof(wire));
	BIO_write(s_in, wire, (int)n); /* the reference server reads the same bytes */
	memset(&fake, 0, sizeof(fake));
	CHECK(kg_ktls_rekey_rx(rk, 5, &fake_sys, why, sizeof(why)) == 0);
	CHECK(fake.calls == 1 && fake.last_name == TLS_RX);
	CHECK(fake.info.info.version == TLS_1_3_VERSION && fake.info.info.cipher_type == cipher);
	rec = nth_record(wire, n, 1, &rlen);
	len = rec ? open_record(&fake.info, rec, rlen, plain) : -1;
	CHECK(len == 12 && memcmp(plain, "after update", 12) == 0);
	CHECK(kg_ktls_key_update_parse((const uint8_t *)"\x18\x00\x00\x01\x01", 5, &requested) == 0);
	CHECK(requested);

	/* Reference server: answers with its KeyUpdate, then data under its next key. */
	CHECK(SSL_read(srv, plain, sizeof(plain)) == 12);
	CHECK(SSL_write(srv, "pong", 4) == 4);
	n = drain(s_out, wire, sizeof(wire));
	memset(&fake, 0, sizeof(fake));
	rk->tx_wanted = true;
	CHECK(kg_ktls_rekey_tx(rk, 5, &fake_sys, why, sizeof(why)) == 0);
	CHECK(!rk->tx_wanted);
	CHECK(fake.sent_type == 22 && fake.sent_len == 5 &&
	      memcmp(fake.sent, "\x18\x00\x00\x01\x00", 5) == 0);
	CHECK(fake.order == 1 && fake.last_name == TLS_TX);
	rec = nth_record(wire, n, 1, &rlen);
	len = rec ? open_record(&fake.info, rec, rlen, plain) : -1;
	CHECK(len == 4 && memcmp(plain, "pong", 4) == 0);
	CHECK(rk->rx_updates == 1 && rk->tx_updates == 1);
	printf("%s: checked the records after both KeyUpdates against our TLS_RX/TLS_TX info\n",
	       suite);
out:
	kg_ktls_rekey_free(rk);
	SSL_free(cli);
	SSL_free(srv);
	SSL_CTX_free(cctx);
	SSL_CTX_free(sctx);
}

static void check_failures(void)
{
	uint8_t c[32] = { 1 }, s[32] = { 2 };
	struct kg_ktls_rekey *rk = kg_ktls_rekey_new(TLS_CIPHER_AES_GCM_128, c, s, 32);
	bool req;
	char why[160];

	CHECK(kg_ktls_key_update_parse((const uint8_t *)"\x18\x00\x00\x01\x00", 5, &req) == 0 && !req);
	CHECK(kg_ktls_key_update_parse((const uint8_t *)"\x18\x00\x00\x01\x02", 5, &req) < 0);
	CHECK(kg_ktls_key_update_parse((const uint8_t *)"\x18\x00\x00\x02\x00\x00", 6, &req) < 0);
	CHECK(kg_ktls_key_update_parse((const uint8_t *)"\x04\x00\x00\x01\x00", 5, &req) < 0);
	CHECK(kg_ktls_rekey_new(TLS_CIPHER_AES_GCM_128, c, s, 0) == NULL);
	if (!rk)
		return;
	memset(&fake, 0, sizeof(fake));
	fake.fail_errno = EBUSY; /* a kernel that cannot rekey */
	CHECK(kg_ktls_rekey_rx(rk, 5, &fake_sys, why, sizeof(why)) < 0);
	CHECK_CONTAINS(why, "TLS_RX: Device or resource busy");
	CHECK(memcmp(rk->rx_secret, c, 32) == 0 && rk->rx_updates == 0);
	memset(&fake, 0, sizeof(fake));
	fake.send_eagain = true;
	rk->tx_wanted = true;
	CHECK(kg_ktls_rekey_tx(rk, 5, &fake_sys, why, sizeof(why)) == -EAGAIN);
	CHECK(fake.calls == 0 && rk->tx_wanted && memcmp(rk->tx_secret, s, 32) == 0);
	kg_ktls_rekey_free(rk);
}

int main(void)
{
	check_vectors();
	check_against_openssl("TLS_AES_128_GCM_SHA256", TLS_CIPHER_AES_GCM_128);
	check_against_openssl("TLS_AES_256_GCM_SHA384", TLS_CIPHER_AES_GCM_256);
	check_against_openssl("TLS_CHACHA20_POLY1305_SHA256", TLS_CIPHER_CHACHA20_POLY1305);
	check_failures();
	return T_DONE();
}
