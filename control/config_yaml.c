/* The YAML configuration file: libfyaml reads the text, we check the schema.
 *
 * libfyaml's document API (0.7) gives no position for mappings and sequences,
 * so the parser's events are turned into a small tree that keeps the start of
 * every node: each error can then say FILE:LINE:COL of the key or value at
 * fault. Aliases and tags are refused: a security daemon's configuration
 * should read the same to a person as to the program. */
#include "config.h"

#include <errno.h>
#include <libfyaml.h>
#include <limits.h>
#include <openssl/ssl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum ytype { Y_SCALAR, Y_SEQ, Y_MAP };

struct ynode {
	enum ytype type;
	unsigned line, col;   /* 1-based */
	char *text;           /* scalar, NUL-terminated (len excludes it) */
	size_t len;
	bool plain;           /* unquoted scalar: may be null, a boolean or a number */
	bool nopos;           /* libfyaml gives no mark for an empty scalar */
	struct ynode **kids;  /* sequence items; mapping: key, value, key, value... */
	size_t nkids;
};

struct yctx {
	const char *file;     /* c->file: kg_where.file points here */
	char *err;
	size_t errlen;
	struct kg_config *c;
};

#define YAML_MAX_NODES 100000 /* a configuration is small; bounds a hostile file */

/* ---- errors ---- */

/* Keys and values echoed in an error stay one short printable line. */
static const char *shown(const struct ynode *n, char *buf, size_t cap)
{
	size_t i, o = 0;

	for (i = 0; i < n->len && o + 4 < cap; i++)
		buf[o++] = (unsigned char)n->text[i] < 0x20 || n->text[i] == 0x7f ? '?' : n->text[i];
	if (i < n->len)
		buf[o++] = '.', buf[o++] = '.', buf[o++] = '.';
	buf[o] = '\0';
	return buf;
}

__attribute__((format(printf, 4, 5)))
static int fail(struct yctx *y, const struct ynode *at, const char *key, const char *fmt, ...)
{
	char reason[384];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	snprintf(y->err, y->errlen, "%s:%u:%u: %s: %s", y->file, at ? at->line : 1,
		 at ? at->col : 1, key, reason);
	return -1;
}

static int oom(struct yctx *y, const struct ynode *at, const char *key)
{
	return fail(y, at, key, "out of memory");
}

static struct kg_where where(struct yctx *y, const struct ynode *n, const char *key)
{
	return (struct kg_where){ .file = y->file, .line = n->line, .col = n->col, .key = key };
}

/* ---- the tree, from libfyaml's events ---- */

static void ynode_free(struct ynode *n)
{
	if (!n)
		return;
	for (size_t i = 0; i < n->nkids; i++)
		ynode_free(n->kids[i]);
	free(n->kids);
	free(n->text);
	free(n);
}

struct yload {
	struct yctx *y;
	struct fy_parser *p;
	struct fy_diag *diag;
	size_t nodes;
};

/* libfyaml's own words and position for a syntax error. */
static int syntax_error(struct yload *yl)
{
	struct fy_diag_error *de;
	void *it = NULL;

	while ((de = fy_diag_errors_iterate(yl->diag, &it)))
		if (de->type == FYET_ERROR)
			break;
	if (!de) {
		snprintf(yl->y->err, yl->y->errlen, "%s:1:1: yaml: cannot parse the file",
			 yl->y->file);
		return -1;
	}
	snprintf(yl->y->err, yl->y->errlen, "%s:%d:%d: yaml: %s", yl->y->file,
		 de->line > 0 ? de->line : 1, de->column > 0 ? de->column : 1,
		 de->msg ? de->msg : "syntax error");
	return -1;
}

static struct fy_event *next_event(struct yload *yl)
{
	struct fy_event *e = fy_parser_parse(yl->p);

	if (!e)
		syntax_error(yl);
	return e;
}

static int build(struct yload *yl, struct fy_event *e, unsigned depth, struct ynode **out);

static void set_pos(struct ynode *n, const struct fy_mark *m)
{
	n->nopos = !m || m->line < 0 || m->column < 0;
	n->line = n->nopos ? 1 : (unsigned)m->line + 1;
	n->col = n->nopos ? 1 : (unsigned)m->column + 1;
}

static int add_kid(struct yload *yl, struct ynode *n, struct ynode *kid)
{
	if ((n->nkids & (n->nkids - 1)) == 0) { /* 0, 1, 2, 4...: grow by doubling */
		struct ynode **k = realloc(n->kids, (n->nkids ? n->nkids * 2 : 1) * sizeof(*k));
		if (!k)
			return -1;
		n->kids = k;
	}
	n->kids[n->nkids++] = kid;
	return 0;
}

static int build_collection(struct yload *yl, struct ynode *n, enum fy_event_type end,
			    unsigned depth)
{
	for (;;) {
		struct fy_event *e = next_event(yl);
		struct ynode *kid = NULL;
		int rc;

		if (!e)
			return -1;
		if (e->type == end) {
			fy_parser_event_free(yl->p, e);
			return 0;
		}
		rc = build(yl, e, depth + 1, &kid);
		fy_parser_event_free(yl->p, e);
		if (rc < 0) {
			ynode_free(kid);
			return -1;
		}
		if (kid->nopos) { /* "key:" with nothing after it: point at the key */
			const struct ynode *ref =
				end == FYET_MAPPING_END && n->nkids % 2 ? n->kids[n->nkids - 1] : n;
			kid->line = ref->line;
			kid->col = ref->col;
		}
		if (add_kid(yl, n, kid) < 0) {
			ynode_free(kid);
			return oom(yl->y, n, "yaml");
		}
	}
}

static int build(struct yload *yl, struct fy_event *e, unsigned depth, struct ynode **out)
{
	const struct fy_mark *m = fy_event_start_mark(e);
	struct fy_token *tag = NULL;
	struct ynode *n;
	int rc = 0;

	n = calloc(1, sizeof(*n));
	if (!n)
		return oom(yl->y, NULL, "yaml");
	*out = n;
	set_pos(n, m);
	if (++yl->nodes > YAML_MAX_NODES || depth > 32)
		return fail(yl->y, n, "yaml", "the file is too large or too deeply nested");
	switch (e->type) {
	case FYET_SCALAR: {
		size_t len;
		const char *t = fy_token_get_text(e->scalar.value, &len);

		tag = e->scalar.tag;
		n->type = Y_SCALAR;
		n->plain = fy_token_scalar_style(e->scalar.value) == FYSS_PLAIN;
		/* libfyaml marks the text inside the quotes; point at the quote */
		if (!n->nopos && n->col > 1 &&
		    (fy_token_scalar_style(e->scalar.value) == FYSS_SINGLE_QUOTED ||
		     fy_token_scalar_style(e->scalar.value) == FYSS_DOUBLE_QUOTED))
			n->col--;
		n->text = t ? malloc(len + 1) : NULL;
		if (!n->text)
			return oom(yl->y, n, "yaml");
		if (len)
			memcpy(n->text, t, len);
		n->text[len] = '\0';
		n->len = len;
		break;
	}
	case FYET_SEQUENCE_START:
		tag = e->sequence_start.tag;
		n->type = Y_SEQ;
		rc = build_collection(yl, n, FYET_SEQUENCE_END, depth);
		break;
	case FYET_MAPPING_START:
		tag = e->mapping_start.tag;
		n->type = Y_MAP;
		rc = build_collection(yl, n, FYET_MAPPING_END, depth);
		break;
	case FYET_ALIAS:
		if (n->col > 1)
			n->col--; /* the mark is past the '*' */
		return fail(yl->y, n, "yaml", "anchors and aliases are not supported");
	default:
		return fail(yl->y, n, "yaml", "unexpected YAML event");
	}
	if (rc == 0 && tag) {
		struct ynode at;

		set_pos(&at, fy_token_start_mark(tag));
		return fail(yl->y, at.nopos ? n : &at, "yaml", "tags are not supported");
	}
	return rc;
}

