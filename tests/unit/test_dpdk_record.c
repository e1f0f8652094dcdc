/* The DPDK engine's record layer (dataplane/dpdk_record.c) through the
 * crypto_aesni_mb cryptodev, checked byte for byte against an independent
 * OpenSSL EVP implementation of the TLS 1.2 / 1.3 record protection:
 * every suite, TLS 1.2 explicit nonce = sequence number, TLS 1.3 inner
 * content type + header AAD + per-record nonce, no padding on send, any
 * padding accepted on receive, 1-byte / 16 KiB / over-limit records, a
 * corrupted tag or a wrong sequence number refused, sequence numbers
 * advancing, KeyUpdate. All of it twice: over heap buffers (IOVA as VA, the
 * software PMD path) and over DMA-safe mempool buffers (the hardware PMD
 * path), which must move the same bytes.
 * Exit 0 pass, 1 fail, 77 when the build has DPDK off. */
#include <stdio.h>

#include "test.h"

#ifndef KG_HAVE_DPDK
int main(void)
{
	fprintf(stderr, "built without DPDK (-Ddpdk=disabled)\n");
	(void)t_failures;
	return T_EXIT_SKIP;
}
#else
#include <linux/tls.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <stdlib.h>

#include "dpdk_int.h"
#include "worker.h"
#include "ktls_keys.h"

struct suite_case {
	const char *name;
	bool tls13;
	int cipher;
	const char *md; /* TLS 1.3 hash */
};

static const struct suite_case cases[] = {
	{ "TLS1.3 AES-128-GCM", true, TLS_CIPHER_AES_GCM_128, "SHA256" },
	{ "TLS1.3 AES-256-GCM", true, TLS_CIPHER_AES_GCM_256, "SHA384" },
	{ "TLS1.3 CHACHA20-POLY1305", true, TLS_CIPHER_CHACHA20_POLY1305, "SHA256" },
	{ "TLS1.2 AES-128-GCM", false, TLS_CIPHER_AES_GCM_128, "SHA256" },
	{ "TLS1.2 AES-256-GCM", false, TLS_CIPHER_AES_GCM_256, "SHA384" },
	{ "TLS1.2 CHACHA20-POLY1305", false, TLS_CIPHER_CHACHA20_POLY1305, "SHA256" },
};

#define REC_OFF 4093 /* a record's place in its buffer: crosses a 4 KiB page */
_Static_assert(REC_OFF + 5 + KG_DP_CT12_MAX + 512 <= KG_DP_BUF_SIZE, "records fit");

static struct kg_dpdk_worker *dw;
static const char *path; /* "heap" or "dma", for messages */

/* ---- the reference: OpenSSL EVP, from RFC 5246 / 5288 / 7905 / 8446 ---- */

static const EVP_CIPHER *evp_of(int cipher)
{
	return cipher == TLS_CIPHER_AES_GCM_128 ? EVP_aes_128_gcm()
	       : cipher == TLS_CIPHER_AES_GCM_256 ? EVP_aes_256_gcm()
						    : EVP_chacha20_poly1305();
}

static void be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

struct ref {
	const struct suite_case *sc;
	uint8_t key[32], iv[12]; /* TLS 1.2 GCM: iv[0..4) is the salt */
};

static void ref_nonce(const struct ref *r, uint64_t seq, uint8_t nonce[12])
{
	uint8_t s[8];

	be64(s, seq);
	memcpy(nonce, r->iv, 12);
	if (!r->sc->tls13 && r->sc->cipher != TLS_CIPHER_CHACHA20_POLY1305) {
		memcpy(nonce + 4, s, 8); /* RFC 5288: salt || explicit nonce (= seq) */
		return;
	}
	for (int i = 0; i < 8; i++)
		nonce[4 + i] ^= s[i];
}

/* One AEAD pass; 0, or -1 (tag mismatch on decrypt). */
static int evp_aead(const struct ref *r, bool enc, const uint8_t nonce[12], const uint8_t *aad,
		    int aad_len, const uint8_t *in, int len, uint8_t *out, uint8_t tag[16])
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int n = 0, ok;

	ok = EVP_CipherInit_ex(ctx, evp_of(r->sc->cipher), NULL, r->key, nonce, enc) == 1 &&
	     EVP_CipherUpdate(ctx, NULL, &n, aad, aad_len) == 1 &&
	     (len == 0 || EVP_CipherUpdate(ctx, out, &n, in, len) == 1);
	if (ok && !enc)
		ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, 16, tag) == 1;
	ok = ok && EVP_CipherFinal_ex(ctx, out + n, &n) == 1;
	if (ok && enc)
		ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, tag) == 1;
	EVP_CIPHER_CTX_free(ctx);
	return ok ? 0 : -1;
}

