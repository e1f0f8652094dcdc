#include "table.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define KV_WIDTH 17 /* "runtime changes: " */

struct tbl {
	size_t ncols, ncells, cap;
	const char *const *titles;
	char **cells;
};

static void *xrealloc(void *p, size_t n)
{
	void *r = realloc(p, n);

	if (!r) {
		fputs("ktlsgatectl: out of memory\n", stderr);
		exit(1);
	}
	return r;
}

static char *xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;

	return memcpy(xrealloc(NULL, n), s, n);
}

static char *xvasprintf(const char *fmt, va_list ap)
{
	char *s;

	if (vasprintf(&s, fmt, ap) < 0) {
		fputs("ktlsgatectl: out of memory\n", stderr);
		exit(1);
	}
	return s;
}

static int is_ctl(unsigned char c) { return c < 0x20 || c == 0x7f; }

/* Display width of s as tbl_fputs_safe prints it (UTF-8 code points). */
static size_t safe_width(const char *s)
{
	size_t w = 0;

	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (is_ctl(*p))
			w += 4;
		else if ((*p & 0xc0) != 0x80)
			w++;
	}
	return w;
}

void tbl_fputs_safe(const char *s, FILE *f)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (is_ctl(*p))
			fprintf(f, "\\x%02x", *p);
		else
			fputc(*p, f);
	}
}

struct tbl *tbl_new(size_t ncols, const char *const *titles)
{
	struct tbl *t = xrealloc(NULL, sizeof(*t));

	*t = (struct tbl){ .ncols = ncols, .titles = titles };
	return t;
}

static void add_cell(struct tbl *t, char *s)
{
	if (t->ncells == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 64;
		t->cells = xrealloc(t->cells, t->cap * sizeof(*t->cells));
	}
	t->cells[t->ncells++] = s;
}

void tbl_add(struct tbl *t, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	add_cell(t, xvasprintf(fmt, ap));
	va_end(ap);
}

void tbl_add_json(struct tbl *t, json_t *v)
{
	add_cell(t, tbl_json_text(v));
}

static const char *title_text(const char *title) { return title + (title[0] == '>'); }

static void print_cell(const char *s, size_t width, int right, int last)
{
	size_t pad = width - safe_width(s);

	if (right)
		printf("%*s", (int)pad, "");
	tbl_fputs_safe(s, stdout);
	if (!right && !last)
		printf("%*s", (int)pad, "");
}

void tbl_print(struct tbl *t)
{
	size_t *width = xrealloc(NULL, t->ncols * sizeof(*width));

	while (t->ncells % t->ncols)
		add_cell(t, xstrdup("")); /* a short last row */
	for (size_t c = 0; c < t->ncols; c++)
		width[c] = safe_width(title_text(t->titles[c]));
	for (size_t i = 0; i < t->ncells; i++) {
		size_t w = safe_width(t->cells[i]);
		if (w > width[i % t->ncols])
			width[i % t->ncols] = w;
	}
	for (size_t c = 0; c < t->ncols; c++) {
		print_cell(title_text(t->titles[c]), width[c], t->titles[c][0] == '>', c + 1 == t->ncols);
		fputs(c + 1 == t->ncols ? "\n" : "  ", stdout);
	}
	for (size_t i = 0; i < t->ncells; i++) {
		size_t c = i % t->ncols;
		print_cell(t->cells[i], width[c], t->titles[c][0] == '>', c + 1 == t->ncols);
		fputs(c + 1 == t->ncols ? "\n" : "  ", stdout);
		free(t->cells[i]);
	}
	free(width);
	free(t->cells);
	free(t);
}

static char *scalar_text(json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_STRING:
		return strdup(json_string_value(v));
	case JSON_INTEGER: {
		char *s;
		return asprintf(&s, "%" JSON_INTEGER_FORMAT, json_integer_value(v)) < 0 ? NULL : s;
	}
	case JSON_REAL: {
		char *s;
		return asprintf(&s, "%g", json_real_value(v)) < 0 ? NULL : s;
	}
	case JSON_TRUE:
		return strdup("yes");
	case JSON_FALSE:
		return strdup("no");
	default: /* null, and objects a human table has no room for */
		return strdup("-");
	}
}

char *tbl_json_text(json_t *v)
{
	char *s = NULL;

	if (!v) {
		s = strdup("-");
	} else if (json_is_array(v)) {
		size_t i, len = 0;
		json_t *e;

		s = strdup(json_array_size(v) ? "" : "-");
		json_array_foreach(v, i, e) {
			char *part = scalar_text(e);
			if (!part || !s)
				break;
			size_t plen = strlen(part);
			s = xrealloc(s, len + plen + 3);
			if (i)
				memcpy(s + len, ", ", 2), len += 2;
			memcpy(s + len, part, plen + 1);
			len += plen;
			free(part);
		}
	} else {
		s = scalar_text(v);
	}
	if (!s) {
		fputs("ktlsgatectl: out of memory\n", stderr);
		exit(1);
	}
	return s;
}

static void kv_key(const char *key)
{
	int n = printf("%s:", key);

	printf("%*s", n < KV_WIDTH ? KV_WIDTH - n : 1, "");
}

void tbl_kv(const char *key, const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	s = xvasprintf(fmt, ap);
	va_end(ap);
	kv_key(key);
	tbl_fputs_safe(s, stdout);
	fputc('\n', stdout);
	free(s);
}

void tbl_kv_json(const char *key, json_t *v)
{
	char *s = tbl_json_text(v);

	tbl_kv(key, "%s", s);
	free(s);
}

void tbl_fmt_ms(char *buf, size_t cap, double ms)
{
	long long s = (long long)(ms / 1000);

	if (ms < 0)
		snprintf(buf, cap, "-");
	else if (ms < 1000)
		snprintf(buf, cap, "%.0fms", ms);
	else if (ms < 60000)
		snprintf(buf, cap, "%.1fs", ms / 1000);
	else if (s < 3600)
		snprintf(buf, cap, "%lldm%02llds", s / 60, s % 60);
	else if (s < 86400)
		snprintf(buf, cap, "%lldh%02lldm", s / 3600, s % 3600 / 60);
	else
		snprintf(buf, cap, "%lldd%02lldh", s / 86400, s % 86400 / 3600);
}
