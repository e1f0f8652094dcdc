/* Loading the kernel's tls module and the AEAD modules it needs (libkmod). */
#ifndef KG_KTLS_MODULES_H
#define KG_KTLS_MODULES_H
#include <stddef.h>

/* 0 when tls is loaded (or built in) afterwards; -1 with a reason in err.
 * Only tries to load as root; never fails hard: kTLS is optional. */
int kg_ktls_load_modules(char *err, size_t errlen);
#endif
