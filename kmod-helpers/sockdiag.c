#include "sockdiag.h"

#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/sock_diag.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <netlink/attr.h>
#include <netlink/errno.h>
#include <netlink/handlers.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/socket.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#define ULP_NAME_MAX 16 /* TCP_ULP_NAME_MAX, kernel-internal */

/* Exact lengths: the kernel sends u16s and flags, anything else is not its. */
static const struct nla_policy diag_policy[INET_DIAG_MAX + 1] = {
	[INET_DIAG_ULP_INFO] = { .type = NLA_NESTED },
};
static const struct nla_policy ulp_policy[INET_ULP_INFO_MAX + 1] = {
	[INET_ULP_INFO_NAME] = { .type = NLA_STRING, .maxlen = ULP_NAME_MAX },
	[INET_ULP_INFO_TLS] = { .type = NLA_NESTED },
};
static const struct nla_policy tls_policy[TLS_INFO_MAX + 1] = {
	[TLS_INFO_VERSION] = { .type = NLA_U16, .maxlen = 2 },
	[TLS_INFO_CIPHER] = { .type = NLA_U16, .maxlen = 2 },
	[TLS_INFO_TXCONF] = { .type = NLA_U16, .maxlen = 2 },
	[TLS_INFO_RXCONF] = { .type = NLA_U16, .maxlen = 2 },
	[TLS_INFO_ZC_RO_TX] = { .type = NLA_FLAG },
	[TLS_INFO_RX_NO_PAD] = { .type = NLA_FLAG },
};

/* glibc's struct tcp_info (libnl pulls in <netinet/tcp.h>, which clashes with
 * <linux/tcp.h>) stops at tcpi_total_retrans; the kernel's goes on, append-only. */
struct tcp_info_ext {
	struct tcp_info base;
	uint64_t tcpi_pacing_rate, tcpi_max_pacing_rate;
	uint64_t tcpi_bytes_acked, tcpi_bytes_received;
};
_Static_assert(offsetof(struct tcp_info_ext, tcpi_bytes_acked) == 120, "linux/tcp.h layout");

#define HAS_FIELD(len, type, field) \
	((size_t)(len) >= offsetof(type, field) + sizeof(((type *)0)->field))

/* struct tcp_info grows with the kernel: take what is there, by field. */
static void parse_tcp_info(const struct nlattr *a, struct kg_sock_view *view)
{
	struct tcp_info_ext ti;
	int len = nla_len(a);

	memset(&ti, 0, sizeof(ti));
	memcpy(&ti, nla_data(a), len < (int)sizeof(ti) ? (size_t)len : sizeof(ti));
	if (!HAS_FIELD(len, struct tcp_info_ext, base.tcpi_snd_cwnd))
		return;
	view->have_tcp_info = true;
	view->rtt_us = ti.base.tcpi_rtt;
	view->snd_cwnd = ti.base.tcpi_snd_cwnd;
	if (HAS_FIELD(len, struct tcp_info_ext, tcpi_bytes_received)) {
		view->bytes_acked = ti.tcpi_bytes_acked;
		view->bytes_received = ti.tcpi_bytes_received;
	}
}

static int parse_tls(struct nlattr *a, struct kg_sock_view *view)
{
	struct nlattr *tb[TLS_INFO_MAX + 1];

	if (nla_parse_nested(tb, TLS_INFO_MAX, a, tls_policy) < 0)
		return -1;
	if (tb[TLS_INFO_VERSION])
		view->tls_version = nla_get_u16(tb[TLS_INFO_VERSION]);
	if (tb[TLS_INFO_CIPHER])
		view->tls_cipher = nla_get_u16(tb[TLS_INFO_CIPHER]);
	if (tb[TLS_INFO_TXCONF])
		view->tls_txconf = nla_get_u16(tb[TLS_INFO_TXCONF]);
	if (tb[TLS_INFO_RXCONF])
		view->tls_rxconf = nla_get_u16(tb[TLS_INFO_RXCONF]);
	/* libnl has no maximum of 0: a flag with a payload is refused here. */
	if ((tb[TLS_INFO_ZC_RO_TX] && nla_len(tb[TLS_INFO_ZC_RO_TX]) != 0) ||
	    (tb[TLS_INFO_RX_NO_PAD] && nla_len(tb[TLS_INFO_RX_NO_PAD]) != 0))
		return -1;
	view->zc_ro_tx = tb[TLS_INFO_ZC_RO_TX] != NULL;
	view->rx_no_pad = tb[TLS_INFO_RX_NO_PAD] != NULL;
	return 0;
}

