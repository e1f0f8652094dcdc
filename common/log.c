#include "log.h"

#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum kg_log_format log_format = KG_LOG_TEXT;
static int log_fd = 2;

static const char *const level_names[] = { "debug", "info", "warn", "error" };

void kg_log_set_format(enum kg_log_format fmt) { log_format = fmt; }
enum kg_log_format kg_log_get_format(void) { return log_format; }
void kg_log_set_fd(int fd) { log_fd = fd; }

void kg_log_reopen(int fd)
{
	if (log_fd == 2 || dup3(fd, log_fd, O_CLOEXEC) < 0) {
		log_fd = fd; /* stderr is never replaced underneath */
		return;
	}
	close(fd);
}

static void format_now(char *buf, size_t cap)
{
	struct timespec ts;
	struct tm tm;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, cap - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

struct out {
	char *buf;
	size_t cap, len;
};

static void out_putc(struct out *o, char ch)
{
	if (o->len + 1 < o->cap)
		o->buf[o->len++] = ch;
}

static void out_puts(struct out *o, const char *s)
{
	while (*s)
		out_putc(o, *s++);
}

static bool needs_quotes(const char *v)
{
	for (const unsigned char *p = (const unsigned char *)v; *p; p++)
		if (*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p >= 0x7f)
			return true;
	return false;
}

/* Text values: bare when safe, else double-quoted with C-style escapes so that
 * a hostile certificate subject can never forge a key or a line break. */
static void out_text_value(struct out *o, const char *v)
{
	if (!v || !*v) {
		out_putc(o, '-');
		return;
	}
	if (!needs_quotes(v)) {
		out_puts(o, v);
		return;
	}
	out_putc(o, '"');
	for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
		if (*p == '"' || *p == '\\') {
			out_putc(o, '\\');
			out_putc(o, (char)*p);
		} else if (*p < ' ' || *p == 0x7f) {
			char esc[8];
			snprintf(esc, sizeof(esc), "\\x%02x", *p);
			out_puts(o, esc);
		} else {
			out_putc(o, (char)*p);
		}
	}
	out_putc(o, '"');
}

static void render_text(struct out *o, enum kg_log_level lvl, const char *time,
			const char *event, const struct kg_field *f, size_t n)
{
	out_puts(o, time);
	out_putc(o, ' ');
	out_puts(o, level_names[lvl]);
	out_putc(o, ' ');
	out_puts(o, event);
	for (size_t i = 0; i < n; i++) {
		out_putc(o, ' ');
		out_puts(o, f[i].key);
		out_putc(o, '=');
		if (f[i].type == KG_F_INT) {
			char num[32];
			snprintf(num, sizeof(num), "%lld", f[i].i);
			out_puts(o, num);
		} else {
			out_text_value(o, f[i].s);
		}
	}
}

/* Certificate names are untrusted bytes: invalid UTF-8 is logged escaped. */
static json_t *json_string_or_escaped(const char *s)
{
	json_t *v = json_string(s);
	if (v)
		return v;
	char esc[1024];
	size_t n = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p && n + 5 < sizeof(esc); p++) {
		if (*p < 0x80 && *p >= ' ')
			esc[n++] = (char)*p;
		else
			n += (size_t)snprintf(esc + n, sizeof(esc) - n, "\\x%02x", *p);
	}
	esc[n] = 0;
	return json_string(esc);
}

static void render_json(struct out *o, enum kg_log_level lvl, const char *time,
			const char *event, const struct kg_field *f, size_t n)
{
	json_t *obj = json_object();

	json_object_set_new(obj, "time", json_string(time));
	json_object_set_new(obj, "level", json_string(level_names[lvl]));
	json_object_set_new(obj, "event", json_string(event));
	for (size_t i = 0; i < n; i++) {
		json_t *v;
		if (f[i].type == KG_F_INT)
			v = json_integer(f[i].i);
		else if (f[i].s && *f[i].s)
			v = json_string_or_escaped(f[i].s);
		else
			v = json_null();
		json_object_set_new(obj, f[i].key, v);
	}
	char *s = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
	out_puts(o, s ? s : "{\"event\":\"log_error\"}");
	free(s);
	json_decref(obj);
}

size_t kg_log_render(char *buf, size_t cap, enum kg_log_format fmt, enum kg_log_level lvl,
		     const char *time, const char *event,
		     const struct kg_field *fields, size_t nfields)
{
	struct out o = { .buf = buf, .cap = cap, .len = 0 };

	if (fmt == KG_LOG_JSON)
		render_json(&o, lvl, time, event, fields, nfields);
	else
		render_text(&o, lvl, time, event, fields, nfields);
	o.buf[o.len++] = '\n';
	return o.len;
}

void kg_log_event(enum kg_log_level lvl, const char *event,
		  const struct kg_field *fields, size_t nfields)
{
	char time[40], line[8192];

	format_now(time, sizeof(time));
	size_t len = kg_log_render(line, sizeof(line), log_format, lvl, time, event,
				   fields, nfields);
	ssize_t unused = write(log_fd, line, len);
	(void)unused;
}

void kg_log_msg(enum kg_log_level lvl, const char *event, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	struct kg_field f[] = { KG_S("msg", msg) };
	kg_log_event(lvl, event, f, 1);
}