/* A whole record of content type `type` with `pad` zero bytes of TLS 1.3
 * padding; returns its length. */
static size_t ref_seal(const struct ref *r, uint64_t seq, uint8_t type, const uint8_t *pt,
		       size_t len, size_t pad, uint8_t *rec)
{
	bool t13 = r->sc->tls13, expl = !t13 && r->sc->cipher != TLS_CIPHER_CHACHA20_POLY1305;
	size_t h = expl ? 13 : 5, inner = t13 ? len + 1 + pad : len;
	size_t rec_len = (h - 5) + inner + 16;
	uint8_t nonce[12], aad[13], *plain = malloc(inner + 1);

	memcpy(plain, pt, len);
	if (t13) {
		plain[len] = type;
		memset(plain + len + 1, 0, pad);
	}
	rec[0] = t13 ? 23 : type, rec[1] = 3, rec[2] = 3;
	rec[3] = (uint8_t)(rec_len >> 8), rec[4] = (uint8_t)rec_len;
	if (expl)
		be64(rec + 5, seq);
	if (t13) {
		memcpy(aad, rec, 5);
	} else {
		be64(aad, seq);
		aad[8] = type, aad[9] = 3, aad[10] = 3;
		aad[11] = (uint8_t)(len >> 8), aad[12] = (uint8_t)len;
	}
	ref_nonce(r, seq, nonce);
	evp_aead(r, true, nonce, aad, t13 ? 5 : 13, plain, (int)inner, rec + h, rec + h + inner);
	free(plain);
	return 5 + rec_len;
}

/* HKDF-Expand-Label (RFC 8446 §7.1), context "", straight from EVP_KDF. */
static void ref_expand_label(const char *md, const uint8_t *secret, size_t slen,
			     const char *label, uint8_t *out, size_t len)
{
	uint8_t info[2 + 1 + 255 + 1];
	size_t ll = 6 + strlen(label), n = 0;
	int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;

	info[n++] = (uint8_t)(len >> 8), info[n++] = (uint8_t)len, info[n++] = (uint8_t)ll;
	memcpy(info + n, "tls13 ", 6), n += 6;
	memcpy(info + n, label, strlen(label)), n += strlen(label);
	info[n++] = 0;
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	EVP_KDF_CTX *kctx = EVP_KDF_CTX_new(kdf);
	OSSL_PARAM p[] = {
		OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
		OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)md, 0),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret, slen),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, n),
		OSSL_PARAM_construct_end(),
	};
	CHECK(EVP_KDF_derive(kctx, out, len, p) == 1);
	EVP_KDF_CTX_free(kctx);
	EVP_KDF_free(kdf);
}

/* ---- the code under test ---- */

struct rig {
	const struct suite_case *sc;
	struct kg_dp_suite s;
	struct kg_dp_keys tx, rx;
	struct ref ref;
	struct kg_dp_buf rec, out; /* a record, and the plaintext of an opened one */
	uint8_t *r, *o;            /* where in them: at an odd offset across a page */
};

/* What a device would DMA from: for mempool buffers the IOVA must be EAL's own
 * view of that address (its memseg table), not the virtual address assumed
 * for heap buffers. */
static void check_iova(const struct kg_dp_buf *b, const uint8_t *at, rte_iova_t got)
{
	if (!b->pool) {
		CHECK(got == (rte_iova_t)(uintptr_t)at);
		return;
	}
	const struct rte_memseg *ms = rte_mem_virt2memseg(at, NULL);
	CHECK(ms != NULL && ms->iova != RTE_BAD_IOVA);
	if (ms && got != ms->iova + (rte_iova_t)((uintptr_t)at - (uintptr_t)ms->addr)) {
		fprintf(stderr, "%s: IOVA %#llx, EAL says %#llx\n", path, (unsigned long long)got,
			(unsigned long long)(ms->iova + ((uintptr_t)at - (uintptr_t)ms->addr)));
		t_failures++;
	}
}