/* One document; NULL root (and 0) for an empty file. */
static int load_events(struct yload *yl, struct ynode **root)
{
	struct fy_event *e;
	int rc = -1;

	*root = NULL;
	while ((e = next_event(yl))) {
		enum fy_event_type t = e->type;

		if (t == FYET_STREAM_END) {
			fy_parser_event_free(yl->p, e);
			return 0;
		}
		if (t == FYET_DOCUMENT_START && *root) {
			const struct fy_mark *m = fy_event_start_mark(e);
			struct ynode at;

			set_pos(&at, m);
			fail(yl->y, &at, "yaml", "only one document is allowed");
			fy_parser_event_free(yl->p, e);
			return -1;
		}
		if (t == FYET_SCALAR || t == FYET_SEQUENCE_START || t == FYET_MAPPING_START ||
		    t == FYET_ALIAS)
			rc = build(yl, e, 0, root);
		else
			rc = 0;
		fy_parser_event_free(yl->p, e);
		if (rc < 0)
			return -1;
	}
	return -1;
}

static void diag_discard(struct fy_diag *diag, void *user, const char *buf, size_t len)
{
}

#define YAML_MAX_BYTES (1 << 20)

/* Offset of the first byte that is not UTF-8 (or is NUL), or len. */
static size_t utf8_bad(const unsigned char *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		unsigned char b = s[i];
		size_t n = b < 0x80 ? 0 : (b & 0xe0) == 0xc0 ? 1 : (b & 0xf0) == 0xe0 ? 2
			 : (b & 0xf8) == 0xf0 ? 3 : 4;
		unsigned cp = n == 0 ? b : n == 1 ? b & 0x1fu : n == 2 ? b & 0x0fu : b & 0x07u;

		if (b == 0 || n == 4 || n >= len - i)
			return i;
		for (size_t k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return i;
			cp = cp << 6 | (s[i + k] & 0x3fu);
		}
		if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
		    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return i;
		i += n + 1;
	}
	return len;
}

/* libfyaml 0.7.12 can loop forever on invalid UTF-8 (seen in a directive by
 * the fuzzer), so the text is checked before it gets there. */
static int read_text(struct yctx *y, const char *path, char **text, size_t *len)
{
	FILE *fp = fopen(path, "re");
	struct ynode at = { .line = 1, .col = 1 };
	size_t bad;

	*text = NULL;
	if (!fp) {
		snprintf(y->err, y->errlen, "%s: cannot open: %s", path, strerror(errno));
		return -1;
	}
	*text = malloc(YAML_MAX_BYTES + 1);
	if (!*text) {
		fclose(fp);
		return oom(y, NULL, "yaml");
	}
	*len = fread(*text, 1, YAML_MAX_BYTES + 1, fp);
	if (ferror(fp)) {
		snprintf(y->err, y->errlen, "%s: cannot read: %s", path, strerror(errno));
		fclose(fp);
		return -1;
	}
	fclose(fp);
	if (*len > YAML_MAX_BYTES)
		return fail(y, NULL, "yaml", "the file is larger than %d bytes", YAML_MAX_BYTES);
	bad = utf8_bad((const unsigned char *)*text, *len);
	if (bad == *len)
		return 0;
	for (size_t i = 0; i < bad; i++) {
		if ((*text)[i] == '\n')
			at.line++, at.col = 1;
		else if (((unsigned char)(*text)[i] & 0xc0) != 0x80)
			at.col++;
	}
	return fail(y, &at, "yaml", (*text)[bad] ? "not valid UTF-8" : "contains a NUL byte");
}

static int load_tree(struct yctx *y, const char *path, struct ynode **root)
{
	struct fy_diag_cfg dcfg;
	struct fy_parse_cfg pcfg = {
		/* duplicates are found by walk_map, which can name the key */
		.flags = FYPCF_QUIET | FYPCF_ALLOW_DUPLICATE_KEYS | FYPCF_JSON_NONE,
	};
	struct yload yl = { .y = y };
	char *text;
	size_t len = 0;
	int rc = -1;

	*root = NULL;
	if (read_text(y, path, &text, &len) < 0)
		goto out;
	fy_diag_cfg_default(&dcfg);
	dcfg.fp = NULL; /* errors are collected, and only our one line is printed */
	dcfg.output_fn = diag_discard;
	dcfg.colorize = false;
	yl.diag = fy_diag_create(&dcfg);
	if (!yl.diag) {
		oom(y, NULL, "yaml");
		goto out;
	}
	fy_diag_set_collect_errors(yl.diag, true);
	pcfg.diag = yl.diag;
	yl.p = fy_parser_create(&pcfg);
	if (!yl.p || fy_parser_set_string(yl.p, text, len) < 0) {
		oom(y, NULL, "yaml");
		goto out;
	}
	rc = load_events(&yl, root);
	if (rc < 0) {
		ynode_free(*root);
		*root = NULL;
	}
out:
	if (yl.p)
		fy_parser_destroy(yl.p);
	if (yl.diag)
		fy_diag_destroy(yl.diag);
	free(text);
	return rc;
}

/* ---- scalars: YAML 1.2 core schema for plain scalars ---- */

static bool is_null(const struct ynode *n)
{
	return n->type == Y_SCALAR && n->plain &&
	       (n->len == 0 || !strcmp(n->text, "~") || !strcmp(n->text, "null") ||
		!strcmp(n->text, "Null") || !strcmp(n->text, "NULL"));
}

static int bool_value(const struct ynode *n)
{
	static const char *const t[] = { "true", "True", "TRUE" };
	static const char *const f[] = { "false", "False", "FALSE" };

	if (n->type != Y_SCALAR || !n->plain)
		return -1;
	for (size_t i = 0; i < 3; i++) {
		if (!strcmp(n->text, t[i]))
			return 1;
		if (!strcmp(n->text, f[i]))
			return 0;
	}
	return -1;
}

