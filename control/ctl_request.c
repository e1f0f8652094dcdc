/* The control protocol without the socket: lines in, reply objects out.
 * Pure (no I/O, no daemon state of its own), so tests/fuzz/fuzz_ctl.c can
 * drive it with arbitrary bytes. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ctl_server.h"

/* Length of the valid UTF-8 sequence at s (as jansson checks it: no
 * overlong forms, no surrogates, nothing above U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *s)
{
	unsigned cp;
	size_t n;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		n = 2, cp = s[0] & 0x1fu;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		n = 3, cp = s[0] & 0x0fu;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		n = 4, cp = s[0] & 0x07u;
	else
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80) /* also stops at the NUL */
			return 0;
		cp = cp << 6 | (s[i] & 0x3fu);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

/* A message quoting the client ("unknown command '%.64s'") may cut a
 * character in half: jansson refuses such a string, and the client would get
 * no reply at all. Bytes that are not UTF-8 become '?'. */
static void scrub_utf8(char *msg)
{
	for (unsigned char *p = (unsigned char *)msg; *p;) {
		size_t n = utf8_len(p);
		if (!n)
			*p++ = '?';
		else
			p += n;
	}
}

json_t *kg_ctl_error(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	scrub_utf8(msg);
	return json_pack("{s:b, s:s}", "ok", 0, "error", msg);
}

json_t *kg_ctl_answer(struct kg_daemon *d, const char *line, size_t len)
{
	json_error_t jerr;
	json_t *req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	json_t *reply;

	if (!req)
		reply = kg_ctl_error("bad JSON at column %d: %s", jerr.column, jerr.text);
	else if (!json_is_object(req))
		reply = kg_ctl_error("a request must be a JSON object with \"cmd\"");
	else
		reply = kg_ctl_dispatch(d, req);
	json_decref(req);
	return reply;
}

size_t kg_ctl_frame(char *buf, size_t len, kg_ctl_line_fn fn, void *arg)
{
	size_t used = 0;
	char *nl;

	while ((nl = memchr(buf + used, '\n', len - used))) {
		*nl = '\0';
		fn(arg, buf + used, (size_t)(nl - (buf + used)));
		used = (size_t)(nl + 1 - buf);
	}
	return used;
}