/* One operation through the device, synchronously: its status. */
static int run_op(struct kg_dp_keys *k, const struct kg_dp_suite *s, struct kg_dp_buf *sb,
		  uint8_t *rec, struct kg_dp_buf *db, uint8_t *dst, uint32_t body_len,
		  const uint8_t *aad, uint64_t seq)
{
	struct rte_crypto_op *op, *back = NULL;
	struct rte_mbuf *m[2] = { NULL, NULL };
	uint8_t nonce[12];

	if (rte_crypto_op_bulk_alloc(dw->ops, RTE_CRYPTO_OP_TYPE_SYMMETRIC, &op, 1) != 1 ||
	    rte_pktmbuf_alloc_bulk(dw->mbufs, m, dst ? 2 : 1) != 0) {
		fprintf(stderr, "pools dry\n");
		exit(T_EXIT_FAIL);
	}
	kg_dp_nonce(s, k, seq, rec + 5, nonce);
	kg_dp_op_setup(op, m[0], m[1], k->sess, sb, rec, db, dst, kg_dp_hdr_len(s), body_len,
		       aad, kg_dp_aad_len(s), nonce);
	check_iova(sb, rec, op->sym->m_src->buf_iova);
	CHECK(op->sym->aead.digest.phys_addr ==
	      op->sym->m_src->buf_iova + kg_dp_hdr_len(s) + body_len);
	if (dst)
		check_iova(db, dst, op->sym->m_dst->buf_iova);
	if (rte_cryptodev_enqueue_burst(dw->dev, dw->qp, &op, 1) != 1) {
		fprintf(stderr, "enqueue refused\n");
		exit(T_EXIT_FAIL);
	}
	while (rte_cryptodev_dequeue_burst(dw->dev, dw->qp, &back, 1) == 0)
		;
	CHECK(back == op);
	int status = op->status;
	kg_dp_op_release(op);
	rte_crypto_op_free(op);
	return status;
}

static void keys(struct rig *g, struct kg_dp_keys *k, bool encrypt, uint64_t seq)
{
	size_t klen = kg_ktls_key_len(g->sc->cipher);

	RAND_bytes(g->ref.key, (int)klen);
	RAND_bytes(g->ref.iv, 12);
	memcpy(k->iv, g->ref.iv, 12);
	k->seq = seq;
	k->sess = kg_dp_session_new(dw->dev, kg_dpdk_g.sessions, &g->s, g->ref.key, encrypt);
	CHECK(k->sess != NULL);
}

/* Seal n bytes of random plaintext as one record; compare with the reference. */
static void check_seal(struct rig *g, uint32_t n, uint8_t type)
{
	unsigned h = kg_dp_hdr_len(&g->s);
	uint8_t *pt = malloc(n ? n : 1), *want = malloc(5 + KG_DP_CT12_MAX), aad[13];
	uint64_t seq = g->tx.seq;

	RAND_bytes(pt, (int)n);
	memcpy(g->r + h, pt, n);
	uint32_t body = kg_dp_seal_frame(&g->s, g->r, n, type, seq, aad);
	uint32_t total = 5 + kg_dp_rec_len(&g->s, body);
	if (g->s.tls13) /* no padding: the inner type right after the content */
		CHECK(body == n + 1 && g->r[h + n] == type && g->r[0] == 23);
	CHECK(run_op(&g->tx, &g->s, &g->rec, g->r, NULL, NULL, body, aad, seq) ==
	      RTE_CRYPTO_OP_STATUS_SUCCESS);
	g->tx.seq++;
	size_t wlen = ref_seal(&g->ref, seq, type, pt, n, 0, want);
	if (total != wlen || memcmp(g->r, want, wlen) != 0) {
		fprintf(stderr, "%s/%s: sealed %u-byte record (seq %llu) differs from EVP's\n",
			g->sc->name, path, n, (unsigned long long)seq);
		t_failures++;
	}
	if (h == 13) { /* TLS 1.2 GCM: the explicit nonce is the sequence number */
		uint8_t s[8];
		be64(s, seq);
		CHECK(memcmp(g->r + 5, s, 8) == 0);
	}
	free(pt);
	free(want);
}

/* Open a reference record; 0 and its content, or the step that refused it. */
enum { OPEN_OK, OPEN_FRAME, OPEN_TAG, OPEN_INNER };
static int open_one(struct rig *g, uint64_t seq, uint8_t *rec, size_t len, uint8_t *type,
		    uint32_t *pt_len, int *why)
{
	uint8_t aad[13];
	uint32_t body;

	memcpy(g->r, rec, len);
	int total = kg_dp_open_frame(&g->s, g->r, (uint32_t)len, seq, &body, aad);
	*why = total;
	if (total <= 0)
		return OPEN_FRAME;
	CHECK((size_t)total == len);
	memset(g->o, 0xa5, (size_t)total);
	if (run_op(&g->rx, &g->s, &g->rec, g->r, &g->out, g->o, body, aad, seq) !=
	    RTE_CRYPTO_OP_STATUS_SUCCESS)
		return OPEN_TAG;
	*why = kg_dp_inner(&g->s, g->r[0], g->o + kg_dp_hdr_len(&g->s), body, pt_len,
			   type);
	return *why ? OPEN_INNER : OPEN_OK;
}

