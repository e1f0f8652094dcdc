/* TLS records over a cryptodev, without a connection: see dpdk_record.h. */
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include <rte_errno.h>

#include "dpdk_record.h"
#include "ktls_keys.h"

static void put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static bool explicit_nonce(const struct kg_dp_suite *s)
{
	return !s->tls13 && s->cipher != TLS_CIPHER_CHACHA20_POLY1305;
}

unsigned kg_dp_hdr_len(const struct kg_dp_suite *s)
{
	return explicit_nonce(s) ? 13 : 5;
}

unsigned kg_dp_aad_len(const struct kg_dp_suite *s)
{
	return s->tls13 ? 5 : 13;
}

void *kg_dp_session_new(uint8_t dev, struct rte_mempool *pool, const struct kg_dp_suite *s,
			const uint8_t *key, bool encrypt)
{
	struct rte_crypto_sym_xform x = {
		.type = RTE_CRYPTO_SYM_XFORM_AEAD,
		.aead = {
			.op = encrypt ? RTE_CRYPTO_AEAD_OP_ENCRYPT : RTE_CRYPTO_AEAD_OP_DECRYPT,
			.algo = s->cipher == TLS_CIPHER_CHACHA20_POLY1305 ?
					RTE_CRYPTO_AEAD_CHACHA20_POLY1305 : RTE_CRYPTO_AEAD_AES_GCM,
			.key = { .data = key, .length = (uint16_t)kg_ktls_key_len(s->cipher) },
			.iv = { .offset = KG_DP_IV_OFF, .length = 12 },
			.digest_length = KG_DP_TAG,
			.aad_length = (uint16_t)kg_dp_aad_len(s),
		},
	};
	return rte_cryptodev_sym_session_create(dev, &x, pool);
}

void kg_dp_session_free(uint8_t dev, void *sess)
{
	if (sess)
		rte_cryptodev_sym_session_free(dev, sess);
}

void kg_dp_nonce(const struct kg_dp_suite *s, const struct kg_dp_keys *k, uint64_t seq,
		 const uint8_t *explicit, uint8_t out[12])
{
	if (explicit_nonce(s)) {
		memcpy(out, k->iv, 4);
		memcpy(out + 4, explicit, 8);
		return;
	}
	uint8_t b[8];
	put_be64(b, seq);
	memcpy(out, k->iv, 12);
	for (int i = 0; i < 8; i++)
		out[4 + i] ^= b[i];
}

/* TLS 1.2: seq || type || version || plaintext length. TLS 1.3: the header. */
static void aad_for(const struct kg_dp_suite *s, const uint8_t *r, uint64_t seq,
		    uint32_t pt_len, uint8_t aad[13])
{
	if (s->tls13) {
		memcpy(aad, r, 5);
		return;
	}
	put_be64(aad, seq);
	aad[8] = r[0], aad[9] = r[1], aad[10] = r[2];
	aad[11] = (uint8_t)(pt_len >> 8), aad[12] = (uint8_t)pt_len;
}

uint32_t kg_dp_rec_len(const struct kg_dp_suite *s, uint32_t body)
{
	return (kg_dp_hdr_len(s) - 5) + body + KG_DP_TAG;
}

uint32_t kg_dp_seal_frame(const struct kg_dp_suite *s, uint8_t *r, uint32_t pt_len,
			  uint8_t type, uint64_t seq, uint8_t aad[13])
{
	unsigned h = kg_dp_hdr_len(s);
	uint32_t body = pt_len + (s->tls13 ? 1 : 0), rec_len = kg_dp_rec_len(s, body);

	r[0] = s->tls13 ? 23 : type;
	r[1] = 3, r[2] = 3;
	r[3] = (uint8_t)(rec_len >> 8), r[4] = (uint8_t)rec_len;
	if (h == 13)
		put_be64(r + 5, seq); /* the explicit nonce is the sequence number */
	if (s->tls13)
		r[h + pt_len] = type; /* inner content type, no padding */
	aad_for(s, r, seq, pt_len, aad);
	return body;
}