/* INET_DIAG_ULP_INFO { NAME "tls", TLS { VERSION, CIPHER, TXCONF, RXCONF,
 * ZC_RO_TX?, RX_NO_PAD? } }; another ULP (mptcp) is fine and ignored. */
static int parse_ulp(struct nlattr *a, struct kg_sock_view *view)
{
	struct nlattr *tb[INET_ULP_INFO_MAX + 1];

	if (nla_parse_nested(tb, INET_ULP_INFO_MAX, a, ulp_policy) < 0)
		return -1;
	if (!tb[INET_ULP_INFO_NAME] || strcmp(nla_get_string(tb[INET_ULP_INFO_NAME]), "tls") != 0)
		return 0;
	view->ulp_tls = true;
	return tb[INET_ULP_INFO_TLS] ? parse_tls(tb[INET_ULP_INFO_TLS], view) : 0;
}

static const struct inet_diag_msg *diag_msg(const struct nlmsghdr *nlh)
{
	const struct inet_diag_msg *r;

	if (nlh->nlmsg_len < NLMSG_LENGTH(sizeof(*r)) || nlh->nlmsg_type != SOCK_DIAG_BY_FAMILY)
		return NULL;
	r = NLMSG_DATA(nlh);
	return r->idiag_family == AF_INET || r->idiag_family == AF_INET6 ? r : NULL;
}

int kg_sockdiag_parse(const struct nlmsghdr *nlh, struct kg_sock_view *view)
{
	struct nlattr *tb[INET_DIAG_MAX + 1];
	const struct inet_diag_msg *r = diag_msg(nlh);

	memset(view, 0, sizeof(*view));
	if (!r || nla_parse(tb, INET_DIAG_MAX, nlmsg_attrdata(nlh, sizeof(*r)),
			    nlmsg_attrlen(nlh, sizeof(*r)), diag_policy) < 0)
		goto bad;
	view->tcp_state = r->idiag_state;
	if (tb[INET_DIAG_INFO])
		parse_tcp_info(tb[INET_DIAG_INFO], view);
	if (tb[INET_DIAG_ULP_INFO] && parse_ulp(tb[INET_DIAG_ULP_INFO], view) < 0)
		goto bad;
	view->found = true;
	return 0;
bad:
	memset(view, 0, sizeof(*view));
	return -EBADMSG;
}

/* ---- asking the kernel ---- */

struct request {
	struct inet_diag_req_v2 req;
	/* filled by the reply */
	struct kg_sock_view view;
	uint32_t cookie[2];
	int err;     /* -errno from the kernel or the parser */
	bool done;   /* ACK or error seen */
};

static int build_request(const struct sockaddr *local, const struct sockaddr *peer,
			 struct inet_diag_req_v2 *req)
{
	memset(req, 0, sizeof(*req));
	if (!local || !peer || local->sa_family != peer->sa_family)
		return -EINVAL;
	req->sdiag_family = (uint8_t)local->sa_family;
	req->sdiag_protocol = IPPROTO_TCP;
	req->idiag_ext = 1 << (INET_DIAG_INFO - 1); /* also brings INET_DIAG_ULP_INFO */
	req->idiag_states = ~0U;
	req->id.idiag_cookie[0] = req->id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
	if (local->sa_family == AF_INET) {
		const struct sockaddr_in *l = (const void *)local, *p = (const void *)peer;

		req->id.idiag_sport = l->sin_port;
		req->id.idiag_dport = p->sin_port;
		memcpy(req->id.idiag_src, &l->sin_addr, 4);
		memcpy(req->id.idiag_dst, &p->sin_addr, 4);
	} else if (local->sa_family == AF_INET6) {
		const struct sockaddr_in6 *l = (const void *)local, *p = (const void *)peer;

		req->id.idiag_sport = l->sin6_port;
		req->id.idiag_dport = p->sin6_port;
		memcpy(req->id.idiag_src, &l->sin6_addr, 16);
		memcpy(req->id.idiag_dst, &p->sin6_addr, 16);
	} else {
		return -EAFNOSUPPORT;
	}
	return 0;
}