static void check_open(struct rig *g, uint32_t n, size_t pad, uint8_t type)
{
	uint8_t *pt = malloc(n + 1), *rec = malloc(5 + KG_DP_CT12_MAX + 512), got_type;
	uint32_t got_len;
	int why;
	uint64_t seq = g->rx.seq;

	RAND_bytes(pt, (int)n);
	size_t len = ref_seal(&g->ref, seq, type, pt, n, pad, rec);
	int rc = open_one(g, seq, rec, len, &got_type, &got_len, &why);
	if (rc != OPEN_OK || got_type != type || got_len != n ||
	    memcmp(g->o + kg_dp_hdr_len(&g->s), pt, n) != 0) {
		fprintf(stderr, "%s/%s: open %u bytes + %zu padding, type %u: step %d (%d)\n",
			g->sc->name, path, n, pad, type, rc, why);
		t_failures++;
	}
	g->rx.seq++;
	free(pt);
	free(rec);
}

/* Records that must be refused, and at which step. */
static void check_refused(struct rig *g)
{
	uint8_t *pt = calloc(1, KG_DP_PT_MAX + 512), *rec = malloc(5 + KG_DP_CT12_MAX + 512);
	uint8_t type;
	uint32_t len;
	int why;
	uint64_t seq = g->rx.seq;

	/* Plaintext one byte over 2^14: decrypts, then record_overflow. */
	size_t n = ref_seal(&g->ref, seq, 23, pt, KG_DP_PT_MAX + 1, 0, rec);
	CHECK(open_one(g, seq, rec, n, &type, &len, &why) == OPEN_INNER &&
	      why == KG_DP_INNER_OVERFLOW);
	/* A length field over the ciphertext limit: refused from the header. */
	size_t over = (g->s.tls13 ? KG_DP_CT_MAX : KG_DP_CT12_MAX) + 1;
	rec[3] = (uint8_t)(over >> 8), rec[4] = (uint8_t)over;
	CHECK(open_one(g, seq, rec, 5 + over, &type, &len, &why) == OPEN_FRAME &&
	      why == KG_DP_REC_BAD_LEN);
	/* Too short to hold a tag. */
	rec[3] = 0, rec[4] = 4;
	CHECK(open_one(g, seq, rec, 9, &type, &len, &why) == OPEN_FRAME &&
	      why == KG_DP_REC_BAD_LEN);
	/* Incomplete: wait for more. */
	n = ref_seal(&g->ref, seq, 23, pt, 100, 0, rec);
	CHECK(open_one(g, seq, rec, n - 1, &type, &len, &why) == OPEN_FRAME &&
	      why == KG_DP_REC_SHORT);
	/* A corrupted tag, a corrupted body, the wrong sequence number. */
	rec[n - 1] ^= 1;
	CHECK(open_one(g, seq, rec, n, &type, &len, &why) == OPEN_TAG);
	rec[n - 1] ^= 1;
	rec[n - 40] ^= 0x80;
	CHECK(open_one(g, seq, rec, n, &type, &len, &why) == OPEN_TAG);
	rec[n - 40] ^= 0x80;
	CHECK(open_one(g, seq + 1, rec, n, &type, &len, &why) == OPEN_TAG);
	CHECK(open_one(g, seq, rec, n, &type, &len, &why) == OPEN_OK && len == 100);
	if (g->s.tls13) {
		/* All padding, no content type: unexpected_message. */
		n = ref_seal(&g->ref, seq, 0, pt, 0, 10, rec);
		CHECK(open_one(g, seq, rec, n, &type, &len, &why) == OPEN_INNER &&
		      why == KG_DP_INNER_NO_TYPE);
		/* 16 KiB and padding up to exactly the ciphertext limit: accepted;
		 * one padding byte more is over it. */
		size_t pad = KG_DP_CT_MAX - KG_DP_PT_MAX - 1 - 16;
		n = ref_seal(&g->ref, seq, 23, pt, KG_DP_PT_MAX, pad, rec);
		CHECK(open_one(g, seq, rec, n, &type, &len, &why) == OPEN_OK &&
		      len == KG_DP_PT_MAX);
		n = ref_seal(&g->ref, seq, 23, pt, KG_DP_PT_MAX, pad + 1, rec);
		CHECK(open_one(g, seq, rec, n, &type, &len, &why) == OPEN_FRAME &&
		      why == KG_DP_REC_BAD_LEN);
		/* A TLS 1.3 record must say application_data outside. */
		n = ref_seal(&g->ref, seq, 23, pt, 10, 0, rec);
		rec[0] = 22;
		CHECK(open_one(g, seq, rec, n, &type, &len, &why) == OPEN_FRAME &&
		      why == KG_DP_REC_BAD_TYPE);
	}
	free(pt);
	free(rec);
}

