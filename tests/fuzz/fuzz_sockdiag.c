/* libFuzzer harness for the sock_diag reply parser: the input is what follows
 * the netlink header of a SOCK_DIAG_BY_FAMILY reply (struct inet_diag_msg,
 * then attributes). It sits in a buffer of exactly the message's size, so
 * ASan sees any read past it; the result is all or nothing.
 *   CC=clang meson setup build-fuzz -Dfuzz=true
 *   ninja -C build-fuzz tests/fuzz/fuzz_sockdiag
 *   cp -r tests/fuzz/corpus/sockdiag /tmp/corpus
 *   build-fuzz/tests/fuzz/fuzz_sockdiag -max_total_time=60 -dict=tests/fuzz/sockdiag.dict /tmp/corpus */
#include <errno.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sockdiag.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct kg_sock_view zero;
	struct kg_sock_view v;
	struct nlmsghdr *nlh;
	size_t len = NLMSG_HDRLEN + size;
	int rc;

	if (len > 65535)
		return 0;
	nlh = malloc(len);
	if (!nlh)
		return 0;
	*nlh = (struct nlmsghdr){ .nlmsg_len = (uint32_t)len, .nlmsg_type = SOCK_DIAG_BY_FAMILY };
	memcpy((uint8_t *)nlh + NLMSG_HDRLEN, data, size);
	rc = kg_sockdiag_parse(nlh, &v);
	if (rc != 0 && (rc != -EBADMSG || memcmp(&v, &zero, sizeof(v)) != 0))
		abort(); /* an error leaves nothing half-believed */
	if (rc == 0 && !v.found)
		abort();
	/* The names must be total functions. */
	if (!kg_sockdiag_version_name(v.tls_version) || !kg_sockdiag_cipher_name(v.tls_cipher) ||
	    !kg_sockdiag_conf_name(v.tls_txconf) || !kg_sockdiag_conf_name(v.tls_rxconf))
		abort();
	free(nlh);
	return 0;
}
