/* The server-side session cache (global.session_cache, the default way to
 * resume): one process-wide, bounded LRU of SSL_SESSION objects shared by
 * every worker and every generation, so a resumption costs a hash lookup
 * instead of decoding the whole session (client certificate included) out of
 * a ticket. OpenSSL reaches it through SSL_CTX_sess_set_new_cb / get_cb /
 * remove_cb with SSL_SESS_CACHE_NO_INTERNAL: its own per-SSL_CTX cache would
 * die with each generation.
 *
 * Each entry carries a tag (where the session was made); handshake.c decides
 * from the tag and the current generation whether it may resume. The cache
 * itself only stores, expires and evicts. Sessions are freed (their master
 * secret cleansed by SSL_SESSION_free) on eviction, expiry and at exit. */
#ifndef KG_SESSION_CACHE_H
#define KG_SESSION_CACHE_H
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>

#define KG_SESS_SNI_MAX 256
#define KG_SESS_TRUST_LEN 32 /* SHA-256 of the site's client CAs and CRLs */

/* Where a session was established: a session resumes only on the same
 * listener and SNI route, while the site has the same client CAs and CRLs. Also
 * the ticket's appdata in session_tickets mode (see kg_sess_tag_encode). */
struct kg_sess_tag {
	uint32_t listener;
	uint8_t trust[KG_SESS_TRUST_LEN];
	char sni[KG_SESS_SNI_MAX];
};

/* Keeps sess (the cache takes over the caller's reference) under its id,
 * evicting the least recently used entries while the cache holds capacity
 * or more. false: not kept (capacity 0, no memory), the caller still owns
 * sess. *evicted counts the entries pushed out. */
bool kg_scache_put(SSL_SESSION *sess, const struct kg_sess_tag *tag, unsigned capacity,
		   unsigned *evicted);
/* The live session stored under id with a reference for the caller and its
 * tag copied to *tag; NULL when absent or expired (an expired one is
 * dropped). A hit becomes the most recently used entry. */
SSL_SESSION *kg_scache_get(const unsigned char *id, unsigned idlen, struct kg_sess_tag *tag);
/* Drops the entry for sess's id, if any (OpenSSL's remove_cb). */
void kg_scache_remove(SSL_SESSION *sess);
/* Evicts the oldest entries down to capacity; returns how many went. */
unsigned kg_scache_trim(unsigned capacity);
unsigned kg_scache_count(void);
/* Frees every entry (at exit). */
void kg_scache_free(void);

/* The tag as ticket appdata (fixed header, then the SNI without its NUL)
 * and back; decode fails on anything of the wrong shape. */
size_t kg_sess_tag_encode(const struct kg_sess_tag *tag, unsigned char *out, size_t cap);
bool kg_sess_tag_decode(const void *data, size_t len, struct kg_sess_tag *tag);
#endif
