#include <jansson.h>

#include "log.h"
#include "test.h"

static const char *render(enum kg_log_format fmt, const struct kg_field *f, size_t n)
{
	static char buf[4096];
	size_t len = kg_log_render(buf, sizeof(buf), fmt, KG_LOG_INFO, "T", "access", f, n);
	buf[len] = '\0';
	return buf;
}

static void text_quotes_only_when_needed(void)
{
	struct kg_field f[] = { KG_S("a", "plain"), KG_S("b", "two words"), KG_S("c", NULL),
				KG_S("d", ""), KG_I("n", -5) };
	CHECK_STR(render(KG_LOG_TEXT, f, 5), "T info access a=plain b=\"two words\" c=- d=- n=-5\n");
}

static void text_cannot_be_forged(void)
{
	/* A hostile subject must not start a new line or fake a key. */
	struct kg_field f[] = { KG_S("subject", "CN=x\nT info access result=ok \"q\\") };
	CHECK_STR(render(KG_LOG_TEXT, f, 1),
		  "T info access subject=\"CN=x\\x0aT info access result=ok \\\"q\\\\\"\n");
}

static void json_is_one_valid_object(void)
{
	struct kg_field f[] = { KG_S("s", "a\"b\n"), KG_S("none", NULL), KG_I("n", 42),
				KG_S("bad", "\xff\xfe") };
	const char *line = render(KG_LOG_JSON, f, 4);
	json_error_t e;
	json_t *o = json_loads(line, 0, &e);

	CHECK(o != NULL);
	CHECK(strchr(line, '\n') == line + strlen(line) - 1);
	if (!o)
		return;
	CHECK_STR(json_string_value(json_object_get(o, "event")), "access");
	CHECK_STR(json_string_value(json_object_get(o, "s")), "a\"b\n");
	CHECK(json_is_null(json_object_get(o, "none")));
	CHECK(json_integer_value(json_object_get(o, "n")) == 42);
	CHECK_STR(json_string_value(json_object_get(o, "bad")), "\\xff\\xfe");
	json_decref(o);
}

static void long_lines_are_truncated_not_overflowed(void)
{
	char big[10000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	struct kg_field f[] = { KG_S("big", big) };
	char buf[256];
	size_t len = kg_log_render(buf, sizeof(buf), KG_LOG_TEXT, KG_LOG_INFO, "T", "e", f, 1);
	CHECK(len <= sizeof(buf));
	CHECK(buf[len - 1] == '\n');
}

int main(void)
{
	text_quotes_only_when_needed();
	text_cannot_be_forged();
	json_is_one_valid_object();
	long_lines_are_truncated_not_overflowed();
	return T_DONE();
}