static bool is_int(const struct ynode *n)
{
	const char *s = n->text;

	if (n->type != Y_SCALAR || !n->plain)
		return false;
	if (*s == '-' || *s == '+')
		s++;
	if (!*s)
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

static const char *kind(const struct ynode *n)
{
	if (n->type == Y_MAP)
		return "a mapping";
	if (n->type == Y_SEQ)
		return "a list";
	if (is_null(n))
		return "nothing";
	if (bool_value(n) >= 0)
		return "a boolean";
	if (is_int(n))
		return "an integer";
	return "a string";
}

static int want_type(struct yctx *y, const struct ynode *n, const char *key, enum ytype t)
{
	static const char *const names[] = { "a string", "a list", "a mapping" };

	if (n->type == t && !(t == Y_SCALAR && is_null(n)))
		return 0;
	if (t == Y_SCALAR && n->type == Y_SEQ)
		return fail(y, n, key, "expected a single value, got a list");
	return fail(y, n, key, "expected %s, got %s", names[t], kind(n));
}

/* A non-empty string without NUL bytes (they would silently cut the path). */
static int get_text(struct yctx *y, const struct ynode *n, const char *key)
{
	if (want_type(y, n, key, Y_SCALAR) < 0)
		return -1;
	if (n->len == 0)
		return fail(y, n, key, "must not be empty");
	if (memchr(n->text, '\0', n->len))
		return fail(y, n, key, "must not contain a NUL byte");
	return 0;
}

static int set_str(struct yctx *y, const struct ynode *n, const char *key, char **dst)
{
	char *s;

	if (get_text(y, n, key) < 0)
		return -1;
	s = strdup(n->text);
	if (!s)
		return oom(y, n, key);
	free(*dst);
	*dst = s;
	return 0;
}

static int set_file(struct yctx *y, const struct ynode *n, const char *key, struct kg_file *f)
{
	if (set_str(y, n, key, &f->path) < 0)
		return -1;
	f->at = where(y, n, key);
	return 0;
}

static int set_bool(struct yctx *y, const struct ynode *n, const char *key, bool *dst)
{
	int v = bool_value(n);

	if (v < 0)
		return n->type == Y_SCALAR && !is_null(n)
			? fail(y, n, key, "expected true or false, got '%s'", shown(n, (char[64]){ 0 }, 64))
			: fail(y, n, key, "expected a boolean, got %s", kind(n));
	*dst = v;
	return 0;
}

static int set_uint(struct yctx *y, const struct ynode *n, const char *key, unsigned min,
		    unsigned max, unsigned *dst)
{
	unsigned long long v = 0;
	const char *s = n->text;

	if (n->type == Y_SEQ && want_type(y, n, key, Y_SCALAR) < 0)
		return -1;
	if (!is_int(n))
		return fail(y, n, key, "expected an integer, got %s", kind(n));
	if (*s == '-' && strspn(s + 1, "0") != strlen(s + 1))
		return fail(y, n, key, "must not be negative");
	s += *s == '-' || *s == '+';
	for (; *s && v <= UINT_MAX; s++)
		v = v * 10 + (unsigned)(*s - '0');
	if (v < min || v > max)
		return fail(y, n, key, "must be from %u to %u", min, max);
	*dst = (unsigned)v;
	return 0;
}

/* "500ms", "10s", "5m", "1h"; a plain integer is seconds. */
#define DURATION_MAX_MS (168ULL * 3600 * 1000)

static int set_duration(struct yctx *y, const struct ynode *n, const char *key, unsigned *ms)
{
	static const struct { const char *unit; unsigned long long ms; } units[] = {
		{ "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 }, { "", 1000 },
	};
	unsigned long long v = 0;
	const char *s;
	size_t i;

	if (want_type(y, n, key, Y_SCALAR) < 0)
		return -1;
	s = n->text;
	if (*s == '-')
		return fail(y, n, key, "must not be negative");
	if (*s < '0' || *s > '9')
		goto bad;
	for (; *s >= '0' && *s <= '9'; s++)
		if ((v = v * 10 + (unsigned)(*s - '0')) > DURATION_MAX_MS)
			return fail(y, n, key, "too long (at most 168h)");
	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (!strcmp(s, units[i].unit))
			break;
	if (i == sizeof(units) / sizeof(units[0]))
		goto bad;
	v *= units[i].ms;
	if (v == 0)
		return fail(y, n, key, "must be greater than zero");
	if (v > DURATION_MAX_MS)
		return fail(y, n, key, "too long (at most 168h)");
	*ms = (unsigned)v;
	return 0;
bad:
	return fail(y, n, key, "expected a duration such as 500ms, 10s, 5m or 1h, got '%s'",
		    shown(n, (char[64]){ 0 }, 64));
}

/* One of names[]; returns its index. */
static int set_enum(struct yctx *y, const struct ynode *n, const char *key,
		    const char *const *names, size_t count, int *dst)
{
	char list[160] = "";

	if (want_type(y, n, key, Y_SCALAR) < 0)
		return -1;
	for (size_t i = 0; i < count; i++)
		if (!strcmp(n->text, names[i])) {
			*dst = (int)i;
			return 0;
		}
	for (size_t i = 0; i < count; i++)
		snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s",
			 i == 0 ? "" : i + 1 == count ? " or " : ", ", names[i]);
	return fail(y, n, key, "expected %s, got '%s'", list, shown(n, (char[64]){ 0 }, 64));
}

/* A value that may be one scalar or a list of them: the items to look at. */
static int items(struct yctx *y, const struct ynode *n, const char *key,
		 struct ynode *const **out, size_t *count)
{
	if (n->type == Y_MAP || is_null(n))
		return fail(y, n, key, "expected a string or a list of strings, got %s", kind(n));
	if (n->type == Y_SCALAR) {
		*out = NULL; /* the caller looks at n itself */
		*count = 1;
		return 1;
	}
	if (n->nkids == 0)
		return fail(y, n, key, "must not be an empty list");
	*out = n->kids;
	*count = n->nkids;
	return 0;
}

/* Calls fn for each string of "string or list of strings". */
static int each_string(struct yctx *y, const struct ynode *n, const char *key,
		       int (*fn)(struct yctx *, const struct ynode *, const char *, void *),
		       void *arg)
{
	struct ynode *const *v;
	size_t count;
	int single = items(y, n, key, &v, &count);

	if (single < 0)
		return -1;
	if (single)
		return get_text(y, n, key) < 0 ? -1 : fn(y, n, key, arg);
	for (size_t i = 0; i < count; i++) {
		if (v[i]->type == Y_SEQ || v[i]->type == Y_MAP || is_null(v[i]))
			return fail(y, v[i], key, "expected a string, got %s", kind(v[i]));
		if (get_text(y, v[i], key) < 0 || fn(y, v[i], key, arg) < 0)
			return -1;
	}
	return 0;
}

static size_t count_of(const struct ynode *n)
{
	return n->type == Y_SEQ ? n->nkids : 1;
}

/* ---- mappings ---- */

struct ykey {
	const char *name;
	int (*set)(struct yctx *y, const struct ynode *v, const char *key, void *obj);
};

static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), prev[40], cur[40];

	if (la >= 40 || lb >= 40)
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		prev[j] = j;
	for (size_t i = 1; i <= la; i++) {
		cur[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
			size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
			cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
		}
		memcpy(prev, cur, sizeof(cur));
	}
	return prev[lb];
}

static int unknown_key(struct yctx *y, const struct ynode *k, const struct ykey *keys,
		       size_t nkeys)
{
	const char *best = NULL;
	size_t best_d = 3;
	char buf[64];

	for (size_t i = 0; i < nkeys; i++) {
		size_t d = strcasecmp(k->text, keys[i].name) == 0 ? 0
			 : edit_distance(k->text, keys[i].name);
		if (d < best_d && (d <= 1 || d * 3 <= strlen(keys[i].name))) {
			best = keys[i].name;
			best_d = d;
		}
	}
	if (best)
		return fail(y, k, shown(k, buf, sizeof(buf)), "unknown key, did you mean '%s'?", best);
	return fail(y, k, shown(k, buf, sizeof(buf)), "unknown key");
}

static const struct ynode *find(const struct ynode *map, const char *key)
{
	for (size_t i = 0; map->type == Y_MAP && i + 1 < map->nkids; i += 2)
		if (map->kids[i]->type == Y_SCALAR && !strcmp(map->kids[i]->text, key))
			return map->kids[i + 1];
	return NULL;
}

static int walk_map(struct yctx *y, const struct ynode *map, const char *what,
		    const struct ykey *keys, size_t nkeys, void *obj)
{
	char buf[64];

	if (want_type(y, map, what, Y_MAP) < 0)
		return -1;
	for (size_t i = 0; i + 1 < map->nkids; i += 2) {
		const struct ynode *k = map->kids[i], *v = map->kids[i + 1];
		size_t j;

		if (k->type != Y_SCALAR || is_null(k))
			return fail(y, k, what, "keys must be strings, got %s", kind(k));
		for (j = 0; j < i; j += 2)
			if (!strcmp(map->kids[j]->text, k->text))
				return fail(y, k, shown(k, buf, sizeof(buf)),
					    "duplicate key (first at line %u)", map->kids[j]->line);
		for (j = 0; j < nkeys; j++)
			if (!strcmp(k->text, keys[j].name))
				break;
		if (j == nkeys)
			return unknown_key(y, k, keys, nkeys);
		if (keys[j].set(y, v, keys[j].name, obj) < 0)
			return -1;
	}
	return 0;
}

#define WALK(y, map, what, table, obj) \
	walk_map(y, map, what, table, sizeof(table) / sizeof(table[0]), obj)

/* ---- global ---- */

static const char *const ktls_names[] = { "auto", "off", "required" };

static int g_workers(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_uint(y, v, key, 0, 1024, &((struct kg_config *)obj)->workers);
}

