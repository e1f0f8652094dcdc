/* Session ticket keys: one process-wide set shared by every SSL_CTX of every
 * generation, so a ticket survives a reload and an SNI switch. The current
 * key encrypts; the previous one still decrypts for one more interval. Keys
 * come from RAND_priv_bytes and are cleansed when they retire. */
#ifndef KG_TICKET_KEYS_H
#define KG_TICKET_KEYS_H
#include <openssl/ssl.h>

/* The SSL_CTX_set_tlsext_ticket_key_evp_cb callback. The rotation interval
 * comes from the connection's generation (global.ticket_key_rotation). */
int kg_ticket_key_cb(SSL *ssl, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
		     EVP_MAC_CTX *hctx, int enc, unsigned interval_ms);
/* Cleanses every key (at exit). */
void kg_ticket_keys_free(void);
#endif
