#include <netinet/in.h>
#include <sys/un.h>

#include "addr.h"
#include "test.h"

static void roundtrip(const char *spec, const char *want)
{
	struct kg_addr a;
	char err[160], text[128];

	if (kg_addr_parse(spec, true, &a, err, sizeof(err)) < 0) {
		fprintf(stderr, "parse %s failed: %s\n", spec, err);
		t_failures++;
		return;
	}
	kg_addr_format((struct sockaddr *)&a.ss, a.len, text, sizeof(text));
	CHECK_STR(text, want);
	CHECK_STR(a.text, spec);
}

static void rejects(const char *spec, bool allow_unix, const char *why)
{
	struct kg_addr a;
	char err[160] = "";

	CHECK(kg_addr_parse(spec, allow_unix, &a, err, sizeof(err)) < 0);
	CHECK_CONTAINS(err, why);
}

int main(void)
{
	roundtrip("127.0.0.1:443", "127.0.0.1:443");
	roundtrip("[::1]:8443", "[::1]:8443");
	roundtrip("unix:/run/x.sock", "unix:/run/x.sock");
	roundtrip("localhost:80", "127.0.0.1:80");
	rejects("127.0.0.1", true, "expected HOST:PORT");
	rejects("127.0.0.1:99999", true, "expected HOST:PORT");
	rejects("127.0.0.1:-1", true, "expected HOST:PORT");
	rejects("::1:80", true, "expected HOST:PORT");
	rejects("[::1]80", true, "expected HOST:PORT");
	rejects("unix:/x", false, "not allowed");
	rejects("unix:relative", true, "absolute");
	rejects("no-such-host.invalid:80", true, "cannot resolve");
	return T_DONE();
}
