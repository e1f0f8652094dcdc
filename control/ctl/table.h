/* Output for people: aligned tables and "key: value" blocks. Every string
 * that came from the daemon may carry text from a client certificate, so
 * control characters are shown escaped (\xNN), never sent to the terminal. */
#ifndef KG_CTL_TABLE_H
#define KG_CTL_TABLE_H
#include <jansson.h>
#include <stddef.h>
#include <stdio.h>

struct tbl;

/* Column titles; one starting with '>' is right-aligned (numbers). */
struct tbl *tbl_new(size_t ncols, const char *const *titles);
/* Appends the next cell, filling rows left to right. */
void tbl_add(struct tbl *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A cell from a JSON value: see tbl_json_text. */
void tbl_add_json(struct tbl *t, json_t *v);
/* Prints the table to stdout and frees it. */
void tbl_print(struct tbl *t);

/* "key:" padded to a fixed column, then the value. */
void tbl_kv(const char *key, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tbl_kv_json(const char *key, json_t *v);

/* Text of a scalar (null or missing: "-"), or of an array of scalars joined
 * with ", ". Allocated; never NULL. */
char *tbl_json_text(json_t *v);
void tbl_fputs_safe(const char *s, FILE *f);

/* Durations for people: 950ms, 12.3s, 4m05s, 2h07m, 3d04h. */
void tbl_fmt_ms(char *buf, size_t cap, double ms);
#endif
