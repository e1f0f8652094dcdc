/* The kernel TLS probe: on a kernel without kTLS it must say so with the
 * reason (this host: TCP_ULP gives ENOENT); with kTLS (the UML guest) it must
 * find AES-GCM for TX and RX. Run both ways: directly and via run-uml.sh. */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "ktls_probe.h"
#include "test.h"

int main(int argc, char **argv)
{
	struct kg_ktls_caps caps;
	char desc[256];
	bool expect_ktls = argc > 1 && strcmp(argv[1], "--expect-ktls") == 0;

	kg_ktls_probe(&caps);
	kg_ktls_caps_describe(&caps, desc, sizeof(desc));
	printf("probe: %s\n", desc);
	if (expect_ktls) {
		if (access("/proc/net/tls_stat", R_OK) != 0)
			return T_EXIT_SKIP;
		CHECK(caps.available);
		CHECK(caps.tx[KG_KTLS_AES_128_GCM] && caps.rx[KG_KTLS_AES_128_GCM]);
		CHECK(caps.tx[KG_KTLS_AES_256_GCM] && caps.rx[KG_KTLS_AES_256_GCM]);
		CHECK_CONTAINS(desc, "available (");
		CHECK_CONTAINS(desc, "AES-128-GCM AES-256-GCM");
		/* The rekey probe must tell, either way; the guest (6.1) cannot. */
		CHECK_CONTAINS(desc, caps.rekey ? "; rekey: yes)" : "; rekey: no)");
		return T_DONE();
	}
	if (caps.available) {
		printf("this kernel has kTLS: the 'unavailable' half does not apply here\n");
		return T_EXIT_SKIP;
	}
	CHECK(caps.ulp_errno != 0);
	CHECK_CONTAINS(desc, "unavailable (TCP_ULP tls: ");
	CHECK_CONTAINS(desc, strerror(caps.ulp_errno));
	return T_DONE();
}