static int g_cpus(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	struct kg_config *c = obj;
	struct ynode *const *it = (struct ynode *const *)&v; /* one CPU... */
	size_t n = 1;
	int *cpus;

	if (v->type == Y_SEQ) { /* ...or a list of them */
		if (v->nkids == 0)
			return fail(y, v, key, "must not be an empty list");
		it = v->kids;
		n = v->nkids;
	}
	cpus = calloc(n, sizeof(*cpus));
	if (!cpus)
		return oom(y, v, key);
	free(c->cpus);
	c->cpus = cpus;
	c->ncpus = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned cpu;

		if (set_uint(y, it[i], key, 0, CPU_SETSIZE - 1, &cpu) < 0)
			return -1;
		for (size_t j = 0; j < c->ncpus; j++)
			if (c->cpus[j] == (int)cpu)
				return fail(y, it[i], key, "CPU %u is listed twice", cpu);
		c->cpus[c->ncpus++] = (int)cpu;
	}
	return 0;
}

static int g_user(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_str(y, v, key, &((struct kg_config *)obj)->user);
}

static int g_group(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_str(y, v, key, &((struct kg_config *)obj)->group);
}

static int log_format(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	static const char *const names[] = { "text", "json" };
	int i;

	if (set_enum(y, v, key, names, 2, &i) < 0)
		return -1;
	((struct kg_config *)obj)->log_format = i == 0 ? KG_LOG_TEXT : KG_LOG_JSON;
	return 0;
}

static int log_file(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_str(y, v, key, &((struct kg_config *)obj)->log_file);
}

static int g_log(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	static const struct ykey keys[] = { { "format", log_format }, { "file", log_file } };

	return WALK(y, v, key, keys, obj);
}

static int g_control_socket(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_str(y, v, key, &((struct kg_config *)obj)->control_socket);
}

static int g_metrics_listen(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	struct kg_config *c = obj;
	char *text = NULL, why[160];
	int rc = set_str(y, v, key, &text);

	if (rc < 0)
		return rc;
	rc = kg_addr_parse(text, false, &c->metrics_listen.addr, why, sizeof(why));
	free(text);
	if (rc < 0)
		return fail(y, v, key, "%s", why);
	c->metrics_listen.at = where(y, v, key);
	c->metrics_http = true;
	return 0;
}

static int set_ktls(struct yctx *y, const struct ynode *v, const char *key,
		    enum kg_ktls_mode *dst)
{
	int i;

	if (set_enum(y, v, key, ktls_names, 3, &i) < 0)
		return -1;
	*dst = i == 0 ? KG_KTLS_AUTO : i == 1 ? KG_KTLS_OFF : KG_KTLS_REQUIRED;
	return 0;
}

static int g_ktls(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_ktls(y, v, key, &((struct kg_config *)obj)->ktls);
}

static int set_engine(struct yctx *y, const struct ynode *v, const char *key,
		      enum kg_record_engine *dst)
{
	int i;

	if (set_enum(y, v, key, kg_record_engine_names, 4, &i) < 0)
		return -1;
	*dst = (enum kg_record_engine)i;
	return 0;
}

static int g_record_engine(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	struct kg_config *c = obj;

	c->record_engine_at = where(y, v, key);
	return set_engine(y, v, key, &c->record_engine);
}

/* EAL virtual devices: "crypto_aesni_mb" or a list; kept comma-joined. */
static int g_dpdk_vdevs(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	struct kg_config *c = obj;
	struct ynode *const *kids;
	size_t n;
	char buf[512] = "";

	int rc = items(y, v, key, &kids, &n);
	if (rc < 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		const struct ynode *it = kids ? kids[i] : v;
		if (get_text(y, it, key) < 0)
			return -1;
		if (!*it->text || strchr(it->text, ','))
			return fail(y, it, key, "expected a vdev name such as crypto_aesni_mb");
		snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "%s%s", i ? "," : "",
			 it->text);
	}
	if (n == 0)
		return fail(y, v, key, "expected at least one vdev");
	free(c->dpdk_vdevs);
	c->dpdk_vdevs = strdup(buf);
	return c->dpdk_vdevs ? 0 : oom(y, v, key);
}

static int g_dpdk_memory(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_uint(y, v, key, KG_DPDK_MEMORY_MB_MIN, KG_DPDK_MEMORY_MB_MAX,
			&((struct kg_config *)obj)->dpdk_memory_mb);
}

static int g_dpdk_queue_depth(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	unsigned *d = &((struct kg_config *)obj)->dpdk_queue_depth;

	if (set_uint(y, v, key, KG_DPDK_QUEUE_DEPTH_MIN, KG_DPDK_QUEUE_DEPTH_MAX, d) < 0)
		return -1;
	/* The PMDs keep each queue pair in an rte_ring: a power of two. */
	return *d & (*d - 1) ? fail(y, v, key, "must be a power of two, such as 4096") : 0;
}

static int g_max_conns(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_uint(y, v, key, 1, INT_MAX, &((struct kg_config *)obj)->max_conns);
}

static int g_max_per_source(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_uint(y, v, key, 0, INT_MAX, &((struct kg_config *)obj)->max_conns_per_source);
}

static int t_handshake(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_duration(y, v, key, &((struct kg_config *)obj)->handshake_timeout_ms);
}

static int t_idle(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_duration(y, v, key, &((struct kg_config *)obj)->idle_timeout_ms);
}

static int t_connect(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_duration(y, v, key, &((struct kg_config *)obj)->connect_timeout_ms);
}

static int t_drain(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_duration(y, v, key, &((struct kg_config *)obj)->drain_timeout_ms);
}

static int g_timeouts(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	static const struct ykey keys[] = {
		{ "handshake", t_handshake }, { "idle", t_idle },
		{ "connect", t_connect }, { "drain", t_drain },
	};

	return WALK(y, v, key, keys, obj);
}

static int g_ticket_rotation(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	unsigned *ms = &((struct kg_config *)obj)->ticket_key_rotation_ms;

	if (set_duration(y, v, key, ms) < 0)
		return -1;
	return *ms < 1000 ? fail(y, v, key, "at least 1s") : 0;
}

/* nginx's ssl_session_cache / HAProxy's tune.ssl.cachesize: entries, not
 * bytes: a cached session holds its parsed client certificate, ~7 KiB
 * for an ECDSA leaf (its intermediates are dropped), ~28 MiB for 4096. */
static int g_session_cache(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_uint(y, v, key, 0, 1000000, &((struct kg_config *)obj)->session_cache);
}

/* RFC 8446 §4.6.1: a ticket lives at most 7 days. */
static int g_session_timeout(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	unsigned ms;

	if (set_duration(y, v, key, &ms) < 0)
		return -1;
	if (ms < 1000 || ms % 1000)
		return fail(y, v, key, "whole seconds, at least 1s");
	((struct kg_config *)obj)->session_timeout_s = ms / 1000;
	return 0;
}

static int g_session_tickets(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_bool(y, v, key, &((struct kg_config *)obj)->session_tickets);
}

static int g_kill_revoked(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_bool(y, v, key, &((struct kg_config *)obj)->kill_revoked_on_crl_update);
}

static const struct ykey global_keys[] = {
	{ "workers", g_workers }, { "cpus", g_cpus }, { "user", g_user }, { "group", g_group },
	{ "log", g_log }, { "control_socket", g_control_socket }, { "ktls", g_ktls },
	{ "record_engine", g_record_engine }, { "dpdk_vdevs", g_dpdk_vdevs },
	{ "dpdk_memory_mb", g_dpdk_memory }, { "dpdk_queue_depth", g_dpdk_queue_depth },
	{ "metrics_listen", g_metrics_listen },
	{ "max_connections", g_max_conns }, { "timeouts", g_timeouts },
	{ "max_connections_per_source", g_max_per_source },
	{ "kill_revoked_on_crl_update", g_kill_revoked },
	{ "ticket_key_rotation", g_ticket_rotation },
	{ "session_cache", g_session_cache }, { "session_timeout", g_session_timeout },
	{ "session_tickets", g_session_tickets },
};