/* KeyUpdate: both directions step their secret; the next record uses the
 * new key and IV from sequence number 0. */
static void check_rekey(struct rig *g)
{
	size_t slen = strcmp(g->sc->md, "SHA384") == 0 ? 48 : 32;
	size_t klen = kg_ktls_key_len(g->sc->cipher);
	uint8_t secret[48], next[48], key[32];
	void *old = NULL;

	RAND_bytes(secret, (int)slen);
	memcpy(g->tx.secret, secret, slen);
	memcpy(g->rx.secret, secret, slen);
	g->tx.seq = g->rx.seq = 77;
	CHECK(kg_dp_rekey(dw->dev, kg_dpdk_g.sessions, &g->s, g->sc->md, (unsigned)slen, &g->tx,
			  true, &old) == 0);
	kg_dp_session_free(dw->dev, old);
	CHECK(kg_dp_rekey(dw->dev, kg_dpdk_g.sessions, &g->s, g->sc->md, (unsigned)slen, &g->rx,
			  false, &old) == 0);
	kg_dp_session_free(dw->dev, old);
	CHECK(g->tx.seq == 0 && g->rx.seq == 0);
	ref_expand_label(g->sc->md, secret, slen, "traffic upd", next, slen);
	CHECK(memcmp(g->tx.secret, next, slen) == 0);
	ref_expand_label(g->sc->md, next, slen, "key", key, klen);
	ref_expand_label(g->sc->md, next, slen, "iv", g->ref.iv, 12);
	memcpy(g->ref.key, key, klen);
	CHECK(memcmp(g->tx.iv, g->ref.iv, 12) == 0);
	check_seal(g, 1000, 23);
	check_seal(g, 1, 23);
	check_open(g, 1000, 0, 23);
	CHECK(g->tx.seq == 2 && g->rx.seq == 1);
}

static void run_case(const struct suite_case *sc, struct rte_mempool *pool)
{
	struct rig g = { .sc = sc, .s = { .tls13 = sc->tls13, .cipher = sc->cipher },
			 .ref = { .sc = sc } };

	CHECK(kg_dp_buf_get(&g.rec, pool) == 0 && kg_dp_buf_get(&g.out, pool) == 0);
	if (pool) /* device memory: the IOVA is the object's, not its address */
		CHECK(g.rec.pool == pool && g.rec.iova != RTE_BAD_IOVA &&
		      kg_dp_iova(&g.rec, g.rec.p + 100) == g.rec.iova + 100);
	else
		CHECK(kg_dp_iova(&g.rec, g.rec.p + 100) == (rte_iova_t)(uintptr_t)(g.rec.p + 100));
	/* Records sit anywhere in the relay's buffers: not at the start here. */
	g.r = g.rec.p + REC_OFF, g.o = g.out.p + REC_OFF;
	/* Both directions with the same keys: the reference seals and opens. */
	keys(&g, &g.tx, true, 0x0102030405060708ull);
	memcpy(&g.rx.iv, g.tx.iv, 12);
	g.rx.seq = 5;
	g.rx.sess = kg_dp_session_new(dw->dev, kg_dpdk_g.sessions, &g.s, g.ref.key, false);
	CHECK(g.rx.sess != NULL);

	check_seal(&g, 1, 23);
	check_seal(&g, 1000, 23);
	check_seal(&g, KG_DP_PT_MAX, 23);
	check_seal(&g, 2, 21);                      /* an alert */
	check_seal(&g, 5, 22);                      /* a handshake message (KeyUpdate) */
	CHECK(g.tx.seq == 0x0102030405060708ull + 5); /* one per record */

	check_open(&g, 1, 0, 23);
	check_open(&g, 1000, 0, 23);
	check_open(&g, KG_DP_PT_MAX, 0, 23);
	check_open(&g, 2, 0, 21);
	if (sc->tls13) { /* any padding is accepted */
		check_open(&g, 1, 1, 23);
		check_open(&g, 300, 200, 23);
		check_open(&g, 0, 5, 23);
		check_open(&g, 5, 17, 22);
	}
	CHECK(g.rx.seq == 5 + (sc->tls13 ? 8 : 4));
	check_refused(&g);
	if (sc->tls13)
		check_rekey(&g);
	kg_dp_session_free(dw->dev, g.tx.sess);
	kg_dp_session_free(dw->dev, g.rx.sess);
	kg_dp_buf_put(&g.rec);
	kg_dp_buf_put(&g.out);
	CHECK(g.rec.p == NULL);
}

