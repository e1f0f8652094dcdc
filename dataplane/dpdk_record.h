/* The TLS record layer of the DPDK engine, apart from any connection: framing
 * (header, TLS 1.2 explicit nonce, TLS 1.3 inner content type, AAD, nonce),
 * crypto operations over caller-owned record buffers, KeyUpdate, and the
 * buffers themselves (heap, IOVA as VA, for software PMDs; mempool objects
 * with their own IOVA for devices that DMA). relay_dpdk.c drives it per
 * connection; tests/unit/test_dpdk_record.c checks it against OpenSSL EVP.
 * The kTLS-style split: relay = main, this = the software record code. */
#ifndef KG_DPDK_RECORD_H
#define KG_DPDK_RECORD_H
#include <stdbool.h>
#include <stdint.h>

#include <rte_crypto.h>
#include <rte_cryptodev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#define KG_DP_PT_MAX 16384                /* record plaintext limit (2^14) */
#define KG_DP_CT_MAX (KG_DP_PT_MAX + 256) /* TLS 1.3 ciphertext limit */
#define KG_DP_CT12_MAX (KG_DP_PT_MAX + 2048) /* TLS 1.2 ciphertext limit */
#define KG_DP_TAG 16
/* One record buffer (rx ciphertext, rx plaintext, tx records + control):
 * every buffer of a connection has this size, so one pool serves them all. */
#define KG_DP_RX_CAP (4 * (5 + KG_DP_CT_MAX + 2048))
#define KG_DP_BUF_SIZE KG_DP_RX_CAP

/* The negotiated suite: the cipher is a kernel TLS_CIPHER_* value. */
struct kg_dp_suite {
	bool tls13;
	int cipher;
};

/* One direction's keys. */
struct kg_dp_keys {
	void *sess;
	uint8_t iv[12];   /* TLS 1.3 and ChaCha: static IV; TLS 1.2 GCM: 4-byte salt */
	uint64_t seq;
	uint8_t secret[48];
};

/* A record buffer. pool NULL: heap memory, IOVA as VA (software PMDs);
 * else one IOVA-contiguous mempool object whose IOVA is iova. */
struct kg_dp_buf {
	uint8_t *p;
	rte_iova_t iova;
	struct rte_mempool *pool;
};

/* The private area after each operation's sym op: nonce, AAD and owner. */
struct kg_dp_op_priv {
	uint8_t iv[16];
	uint8_t aad[16];
	void *owner;             /* the connection (relay_dpdk.c) */
	void *orig_buf;          /* the mbuf's own buf_addr/iova, restored before free */
	rte_iova_t orig_iova;
	uint16_t idx;            /* the record's place in its batch */
	uint8_t dir;             /* 0: rx (decrypt), 1: tx (encrypt) */
};
#define KG_DP_IV_OFF (sizeof(struct rte_crypto_op) + sizeof(struct rte_crypto_sym_op))

static inline struct kg_dp_op_priv *kg_dp_priv(struct rte_crypto_op *op)
{
	return rte_crypto_op_ctod_offset(op, struct kg_dp_op_priv *, KG_DP_IV_OFF);
}

/* Bytes before the body: 5, or 13 with TLS 1.2 GCM's explicit nonce. */
unsigned kg_dp_hdr_len(const struct kg_dp_suite *s);
unsigned kg_dp_aad_len(const struct kg_dp_suite *s);

/* The AEAD session of one direction on device dev (sessions from pool). */
void *kg_dp_session_new(uint8_t dev, struct rte_mempool *pool, const struct kg_dp_suite *s,
			const uint8_t *key, bool encrypt);
void kg_dp_session_free(uint8_t dev, void *sess);

/* The per-record nonce: iv XOR seq (TLS 1.3, ChaCha), or salt || explicit. */
void kg_dp_nonce(const struct kg_dp_suite *s, const struct kg_dp_keys *k, uint64_t seq,
		 const uint8_t *explicit_nonce, uint8_t out[12]);

/* Frames a record around pt_len (<= KG_DP_PT_MAX) plaintext bytes already at
 * r + kg_dp_hdr_len: header, explicit nonce = seq (TLS 1.2 GCM), inner
 * content type without padding (TLS 1.3), and the AAD. Returns the length to
 * encrypt (the body); the whole record is 5 + kg_dp_rec_len(s, body). */