/* ---- rules ---- */

static const char *const match_names[KG_MATCH_COUNT] = {
	[KG_MATCH_SUBJECT] = "subject", [KG_MATCH_SUBJECT_REGEX] = "subject_regex",
	[KG_MATCH_CN] = "cn", [KG_MATCH_DNS] = "dns", [KG_MATCH_URI] = "uri",
	[KG_MATCH_EMAIL] = "email", [KG_MATCH_ISSUER] = "issuer", [KG_MATCH_SERIAL] = "serial",
	[KG_MATCH_FINGERPRINT] = "fingerprint",
};

static int push_value(struct yctx *y, const struct ynode *v, const char *key, void *arg)
{
	struct kg_cond *cond = arg;

	if (!(cond->values[cond->nvalues] = strdup(v->text)))
		return oom(y, v, key);
	cond->nvalues++;
	return 0;
}

static int rule_cond(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	struct kg_rule_spec *r = obj;
	struct kg_cond *cond;
	int what = 0;

	while (strcmp(match_names[what], key))
		what++;
	cond = &r->conds[r->nconds++]; /* sized for every key of the rule */
	cond->what = (enum kg_match)what;
	cond->at = where(y, v, key);
	cond->values = calloc(count_of(v), sizeof(*cond->values));
	if (!cond->values)
		return oom(y, v, key);
	return each_string(y, v, key, push_value, cond);
}

static int rule_name(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_str(y, v, key, &((struct kg_rule_spec *)obj)->name);
}

static const struct ykey rule_keys[] = {
	{ "name", rule_name },
	{ "subject", rule_cond }, { "subject_regex", rule_cond }, { "cn", rule_cond },
	{ "dns", rule_cond }, { "uri", rule_cond }, { "email", rule_cond },
	{ "issuer", rule_cond }, { "serial", rule_cond }, { "fingerprint", rule_cond },
};

static int set_rules(struct yctx *y, const struct ynode *v, const char *key,
		     struct kg_rule_spec **list, size_t *n)
{
	struct kg_rule_spec *rules;

	if (want_type(y, v, key, Y_SEQ) < 0)
		return -1;
	if (v->nkids == 0)
		return fail(y, v, key, "must not be an empty list");
	rules = calloc(v->nkids, sizeof(*rules));
	if (!rules)
		return oom(y, v, key);
	kg_rule_list_free(*list, *n); /* a site's rules replace its listener's */
	*list = rules;
	*n = 0;
	for (size_t i = 0; i < v->nkids; i++) {
		const struct ynode *item = v->kids[i];
		struct kg_rule_spec *r = &rules[(*n)++];
		char name[32];

		r->at = where(y, item, key);
		if (want_type(y, item, key, Y_MAP) < 0)
			return -1;
		r->conds = calloc(item->nkids / 2 + 1, sizeof(*r->conds));
		if (!r->conds)
			return oom(y, item, key);
		if (WALK(y, item, key, rule_keys, r) < 0)
			return -1;
		if (r->nconds == 0)
			return fail(y, item, key, "a rule needs at least one condition (%s, %s, ...)",
				    match_names[0], match_names[KG_MATCH_CN]);
		if (!r->name) {
			snprintf(name, sizeof(name), "%s[%zu]", key, i);
			if (!(r->name = strdup(name)))
				return oom(y, item, key);
		}
	}
	return 0;
}

/* ---- client authentication and routing (listener and site) ---- */

/* What the listener and site key handlers fill. */
struct lctx {
	struct kg_listener_spec *l;
	struct kg_auth_spec *auth; /* the listener's or the site's */
	struct kg_site_spec *site; /* NULL for the listener */
	const struct ynode *sites, *ids;
};

static int a_client_auth(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	static const char *const names[] = { "required", "optional", "none" };
	struct kg_auth_spec *a = ((struct lctx *)obj)->auth;
	int i;

	if (set_enum(y, v, key, names, 3, &i) < 0)
		return -1;
	a->client_auth = i == 0 ? KG_AUTH_REQUIRED : i == 1 ? KG_AUTH_OPTIONAL : KG_AUTH_NONE;
	return 0;
}

struct files_arg {
	struct kg_file *f;
	size_t *n;
};

static int push_file(struct yctx *y, const struct ynode *v, const char *key, void *arg)
{
	struct files_arg *fa = arg;

	return set_file(y, v, key, &fa->f[(*fa->n)++]);
}

static int set_files(struct yctx *y, const struct ynode *v, const char *key,
		     struct kg_file **list, size_t *n)
{
	struct kg_file *f = calloc(count_of(v), sizeof(*f));

	if (!f)
		return oom(y, v, key);
	kg_file_list_free(*list, *n);
	*list = f;
	*n = 0;
	return each_string(y, v, key, push_file, &(struct files_arg){ f, n });
}

static int a_client_ca(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	struct kg_auth_spec *a = ((struct lctx *)obj)->auth;

	return set_files(y, v, key, &a->client_cas, &a->nclient_cas);
}

static int a_crl(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	struct kg_auth_spec *a = ((struct lctx *)obj)->auth;

	return set_files(y, v, key, &a->crls, &a->ncrls);
}

static int a_crl_check(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	static const char *const names[] = { "chain", "leaf" };
	int i;

	if (set_enum(y, v, key, names, 2, &i) < 0)
		return -1;
	((struct lctx *)obj)->auth->crl_check = i == 0 ? KG_CRL_CHAIN : KG_CRL_LEAF;
	return 0;
}

static int a_crl_missing(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	static const char *const names[] = { "deny", "allow" };
	int i;

	if (set_enum(y, v, key, names, 2, &i) < 0)
		return -1;
	((struct lctx *)obj)->auth->crl_missing_allow = i == 1;
	return 0;
}

static int a_verify_depth(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_uint(y, v, key, 1, 100, &((struct lctx *)obj)->auth->verify_depth);
}

static int a_client_eku(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_bool(y, v, key, &((struct lctx *)obj)->auth->require_client_eku);
}

static int a_proxy(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_bool(y, v, key, &((struct lctx *)obj)->auth->proxy_v2);
}

struct addrs_arg {
	struct kg_addr_spec *a;
	size_t *n;
	bool allow_unix;
};

static int push_addr(struct yctx *y, const struct ynode *v, const char *key, void *arg)
{
	struct addrs_arg *aa = arg;
	struct kg_addr_spec *s = &aa->a[*aa->n];
	char why[160], buf[64];

	if (kg_addr_parse(v->text, aa->allow_unix, &s->addr, why, sizeof(why)) < 0)
		return fail(y, v, key, "'%s': %s", shown(v, buf, sizeof(buf)), why);
	s->at = where(y, v, key);
	(*aa->n)++;
	return 0;
}

static int set_addrs(struct yctx *y, const struct ynode *v, const char *key, bool allow_unix,
		     struct kg_addr_spec **list, size_t *n)
{
	struct kg_addr_spec *a = calloc(count_of(v), sizeof(*a));

	if (!a)
		return oom(y, v, key);
	free(*list);
	*list = a;
	*n = 0;
	return each_string(y, v, key, push_addr, &(struct addrs_arg){ a, n, allow_unix });
}


static int a_allow(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	struct kg_auth_spec *a = ((struct lctx *)obj)->auth;

	return set_rules(y, v, key, &a->rules.allow, &a->rules.nallow);
}

static int a_deny(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	struct kg_auth_spec *a = ((struct lctx *)obj)->auth;

	return set_rules(y, v, key, &a->rules.deny, &a->rules.ndeny);
}

/* ---- backend_tls ---- */

static int b_cert(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_file(y, v, key, &((struct kg_backend_tls *)obj)->id.cert);
}

static int b_key(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_file(y, v, key, &((struct kg_backend_tls *)obj)->id.key);
}