/* The kernel's lookup falls back to a listener on the local port when the
 * 4-tuple is unknown: only the exact connection counts. */
static bool same_conn(const struct inet_diag_req_v2 *req, const struct inet_diag_msg *r)
{
	size_t alen = req->sdiag_family == AF_INET ? 4 : 16;

	return r->idiag_family == req->sdiag_family && r->idiag_state != TCP_LISTEN &&
	       r->id.idiag_sport == req->id.idiag_sport && r->id.idiag_dport == req->id.idiag_dport &&
	       memcmp(r->id.idiag_src, req->id.idiag_src, alen) == 0 &&
	       memcmp(r->id.idiag_dst, req->id.idiag_dst, alen) == 0;
}

/* Only the kernel (port 0) speaks for the kernel. */
static int on_msg_in(struct nl_msg *msg, void *arg)
{
	return nlmsg_get_src(msg)->nl_pid == 0 ? NL_OK : NL_SKIP;
}

static int on_valid(struct nl_msg *msg, void *arg)
{
	struct request *q = arg;
	const struct nlmsghdr *nlh = nlmsg_hdr(msg);
	const struct inet_diag_msg *r = diag_msg(nlh);
	struct kg_sock_view view;

	if (!r || !same_conn(&q->req, r))
		return NL_OK;
	if (kg_sockdiag_parse(nlh, &view) < 0) {
		q->err = -EBADMSG;
		return NL_OK;
	}
	q->view = view;
	memcpy(q->cookie, r->id.idiag_cookie, sizeof(q->cookie));
	return NL_OK;
}

static int on_ack(struct nl_msg *msg, void *arg)
{
	((struct request *)arg)->done = true;
	return NL_STOP;
}

static int on_error(struct sockaddr_nl *who, struct nlmsgerr *e, void *arg)
{
	struct request *q = arg;

	q->err = e->error < 0 ? e->error : -EPROTO;
	q->done = true;
	return NL_STOP;
}

static int nl_to_errno(int nlerr)
{
	switch (-nlerr) {
	case NLE_NOMEM: return -ENOMEM;
	case NLE_PERM: return -EPERM;
	case NLE_NOACCESS: return -EACCES;
	case NLE_OPNOTSUPP: return -EOPNOTSUPP;
	case NLE_OBJ_NOTFOUND: return -ENOENT;
	case NLE_AF_NOSUPPORT:
	case NLE_PROTO_MISMATCH: return -EPROTONOSUPPORT;
	default: return -EIO;
	}
}

/* One request, replies until the kernel's ACK or error. A reply never takes
 * long; the receive timeout only guards against a kernel that says nothing. */