uint32_t kg_dp_seal_frame(const struct kg_dp_suite *s, uint8_t *r, uint32_t pt_len,
			  uint8_t type, uint64_t seq, uint8_t aad[13]);
uint32_t kg_dp_rec_len(const struct kg_dp_suite *s, uint32_t body);

enum { KG_DP_REC_SHORT = 0, KG_DP_REC_BAD_LEN = -1, KG_DP_REC_BAD_TYPE = -2 };
/* The record header at r, avail bytes there: its whole length (> 0), or
 * KG_DP_REC_SHORT (incomplete), BAD_LEN (record_overflow), BAD_TYPE.
 * On success *body is the length to decrypt and aad holds the AAD for seq. */
int kg_dp_open_frame(const struct kg_dp_suite *s, const uint8_t *r, uint32_t avail,
		     uint64_t seq, uint32_t *body, uint8_t aad[13]);

enum { KG_DP_INNER_NO_TYPE = -1, KG_DP_INNER_OVERFLOW = -2 };
/* A decrypted body at pt (the record's plaintext, body_len bytes from
 * kg_dp_open_frame) with outer type outer: the content length and type
 * (TLS 1.3: padding stripped, the last non-zero byte is the type).
 * 0, or KG_DP_INNER_NO_TYPE / KG_DP_INNER_OVERFLOW (over 2^14). */
int kg_dp_inner(const struct kg_dp_suite *s, uint8_t outer, const uint8_t *pt,
		uint32_t body_len, uint32_t *len, uint8_t *type);

/* One AEAD operation over one record at rec (in buffer sb): body at
 * rec + body_off, tag after it; out of place (decrypt) into dst (in db) at
 * the same offsets when dst is set. The mbufs are header-only ones from a
 * pool with no data room: they are pointed at the record, with the buffer's
 * IOVA. kg_dp_op_release puts them back. */
void kg_dp_op_setup(struct rte_crypto_op *op, struct rte_mbuf *src, struct rte_mbuf *dst,
		    void *sess, const struct kg_dp_buf *sb, uint8_t *rec,
		    const struct kg_dp_buf *db, uint8_t *out, uint32_t body_off,
		    uint32_t body_len, const uint8_t *aad, unsigned aad_len,
		    const uint8_t nonce[12]);
void kg_dp_op_release(struct rte_crypto_op *op);

/* TLS 1.3 KeyUpdate of one direction: next secret, key, IV, session; seq 0.
 * The old session is returned in *old (in use by operations in flight) for
 * the caller to free; -1 when the new one could not be made. */
int kg_dp_rekey(uint8_t dev, struct rte_mempool *pool, const struct kg_dp_suite *s,
		const char *md, unsigned secret_len, struct kg_dp_keys *k, bool encrypt,
		void **old);

/* Record buffers: a pool of KG_DP_BUF_SIZE objects (DMA-safe), or NULL. */
struct rte_mempool *kg_dp_buf_pool_create(const char *name, unsigned n);
int kg_dp_buf_get(struct kg_dp_buf *b, struct rte_mempool *pool);
void kg_dp_buf_put(struct kg_dp_buf *b);

/* A worker's record buffers between bursts: a connection takes one only
 * while bytes are in flight and gives it back here once they are out, so an
 * idle connection holds none. Bounded; beyond it buffers are wiped and go
 * back to malloc or their mempool. Heap and mempool buffers both fit. */
#define KG_DP_SPARE 16
struct kg_dp_spare {
	struct kg_dp_buf b[KG_DP_SPARE];
	unsigned n;
};
/* A buffer for b (kept if it has one), from the spares or else from pool. */
int kg_dp_spare_take(struct kg_dp_spare *sp, struct kg_dp_buf *b, struct rte_mempool *pool);
/* Gives b's buffer back (none held: nothing to do). */
void kg_dp_spare_give(struct kg_dp_spare *sp, struct kg_dp_buf *b);
/* Wipes and frees every spare (before the mempools go). */
void kg_dp_spare_drain(struct kg_dp_spare *sp);

static inline rte_iova_t kg_dp_iova(const struct kg_dp_buf *b, const uint8_t *at)
{
	return b->pool ? b->iova + (rte_iova_t)(at - b->p) : (rte_iova_t)(uintptr_t)at;
}
#endif
