#include "sockview.h"

#include <string.h>

#include "sockdiag.h"

json_t *kg_sockview_json(const struct sockaddr_storage *local, const struct sockaddr_storage *peer)
{
	struct kg_sock_view v;
	int rc = kg_sockdiag_query((const struct sockaddr *)local, (const struct sockaddr *)peer, &v);

	if (rc < 0)
		return json_pack("{s:s}", "error", strerror(-rc));
	if (!v.found)
		return json_pack("{s:s}", "error", "the kernel no longer has this socket");
	/* Without CAP_NET_ADMIN the kernel leaves the ULP part out: say so. */
	return json_pack("{s:i, s:i, s:I, s:I, s:b, s:s, s:s, s:s, s:s}", "tcp_state", v.tcp_state,
			 "rtt_us", (int)v.rtt_us, "bytes_acked", (json_int_t)v.bytes_acked,
			 "bytes_received", (json_int_t)v.bytes_received, "ulp_tls", v.ulp_tls,
			 "tls_version", kg_sockdiag_version_name(v.tls_version),
			 "cipher", kg_sockdiag_cipher_name(v.tls_cipher),
			 "tx", kg_sockdiag_conf_name(v.tls_txconf), "rx", kg_sockdiag_conf_name(v.tls_rxconf));
}
