/* How certificates are spelt in logs, rules, kills and show certs: one
 * spelling everywhere, so what an operator copies from one matches another. */
#ifndef KG_CERTTEXT_H
#define KG_CERTTEXT_H
#include <openssl/x509.h>
#include <stddef.h>

/* RFC 2253 text ("CN=alice,O=Example"), non-ASCII escaped; safe to log. */
void kg_name_text(const X509_NAME *name, char *buf, size_t cap);
/* Uppercase hex without leading zeros. */
void kg_serial_text(const ASN1_INTEGER *serial, char *buf, size_t cap);
/* "0a:1B" -> "A1B": the same spelling for a serial an operator typed. */
void kg_serial_normalise(const char *in, char *out, size_t cap);
#endif