int kg_dp_open_frame(const struct kg_dp_suite *s, const uint8_t *r, uint32_t avail,
		     uint64_t seq, uint32_t *body, uint8_t aad[13])
{
	unsigned h = kg_dp_hdr_len(s);
	uint32_t ct_max = s->tls13 ? KG_DP_CT_MAX : KG_DP_CT12_MAX;

	if (avail < 5)
		return KG_DP_REC_SHORT;
	uint32_t len = (uint32_t)r[3] << 8 | r[4];
	if (len > ct_max || len < (h - 5) + KG_DP_TAG + (s->tls13 ? 1 : 0))
		return KG_DP_REC_BAD_LEN;
	if (r[1] != 3 || (s->tls13 && r[0] != 23) || r[0] < 20 || r[0] > 23)
		return KG_DP_REC_BAD_TYPE;
	if (avail < 5 + len)
		return KG_DP_REC_SHORT;
	*body = len - (h - 5) - KG_DP_TAG;
	aad_for(s, r, seq, *body, aad);
	return (int)(5 + len);
}

int kg_dp_inner(const struct kg_dp_suite *s, uint8_t outer, const uint8_t *pt,
		uint32_t body_len, uint32_t *len, uint8_t *type)
{
	uint32_t n = body_len;

	*type = outer;
	if (s->tls13) { /* any zero padding; the last non-zero byte is the type */
		while (n && pt[n - 1] == 0)
			n--;
		if (!n)
			return KG_DP_INNER_NO_TYPE;
		*type = pt[--n];
	}
	*len = n;
	return n > KG_DP_PT_MAX ? KG_DP_INNER_OVERFLOW : 0;
}

static void point(struct rte_mbuf *m, uint8_t *at, rte_iova_t iova, uint32_t total)
{
	m->buf_addr = at;
	m->buf_iova = iova;
	m->buf_len = (uint16_t)total;
	m->data_off = 0;
	m->data_len = (uint16_t)total;
	m->pkt_len = total;
}

void kg_dp_op_setup(struct rte_crypto_op *op, struct rte_mbuf *src, struct rte_mbuf *dst,
		    void *sess, const struct kg_dp_buf *sb, uint8_t *rec,
		    const struct kg_dp_buf *db, uint8_t *out, uint32_t body_off,
		    uint32_t body_len, const uint8_t *aad, unsigned aad_len,
		    const uint8_t nonce[12])
{
	struct kg_dp_op_priv *p = kg_dp_priv(op);
	uint32_t total = body_off + body_len + KG_DP_TAG;

	p->orig_buf = src->buf_addr;
	p->orig_iova = src->buf_iova;
	point(src, rec, kg_dp_iova(sb, rec), total);
	if (dst)
		point(dst, out, kg_dp_iova(db, out), total);
	memcpy(p->aad, aad, aad_len);
	memcpy(p->iv, nonce, 12);
	rte_crypto_op_attach_sym_session(op, sess);
	op->sym->m_src = src;
	op->sym->m_dst = dst;
	op->sym->aead.data.offset = body_off;
	op->sym->aead.data.length = body_len;
	op->sym->aead.digest.data = rec + body_off + body_len;
	op->sym->aead.digest.phys_addr = kg_dp_iova(sb, rec) + body_off + body_len;
	op->sym->aead.aad.data = p->aad;
	op->sym->aead.aad.phys_addr = rte_crypto_op_ctophys_offset(op, KG_DP_IV_OFF + 16);
}

static void restore_mbuf(struct rte_mbuf *m, void *buf, rte_iova_t iova)
{
	if (!m)
		return;
	m->buf_addr = buf;
	m->buf_iova = iova;
	m->buf_len = 0;
	m->data_off = 0;
	rte_pktmbuf_free(m);
}