static int b_pkcs12(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_file(y, v, key, &((struct kg_backend_tls *)obj)->id.pkcs12);
}

static int b_passphrase(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_file(y, v, key, &((struct kg_backend_tls *)obj)->id.passphrase_file);
}

static int b_ca(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	struct kg_backend_tls *b = obj;

	return set_files(y, v, key, &b->cas, &b->ncas);
}

static int b_crl(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	struct kg_backend_tls *b = obj;

	return set_files(y, v, key, &b->crls, &b->ncrls);
}

static int b_verify_name(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	struct kg_backend_tls *b = obj;

	if (set_str(y, v, key, &b->verify_name) < 0)
		return -1;
	if (strlen(b->verify_name) > 253)
		return fail(y, v, key, "expected a DNS name or an IP address");
	return 0;
}

static int set_version(struct yctx *y, const struct ynode *v, const char *key, int *dst);

static int b_min(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_version(y, v, key, &((struct kg_backend_tls *)obj)->min_version);
}

static int b_max(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_version(y, v, key, &((struct kg_backend_tls *)obj)->max_version);
}

static int b_ciphers(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_str(y, v, key, &((struct kg_backend_tls *)obj)->ciphers);
}

static int b_suites(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_str(y, v, key, &((struct kg_backend_tls *)obj)->ciphersuites);
}

static int b_session_cache(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_uint(y, v, key, 0, KG_UP_SESSION_CACHE_MAX,
			&((struct kg_backend_tls *)obj)->session_cache);
}

static const struct ykey backend_tls_keys[] = {
	{ "client_cert", b_cert }, { "client_key", b_key }, { "pkcs12", b_pkcs12 },
	{ "passphrase_file", b_passphrase }, { "ca", b_ca }, { "crl", b_crl },
	{ "verify_name", b_verify_name }, { "min_version", b_min }, { "max_version", b_max },
	{ "ciphers", b_ciphers }, { "ciphersuites", b_suites },
	{ "session_cache", b_session_cache },
};

/* Same pairing rules as an identity: both halves of a PEM pair, or pkcs12. */
static int check_backend_tls(struct yctx *y, const struct ynode *m, const char *key,
			     const struct kg_backend_tls *b)
{
	const struct kg_identity_spec *id = &b->id;

	if (id->pkcs12.path && (id->cert.path || id->key.path))
		return fail(y, find(m, "pkcs12"), "pkcs12", "not allowed with client_cert and client_key");
	if (id->key.path && !id->cert.path)
		return fail(y, find(m, "client_key"), "client_key", "given without client_cert");
	if (id->cert.path && !id->key.path)
		return fail(y, m, "client_key", "required with client_cert");
	if (id->passphrase_file.path && !id->key.path && !id->pkcs12.path)
		return fail(y, find(m, "passphrase_file"), "passphrase_file",
			    "given without client_key or pkcs12");
	if (b->ncas == 0)
		return fail(y, m, "ca", "required: the CA the backend's certificate must chain to");
	if (!b->verify_name)
		return fail(y, m, "verify_name", "required: the name the backend's certificate must carry");
	if (b->min_version > b->max_version)
		return fail(y, find(m, "min_version"), "min_version", "is above max_version");
	return 0;
}

/* A backend_tls block, or a backend's own tls block: *dst is replaced as a
 * whole (a site's block replaces its listener's). */
static int parse_backend_tls(struct yctx *y, const struct ynode *v, const char *key,
			     struct kg_backend_tls **dst)
{
	struct kg_backend_tls *b = calloc(1, sizeof(*b));

	if (!b)
		return oom(y, v, key);
	kg_backend_tls_free(*dst);
	*dst = b;
	b->min_version = TLS1_2_VERSION;
	b->max_version = TLS1_3_VERSION;
	b->session_cache = KG_UP_SESSION_CACHE_DEFAULT;
	b->at = where(y, v, key);
	b->id.at = b->at;
	if (WALK(y, v, key, backend_tls_keys, b) < 0)
		return -1;
	return check_backend_tls(y, v, key, b);
}

static int a_backend_tls(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return parse_backend_tls(y, v, key, &((struct lctx *)obj)->auth->backend_tls);
}

/* ---- backends: "host:port", or { address: "host:port", tls: {...} | false } ---- */

static int backend_address(struct yctx *y, const struct ynode *v, const char *key,
			   struct kg_backend_spec *b)
{
	char why[160], buf[64];

	if (get_text(y, v, key) < 0)
		return -1;
	if (kg_addr_parse(v->text, true, &b->addr, why, sizeof(why)) < 0)
		return fail(y, v, key, "'%s': %s", shown(v, buf, sizeof(buf)), why);
	b->at = where(y, v, key);
	return 0;
}

static int be_address(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return backend_address(y, v, key, obj);
}

/* The backend's own TLS replaces backend_tls for it; false: plain TCP. */
static int be_tls(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	struct kg_backend_spec *b = obj;

	if (v->type == Y_MAP)
		return parse_backend_tls(y, v, key, &b->tls);
	if (bool_value(v) == 0) {
		b->plain = true;
		return 0;
	}
	return fail(y, v, key, "expected a mapping (this backend's TLS settings) or false, got %s",
		    kind(v));
}

static const struct ykey backend_keys[] = { { "address", be_address }, { "tls", be_tls } };

static int parse_backend(struct yctx *y, const struct ynode *v, const char *key,
			 struct kg_backend_spec *b)
{
	if (v->type == Y_SCALAR && !is_null(v))
		return backend_address(y, v, key, b);
	if (v->type != Y_MAP)
		return fail(y, v, key, "expected an address or a mapping with address and tls, got %s",
			    kind(v));
	if (WALK(y, v, key, backend_keys, b) < 0)
		return -1;
	if (!find(v, "address"))
		return fail(y, v, "address", "required: where the backend listens");
	return 0;
}

static int a_backends(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	struct kg_auth_spec *a = ((struct lctx *)obj)->auth;
	struct kg_backend_spec *list;

	if (is_null(v))
		return fail(y, v, key, "expected an address or a list of them, got nothing");
	if (v->type == Y_SEQ && v->nkids == 0)
		return fail(y, v, key, "must not be an empty list");
	list = calloc(count_of(v), sizeof(*list));
	if (!list)
		return oom(y, v, key);
	/* A site's list replaces its listener's. */
	kg_backend_list_free(a->backends, a->nbackends);
	a->backends = list;
	a->nbackends = 0;
	if (v->type != Y_SEQ) {
		a->nbackends = 1;
		return parse_backend(y, v, key, &list[0]);
	}
	for (size_t i = 0; i < v->nkids; i++) {
		a->nbackends = i + 1; /* counted first: a half-parsed tls block is freed too */
		if (parse_backend(y, v->kids[i], key, &list[i]) < 0)
			return -1;
	}
	return 0;
}

#define AUTH_KEYS \
	{ "client_auth", a_client_auth }, { "client_ca", a_client_ca }, { "crl", a_crl }, \
	{ "crl_check", a_crl_check }, { "crl_missing", a_crl_missing }, \
	{ "verify_depth", a_verify_depth }, { "require_client_eku", a_client_eku }, \
	{ "proxy_protocol", a_proxy }, { "backends", a_backends }, \
	{ "allow", a_allow }, { "deny", a_deny }, { "backend_tls", a_backend_tls }

/* Verifying a client certificate needs something to verify it against, and
 * rules over it need one to be asked for. */
static int check_auth(struct yctx *y, const struct ynode *at, const struct kg_auth_spec *a)
{
	if (a->client_auth != KG_AUTH_NONE && a->nclient_cas == 0)
		return fail(y, at, "client_ca", "required unless client_auth is none");
	if (a->client_auth == KG_AUTH_NONE && (a->rules.nallow || a->rules.ndeny))
		return fail(y, at, "client_auth", "is none, so allow and deny rules cannot match");
	return 0;
}