static int transact(int type, struct request *q)
{
	struct timeval tv = { .tv_sec = 2 };
	struct nl_sock *sk = nl_socket_alloc();
	struct nl_msg *msg = NULL;
	struct nl_cb *cb = NULL;
	int rc;

	if (!sk)
		return -ENOMEM;
	rc = nl_connect(sk, NETLINK_SOCK_DIAG);
	if (rc < 0) {
		rc = nl_to_errno(rc);
		goto out;
	}
	setsockopt(nl_socket_get_fd(sk), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	cb = nl_cb_alloc(NL_CB_DEFAULT);
	msg = nlmsg_alloc_simple(type, NLM_F_REQUEST);
	if (!cb || !msg) {
		rc = -ENOMEM;
		goto out;
	}
	if (nlmsg_append(msg, &q->req, sizeof(q->req), NLMSG_ALIGNTO) < 0) {
		rc = -ENOMEM;
		goto out;
	}
	nl_cb_set(cb, NL_CB_MSG_IN, NL_CB_CUSTOM, on_msg_in, q);
	nl_cb_set(cb, NL_CB_VALID, NL_CB_CUSTOM, on_valid, q);
	nl_cb_set(cb, NL_CB_ACK, NL_CB_CUSTOM, on_ack, q);
	nl_cb_err(cb, NL_CB_CUSTOM, on_error, q);
	rc = nl_send_auto(sk, msg); /* NLM_F_ACK: libnl's auto-ack is on */
	if (rc < 0) {
		rc = nl_to_errno(rc);
		goto out;
	}
	while (!q->done) {
		rc = nl_recvmsgs_report(sk, cb); /* > 0: messages handled */
		if (q->done)
			break;
		if (rc <= 0) { /* 0: the timeout, nothing came */
			rc = rc < 0 ? nl_to_errno(rc) : -ETIMEDOUT;
			goto out;
		}
	}
	rc = 0;
out:
	nlmsg_free(msg);
	nl_cb_put(cb);
	nl_socket_free(sk);
	return rc;
}

static int lookup(const struct sockaddr *local, const struct sockaddr *peer, struct request *q)
{
	int rc;

	memset(q, 0, sizeof(*q));
	rc = build_request(local, peer, &q->req);
	if (rc < 0)
		return rc;
	rc = transact(SOCK_DIAG_BY_FAMILY, q);
	if (rc < 0)
		return rc;
	if (q->err == -ENOENT)
		return 0; /* view->found stays false */
	return q->err;
}

int kg_sockdiag_query(const struct sockaddr *local, const struct sockaddr *peer,
		      struct kg_sock_view *view)
{
	struct request q;
	int rc = lookup(local, peer, &q);

	memset(view, 0, sizeof(*view));
	if (rc == 0)
		*view = q.view;
	return rc;
}

int kg_sockdiag_destroy(const struct sockaddr *local, const struct sockaddr *peer)
{
	struct request q;
	int rc = lookup(local, peer, &q);

	if (rc < 0)
		return rc;
	if (!q.view.found)
		return -ENOENT;
	/* By cookie: if the connection went and the 4-tuple was reused since,
	 * the kernel answers ESTALE instead of cutting a stranger. */
	memcpy(q.req.id.idiag_cookie, q.cookie, sizeof(q.cookie));
	q.req.idiag_ext = 0;
	q.done = false;
	q.err = 0;
	rc = transact(SOCK_DESTROY, &q);
	return rc < 0 ? rc : q.err;
}

/* ---- names ---- */

const char *kg_sockdiag_version_name(uint16_t version)
{
	switch (version) {
	case 0: return "-";
	case TLS_1_2_VERSION: return "TLS 1.2";
	case TLS_1_3_VERSION: return "TLS 1.3";
	default: return "?";
	}
}

const char *kg_sockdiag_cipher_name(uint16_t cipher)
{
	switch (cipher) {
	case 0: return "-";
	case TLS_CIPHER_AES_GCM_128: return "AES-128-GCM";
	case TLS_CIPHER_AES_GCM_256: return "AES-256-GCM";
	case TLS_CIPHER_AES_CCM_128: return "AES-128-CCM";
	case TLS_CIPHER_CHACHA20_POLY1305: return "CHACHA20-POLY1305";
	case TLS_CIPHER_SM4_GCM: return "SM4-GCM";
	case TLS_CIPHER_SM4_CCM: return "SM4-CCM";
	default: return "?";
	}
}

const char *kg_sockdiag_conf_name(uint16_t conf)
{
	switch (conf) {
	case 0: return "-";
	case TLS_CONF_BASE: return "base";
	case TLS_CONF_SW: return "sw";
	case TLS_CONF_HW: return "hw";
	case TLS_CONF_HW_RECORD: return "hw-record";
	default: return "?";
	}
}
