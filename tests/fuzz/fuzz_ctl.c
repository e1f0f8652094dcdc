/* libFuzzer harness for the control protocol: arbitrary bytes are framed
 * into lines exactly as the socket server does (kg_ctl_frame), each line is
 * answered by kg_ctl_answer and kg_ctl_dispatch without a daemon. Every
 * reply must be an object with a boolean "ok", an "error" string when not
 * ok, and serialise to one line (the protocol's framing); nothing leaks.
 *   CC=clang meson setup build-fuzz -Dfuzz=true
 *   ninja -C build-fuzz tests/fuzz/fuzz_ctl
 *   cp -r tests/fuzz/corpus/ctl /tmp/corpus
 *   build-fuzz/tests/fuzz/fuzz_ctl -max_total_time=60 -dict=tests/fuzz/ctl.dict /tmp/corpus */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_server.h"

static void check_reply(json_t *reply)
{
	json_t *ok = json_object_get(reply, "ok");
	char *text;

	if (!json_is_object(reply) || !json_is_boolean(ok))
		abort();
	if (!json_is_true(ok) && !json_is_string(json_object_get(reply, "error")))
		abort();
	text = json_dumps(reply, JSON_COMPACT);
	if (!text || strchr(text, '\n'))
		abort();
	free(text);
}

static void on_line(void *arg, const char *line, size_t len)
{
	size_t *lines = arg;
	json_t *reply = kg_ctl_answer(NULL, line, len);

	if (line[len] != '\0') /* the framer ends each line where its '\n' was */
		abort();
	check_reply(reply);
	json_decref(reply);
	++*lines;
}

/* The same bytes as one request object's "cmd" (unknown and malformed
 * command names straight to the dispatcher, past the JSON parser). */
static void dispatch_as_cmd(const uint8_t *data, size_t size)
{
	json_t *req = json_object();
	json_t *cmd = json_stringn_nocheck((const char *)data, size);
	json_t *reply;

	json_object_set_new(req, "cmd", cmd ? cmd : json_integer((json_int_t)size));
	json_object_set_new(req, "name", json_stringn_nocheck((const char *)data, size / 2));
	reply = kg_ctl_dispatch(NULL, req);
	check_reply(reply);
	json_decref(reply);
	json_decref(req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size + 1);
	size_t lines = 0, used, newlines = 0;

	if (!buf)
		return 0;
	memcpy(buf, data, size);
	used = kg_ctl_frame(buf, size, on_line, &lines);
	for (size_t i = 0; i < size; i++)
		newlines += data[i] == '\n';
	if (lines != newlines || used > size || memchr(buf + used, '\n', size - used))
		abort();
	free(buf);
	dispatch_as_cmd(data, size);
	return 0;
}
