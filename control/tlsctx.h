/* Builds the server SSL_CTX that every worker shares: identities, client CAs,
 * CRLs and the protocol policy. Validation errors name the flag and file. */
#ifndef KG_TLSCTX_H
#define KG_TLSCTX_H
#include <openssl/ssl.h>

#include "options.h"

/* Returns NULL with one line in err ("--key F: key does not match certificate C"). */
SSL_CTX *kg_tlsctx_new(const struct kg_options *o, char *err, size_t errlen);
#endif