/* ---- SNI names ---- */

static int check_sni_name(struct yctx *y, const struct ynode *v, const char *key)
{
	const char *s = v->text, *star = strchr(s, '*');

	if (star && (star != s || s[1] != '.' || !s[2] || strchr(s + 1, '*')))
		return fail(y, v, key, "'*' is only allowed as the whole first label (*.example.com)");
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '-' || *s == '.' || *s == '*' || *s == '_'))
			return fail(y, v, key, "not a DNS name");
	return 0;
}

struct names_arg {
	char **v;
	size_t *n;
};

static int push_name(struct yctx *y, const struct ynode *v, const char *key, void *arg)
{
	struct names_arg *na = arg;

	if (check_sni_name(y, v, key) < 0)
		return -1;
	for (size_t i = 0; i < *na->n; i++)
		if (!strcasecmp(na->v[i], v->text))
			return fail(y, v, key, "'%s' is listed twice", na->v[i]);
	if (!(na->v[*na->n] = strdup(v->text)))
		return oom(y, v, key);
	(*na->n)++;
	return 0;
}

static int set_names(struct yctx *y, const struct ynode *v, const char *key, char ***list,
		     size_t *n)
{
	char **names = calloc(count_of(v), sizeof(*names));

	if (!names)
		return oom(y, v, key);
	for (size_t i = 0; i < *n; i++)
		free((*list)[i]);
	free(*list);
	*list = names;
	*n = 0;
	return each_string(y, v, key, push_name, &(struct names_arg){ names, n });
}

/* Each SNI name picks one site: a second claim is a mistake.
 * names is the node just parsed, prev the names of item number idx (0-based). */
static int check_sni_unique(struct yctx *y, const struct ynode *names, const char *key,
			    char *const *prev, size_t nprev, const char *what, size_t idx)
{
	struct ynode *const *v;
	size_t count;

	if (!names)
		return 0;
	if (items(y, names, key, &v, &count) > 0)
		v = (struct ynode *const *)&names;
	for (size_t k = 0; k < count; k++)
		for (size_t j = 0; j < nprev; j++)
			if (!strcasecmp(prev[j], v[k]->text))
				return fail(y, v[k], key, "'%s' is already served by %s %zu",
					    prev[j], what, idx + 1);
	return 0;
}

/* ---- identities ---- */

static int i_cert(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_file(y, v, key, &((struct kg_identity_spec *)obj)->cert);
}

static int i_key(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_file(y, v, key, &((struct kg_identity_spec *)obj)->key);
}

static int i_pkcs12(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_file(y, v, key, &((struct kg_identity_spec *)obj)->pkcs12);
}

static int i_passphrase(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_file(y, v, key, &((struct kg_identity_spec *)obj)->passphrase_file);
}

static int i_sni(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	struct kg_identity_spec *id = obj;

	return set_names(y, v, key, &id->sni, &id->nsni);
}

static int i_default(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_bool(y, v, key, &((struct kg_identity_spec *)obj)->is_default);
}

static const struct ykey identity_keys[] = {
	{ "cert", i_cert }, { "key", i_key }, { "pkcs12", i_pkcs12 },
	{ "passphrase_file", i_passphrase }, { "sni", i_sni }, { "default", i_default },
};

static int check_identity(struct yctx *y, const struct ynode *m, const struct kg_identity_spec *id)
{
	if (id->pkcs12.path && (id->cert.path || id->key.path))
		return fail(y, find(m, "pkcs12"), "pkcs12", "not allowed with cert and key");
	if (id->key.path && !id->cert.path)
		return fail(y, find(m, "key"), "key", "given without cert");
	if (id->cert.path && !id->key.path)
		return fail(y, m, "key", "required with cert");
	if (!id->cert.path && !id->pkcs12.path)
		return fail(y, m, "cert", "an identity needs cert and key, or pkcs12");
	return 0;
}

static int parse_identities(struct yctx *y, const struct ynode *v, struct kg_listener_spec *l)
{
	const char *key = "identities";
	size_t ndefault = 0;

	if (want_type(y, v, key, Y_SEQ) < 0)
		return -1;
	if (v->nkids == 0)
		return fail(y, v, key, "must not be an empty list");
	l->ids = calloc(v->nkids, sizeof(*l->ids));
	if (!l->ids)
		return oom(y, v, key);
	for (size_t i = 0; i < v->nkids; i++) {
		const struct ynode *m = v->kids[i];
		struct kg_identity_spec *id = &l->ids[l->nids];

		id->at = where(y, m, key);
		l->nids++;
		/* Two identities may serve one name (an ECDSA + RSA pair); that
		 * they differ in key type is checked once the keys are loaded. */
		if (WALK(y, m, key, identity_keys, id) < 0 || check_identity(y, m, id) < 0)
			return -1;
		if (id->is_default && ndefault++)
			return fail(y, find(m, "default"), "default",
				    "only one identity may be the default");
	}
	if (ndefault == 0)
		l->ids[0].is_default = true; /* the first one, also when it is the only one */
	return 0;
}

/* ---- sites ---- */

static int s_names(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	struct kg_site_spec *s = ((struct lctx *)obj)->site;

	return set_names(y, v, key, &s->names, &s->nnames);
}

static const struct ykey site_keys[] = { { "names", s_names }, AUTH_KEYS };

static int parse_sites(struct yctx *y, const struct ynode *v, struct kg_listener_spec *l)
{
	const char *key = "sites";

	if (want_type(y, v, key, Y_SEQ) < 0)
		return -1;
	if (v->nkids == 0)
		return fail(y, v, key, "must not be an empty list");
	l->sites = calloc(v->nkids, sizeof(*l->sites));
	if (!l->sites)
		return oom(y, v, key);
	for (size_t i = 0; i < v->nkids; i++) {
		const struct ynode *m = v->kids[i];
		struct kg_site_spec *s = &l->sites[i];
		struct lctx lc = { .l = l, .auth = &s->auth, .site = s };

		if (kg_auth_copy(&s->auth, &l->auth) < 0)
			return oom(y, m, key);
		l->nsites++;
		s->at = where(y, m, key);
		if (WALK(y, m, key, site_keys, &lc) < 0)
			return -1;
		if (s->nnames == 0)
			return fail(y, m, "names", "a site needs the SNI names it applies to");
		for (size_t j = 0; j < i; j++)
			if (check_sni_unique(y, find(m, "names"), "names", l->sites[j].names,
					     l->sites[j].nnames, "site", j) < 0)
				return -1;
		if (check_auth(y, m, &s->auth) < 0)
			return -1;
	}
	return 0;
}

/* ---- listeners ---- */

static int l_name(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_str(y, v, key, &((struct lctx *)obj)->l->name);
}

static int l_listen(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	struct kg_listener_spec *l = ((struct lctx *)obj)->l;

	return set_addrs(y, v, key, false, &l->addrs, &l->naddrs);
}

static int l_listen_tls(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	bool tls = true;

	if (set_bool(y, v, key, &tls) < 0)
		return -1;
	((struct lctx *)obj)->l->plain = !tls;
	return 0;
}

static int l_record_engine(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_engine(y, v, key, &((struct lctx *)obj)->l->record_engine);
}

static int l_ktls(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_ktls(y, v, key, &((struct lctx *)obj)->l->ktls);
}

/* Handled after the walk: they need the whole listener (auth, SNI names). */
static int l_ids(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	((struct lctx *)obj)->ids = v;
	return 0;
}

static int l_sites(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	((struct lctx *)obj)->sites = v;
	return 0;
}

static int set_version(struct yctx *y, const struct ynode *v, const char *key, int *dst)
{
	static const char *const names[] = { "1.2", "1.3" };
	int i;

	if (v->type == Y_SCALAR && (!strcmp(v->text, "TLSv1.2") || !strcmp(v->text, "TLSv1.3"))) {
		*dst = v->text[5] == '2' ? TLS1_2_VERSION : TLS1_3_VERSION;
		return 0;
	}
	if (set_enum(y, v, key, names, 2, &i) < 0)
		return -1;
	*dst = i == 0 ? TLS1_2_VERSION : TLS1_3_VERSION;
	return 0;
}

