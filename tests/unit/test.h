/* Minimal helpers for standalone unit tests (liburing test/ contract:
 * exit 0 pass, 1 fail, 77 skip). */
#ifndef KG_TEST_H
#define KG_TEST_H
#include <stdio.h>
#include <string.h>

#define T_EXIT_PASS 0
#define T_EXIT_FAIL 1
#define T_EXIT_SKIP 77

static int t_failures;

#define CHECK(cond) do { if (!(cond)) { \
	fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
	t_failures++; } } while (0)
#define CHECK_STR(got, want) do { const char *g_ = (got), *w_ = (want); \
	if (strcmp(g_, w_) != 0) { \
	fprintf(stderr, "%s:%d: got '%s', want '%s'\n", __FILE__, __LINE__, g_, w_); \
	t_failures++; } } while (0)
#define CHECK_CONTAINS(hay, needle) do { const char *h_ = (hay), *n_ = (needle); \
	if (!strstr(h_, n_)) { \
	fprintf(stderr, "%s:%d: '%s' does not contain '%s'\n", __FILE__, __LINE__, h_, n_); \
	t_failures++; } } while (0)
#define T_DONE() (t_failures ? (fprintf(stderr, "%d check(s) failed\n", t_failures), T_EXIT_FAIL) : T_EXIT_PASS)
#endif