void kg_dp_op_release(struct rte_crypto_op *op)
{
	struct kg_dp_op_priv *p = kg_dp_priv(op);
	/* Both mbufs came from the same header-only pool: same own buffer layout. */
	struct rte_mbuf *dst = op->sym->m_dst;

	restore_mbuf(op->sym->m_src, p->orig_buf, p->orig_iova);
	if (dst)
		restore_mbuf(dst, (char *)dst + sizeof(*dst),
			     rte_mempool_virt2iova(dst) + sizeof(*dst));
	op->sym->m_src = op->sym->m_dst = NULL;
}

int kg_dp_rekey(uint8_t dev, struct rte_mempool *pool, const struct kg_dp_suite *s,
		const char *md, unsigned secret_len, struct kg_dp_keys *k, bool encrypt,
		void **old)
{
	uint8_t key[32];

	*old = k->sess;
	k->sess = NULL;
	k->seq = 0;
	if (kg_tls13_step_secret(md, k->secret, secret_len) == 0 &&
	    kg_tls13_key_iv_md(md, k->secret, secret_len, key, kg_ktls_key_len(s->cipher),
			       k->iv) == 0)
		k->sess = kg_dp_session_new(dev, pool, s, key, encrypt);
	OPENSSL_cleanse(key, sizeof(key));
	return k->sess ? 0 : -1;
}

struct rte_mempool *kg_dp_buf_pool_create(const char *name, unsigned n)
{
	/* Objects are IOVA-contiguous (no RTE_MEMPOOL_F_NO_IOVA_CONTIG): a
	 * record never straddles two unrelated pages of device memory. */
	return rte_mempool_create(name, n, KG_DP_BUF_SIZE, 0, 0, NULL, NULL, NULL, NULL,
				  SOCKET_ID_ANY, 0);
}

int kg_dp_buf_get(struct kg_dp_buf *b, struct rte_mempool *pool)
{
	void *obj = NULL;

	b->pool = NULL;
	if (!pool) {
		b->p = malloc(KG_DP_BUF_SIZE);
		b->iova = 0;
		return b->p ? 0 : -1;
	}
	if (rte_mempool_get(pool, &obj) < 0) {
		b->p = NULL;
		return -1;
	}
	b->iova = rte_mempool_virt2iova(obj);
	if (b->iova == RTE_BAD_IOVA) {
		rte_mempool_put(pool, obj);
		b->p = NULL;
		return -1;
	}
	b->p = obj;
	b->pool = pool;
	return 0;
}

void kg_dp_buf_put(struct kg_dp_buf *b)
{
	if (!b->p)
		return;
	OPENSSL_cleanse(b->p, KG_DP_BUF_SIZE);
	if (b->pool)
		rte_mempool_put(b->pool, b->p);
	else
		free(b->p);
	b->p = NULL;
	b->pool = NULL;
}

int kg_dp_spare_take(struct kg_dp_spare *sp, struct kg_dp_buf *b, struct rte_mempool *pool)
{
	if (b->p)
		return 0;
	/* A spare from a mempool serves only that pool's worker: the same one. */
	if (sp->n) {
		*b = sp->b[--sp->n];
		return 0;
	}
	return kg_dp_buf_get(b, pool);
}

/* Not wiped on the way in: it stays with this worker, whose connections
 * only read back what they wrote themselves (bufpool.c's spares do alike). */
void kg_dp_spare_give(struct kg_dp_spare *sp, struct kg_dp_buf *b)
{
	if (!b->p)
		return;
	if (sp->n < KG_DP_SPARE) {
		sp->b[sp->n++] = *b;
		b->p = NULL;
		b->pool = NULL;
		return;
	}
	kg_dp_buf_put(b);
}

void kg_dp_spare_drain(struct kg_dp_spare *sp)
{
	while (sp->n)
		kg_dp_buf_put(&sp->b[--sp->n]);
}
