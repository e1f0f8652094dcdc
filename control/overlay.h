/* Runtime replacements for files the configuration names: a certificate,
 * CA bundle or CRL pushed through the control socket is kept here and read
 * instead of the file when generations are built, until the next reload
 * re-reads the disk (HAProxy's "set ssl cert" semantics). Used only by the
 * thread that builds generations. */
#ifndef KG_OVERLAY_H
#define KG_OVERLAY_H
#include <openssl/bio.h>
#include <stdbool.h>
#include <stddef.h>

/* A memory BIO over the overlay for path, or NULL when there is none. */
BIO *kg_overlay_open(const char *path);
/* Sets (copies) or, with data NULL, removes the overlay for path. */
int kg_overlay_set(const char *path, const char *data, size_t len);
/* The current content for path, or NULL (for rollback). */
const char *kg_overlay_get(const char *path, size_t *len);
size_t kg_overlay_count(void);
/* While suspended, builds read the disk only (a reload that must not see
 * runtime changes, yet must leave them in place if it fails). */
void kg_overlay_suspend(bool on);
void kg_overlay_clear(void);
#endif