/* The spare list: a given-back buffer is the next one taken, it holds at
 * most KG_DP_SPARE, the rest goes back to its pool (mempool objects too). */
static void check_spares(struct rte_mempool *pool, unsigned objs)
{
	struct kg_dp_spare sp = { .n = 0 };
	struct kg_dp_buf b[KG_DP_SPARE + 2] = { { 0 } };
	unsigned n = pool ? objs : KG_DP_SPARE + 2;

	for (unsigned i = 0; i < n; i++)
		CHECK(kg_dp_spare_take(&sp, &b[i], pool) == 0 && b[i].p != NULL);
	uint8_t *held = b[0].p;
	CHECK(kg_dp_spare_take(&sp, &b[0], pool) == 0 && b[0].p == held); /* kept */
	if (pool) /* the pool is dry: a take fails and holds nothing */
		CHECK(kg_dp_spare_take(&sp, &b[n], pool) < 0 && b[n].p == NULL);
	for (unsigned i = 0; i < n; i++) {
		kg_dp_spare_give(&sp, &b[i]);
		CHECK(b[i].p == NULL);
	}
	CHECK(sp.n == (n < KG_DP_SPARE ? n : KG_DP_SPARE));
	kg_dp_spare_give(&sp, &b[0]); /* none held: nothing happens */
	CHECK(kg_dp_spare_take(&sp, &b[0], pool) == 0 && b[0].p != NULL);
	CHECK(sp.n == (n < KG_DP_SPARE ? n : KG_DP_SPARE) - 1);
	kg_dp_spare_give(&sp, &b[0]);
	kg_dp_spare_drain(&sp);
	CHECK(sp.n == 0);
	if (pool)
		CHECK(rte_mempool_avail_count(pool) == objs);
}

int main(void)
{
	struct kg_dpdk_caps caps;
	char err[512];
	struct kg_dpdk_opts o = { .memory_mb = 128, .queue_depth = 256 };

	if (kg_dpdk_init(&o, 1, &caps, err, sizeof(err)) < 0) {
		fprintf(stderr, "DPDK set-up: %s\n", err);
		return T_EXIT_FAIL;
	}
	dw = kg_dpdk_worker_new(0);
	CHECK(dw != NULL);
	/* The software PMD is no hardware one: heap buffers unless forced. */
	CHECK(!caps.dma_bufs && dw && dw->bufs == NULL);
	struct rte_mempool *dma = kg_dp_buf_pool_create("t_bufs", 4);
	CHECK(dma != NULL);
	if (!dw || !dma)
		return T_DONE();
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (!(caps.ciphers & (cases[i].cipher == TLS_CIPHER_AES_GCM_128 ? KG_KTLS_BIT_AES_128_GCM
				      : cases[i].cipher == TLS_CIPHER_AES_GCM_256
					      ? KG_KTLS_BIT_AES_256_GCM
					      : KG_KTLS_BIT_CHACHA20_POLY1305))) {
			fprintf(stderr, "%s: the device lacks it\n", cases[i].name);
			t_failures++;
			continue;
		}
		path = "heap";
		run_case(&cases[i], NULL);
		path = "dma";
		run_case(&cases[i], dma);
		fprintf(stderr, "%s: ok\n", cases[i].name);
	}
	CHECK(rte_mempool_avail_count(dma) == 4); /* every buffer back */
	check_spares(NULL, 0);
	check_spares(dma, 4);
	rte_mempool_free(dma);
	struct kg_worker w = { .dp = dw };
	kg_dpdk_shutdown(&w, 1);
	return T_DONE();
}
#endif