static int tls_min(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_version(y, v, key, &((struct kg_listener_spec *)obj)->min_version);
}

static int tls_max(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_version(y, v, key, &((struct kg_listener_spec *)obj)->max_version);
}

static int tls_ciphers(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_str(y, v, key, &((struct kg_listener_spec *)obj)->ciphers);
}

static int tls_suites(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_str(y, v, key, &((struct kg_listener_spec *)obj)->ciphersuites);
}

static int tls_groups(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	return set_str(y, v, key, &((struct kg_listener_spec *)obj)->groups);
}

static int l_tls(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	static const struct ykey keys[] = {
		{ "min_version", tls_min }, { "max_version", tls_max },
		{ "ciphers", tls_ciphers }, { "ciphersuites", tls_suites }, { "groups", tls_groups },
	};
	struct kg_listener_spec *l = ((struct lctx *)obj)->l;

	if (WALK(y, v, key, keys, l) < 0)
		return -1;
	if (l->min_version > l->max_version) {
		const struct ynode *at = find(v, "min_version");
		return fail(y, at ? at : find(v, "max_version"), at ? "min_version" : "max_version",
			    at ? "is above max_version" : "is below min_version");
	}
	return 0;
}

static const struct ykey listener_keys[] = {
	{ "name", l_name }, { "listen", l_listen }, { "listen_tls", l_listen_tls },
	{ "ktls", l_ktls }, { "tls", l_tls }, { "record_engine", l_record_engine },
	{ "identities", l_ids }, { "sites", l_sites }, AUTH_KEYS,
};

/* Plain in, plain out would be a TCP proxy: every backend of a plain
 * listener is reached over TLS, its own or backend_tls. */
static int check_plain_backends(struct yctx *y, const struct ynode *m, const struct kg_auth_spec *a)
{
	const struct ynode *list = find(m, "backends");

	for (size_t i = 0; i < a->nbackends; i++) {
		const struct ynode *at = list && list->type == Y_SEQ ? list->kids[i] : list;
		if (a->backends[i].plain)
			return fail(y, find(at, "tls"), "tls", "must not be false with listen_tls: false");
		if (!kg_backend_tls_of(a, i))
			return fail(y, m, "backend_tls",
				    "required with listen_tls: false (or a tls block on every backend)");
	}
	return 0;
}

/* listen_tls: false: local applications speak plain TCP, ktlsgate speaks
 * mTLS to the backends. Nothing about client TLS applies, so nothing of it
 * may be written (a client_ca here would suggest clients are verified). */
static int check_plain_listener(struct yctx *y, const struct ynode *m, struct kg_listener_spec *l)
{
	static const char *const tls_only[] = {
		"identities", "sites", "tls", "client_ca", "crl", "crl_check", "crl_missing",
		"verify_depth", "require_client_eku", "allow", "deny",
	};
	const struct ynode *v;

	for (size_t i = 0; i < sizeof(tls_only) / sizeof(tls_only[0]); i++)
		if ((v = find(m, tls_only[i])))
			return fail(y, v, tls_only[i], "not used with listen_tls: false");
	if ((v = find(m, "client_auth")) && l->auth.client_auth != KG_AUTH_NONE)
		return fail(y, v, "client_auth", "must be none with listen_tls: false");
	l->auth.client_auth = KG_AUTH_NONE;
	if (l->naddrs == 0)
		return fail(y, m, "listen", "a listener needs at least one address");
	if (l->auth.nbackends == 0)
		return fail(y, m, "backends", "a listener needs at least one backend");
	return check_plain_backends(y, m, &l->auth);
}

static int parse_listener(struct yctx *y, const struct ynode *m, size_t idx,
			  struct kg_listener_spec *l)
{
	struct lctx lc = { .l = l, .auth = &l->auth };
	char name[32];

	kg_auth_defaults(&l->auth);
	l->min_version = TLS1_2_VERSION;
	l->max_version = TLS1_3_VERSION;
	l->ktls = y->c->ktls;
	l->record_engine = y->c->record_engine;
	l->at = where(y, m, "listeners");
	if (WALK(y, m, "listeners", listener_keys, &lc) < 0)
		return -1;
	if (l->plain) {
		if (check_plain_listener(y, m, l) < 0)
			return -1;
		goto named;
	}
	if (l->naddrs == 0)
		return fail(y, m, "listen", "a listener needs at least one address");
	if (!lc.ids)
		return fail(y, m, "identities", "a listener needs at least one identity");
	if (parse_identities(y, lc.ids, l) < 0)
		return -1;
	if (l->auth.nbackends == 0)
		return fail(y, m, "backends", "a listener needs at least one backend");
	if (check_auth(y, m, &l->auth) < 0)
		return -1;
	if (lc.sites && parse_sites(y, lc.sites, l) < 0)
		return -1;
named:
	if (!l->name) {
		snprintf(name, sizeof(name), "listener[%zu]", idx);
		if (!(l->name = strdup(name)))
			return oom(y, m, "name");
	}
	return 0;
}

static int parse_listeners(struct yctx *y, const struct ynode *v)
{
	struct kg_config *c = y->c;

	if (want_type(y, v, "listeners", Y_SEQ) < 0)
		return -1;
	if (v->nkids == 0)
		return fail(y, v, "listeners", "at least one listener is required");
	c->listeners = calloc(v->nkids, sizeof(*c->listeners));
	if (!c->listeners)
		return oom(y, v, "listeners");
	for (size_t i = 0; i < v->nkids; i++) {
		struct kg_listener_spec *l = &c->listeners[c->nlisteners++];

		if (parse_listener(y, v->kids[i], i, l) < 0)
			return -1;
		for (size_t j = 0; j < i; j++)
			if (!strcmp(c->listeners[j].name, l->name))
				return fail(y, find(v->kids[i], "name"), "name",
					    "listener name '%s' is used twice", l->name);
	}
	return 0;
}

/* ---- the file ---- */

struct rootctx {
	const struct ynode *global, *listeners;
};

static int r_global(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	((struct rootctx *)obj)->global = v;
	return 0;
}

static int r_listeners(struct yctx *y, const struct ynode *v, const char *key, void *obj)
{
	((struct rootctx *)obj)->listeners = v;
	return 0;
}

static int parse_root(struct yctx *y, const struct ynode *root)
{
	static const struct ykey keys[] = { { "global", r_global }, { "listeners", r_listeners } };
	struct rootctx rc = { 0 };

	if (!root)
		return fail(y, NULL, "listeners", "the file is empty; at least one listener is required");
	if (WALK(y, root, "config", keys, &rc) < 0)
		return -1;
	/* global first: listeners inherit its ktls mode */
	if (rc.global && WALK(y, rc.global, "global", global_keys, y->c) < 0)
		return -1;
	if (!rc.listeners)
		return fail(y, root, "listeners", "at least one listener is required");
	return parse_listeners(y, rc.listeners);
}

int kg_config_load_yaml(const char *path, struct kg_config *c, char *err, size_t errlen)
{
	struct yctx y = { .err = err, .errlen = errlen, .c = c };
	struct ynode *root = NULL;

	kg_config_defaults(c);
	c->file = strdup(path);
	if (!c->file) {
		snprintf(err, errlen, "%s: out of memory", path);
		return -1;
	}
	y.file = c->file;
	if (load_tree(&y, path, &root) < 0 || parse_root(&y, root) < 0)
		goto error;
	ynode_free(root);
	return 0;
error:
	ynode_free(root);
	kg_config_free(c);
	for (char *p = err; errlen && *p; p++) /* one line, whatever the path or libfyaml say */
		if ((unsigned char)*p < 0x20)
			*p = '?';
	return -1;
}
