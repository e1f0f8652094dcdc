/* The client handshake towards a backend (backend_tls) on memory BIOs, like
 * handshake.c on the other side: the ring moves the bytes, OpenSSL computes.
 * The backend's chain, name and CRL are checked by OpenSSL; a refusal is one
 * log line, result=upstream_<reason>, and a clean close towards the client.
 * Sessions are kept per worker and backend, so no lock is ever taken. */
#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "log.h"

/* One backend's sessions in one worker: newest last. TLS 1.3 tickets are
 * taken out when used (RFC 8446 C.4: one use each); a TLS 1.2 session stays
 * and serves every connection until a newer one replaces it. */
struct kg_up_entry {
	uint64_t gen;        /* sessions never cross generations (trust may change) */
	SSL_SESSION **sess;
	unsigned n, cap;     /* cap: the backend's session_cache */
	bool no_tickets;     /* a TLS 1.3 backend that sent none: do not wait for one */
};

/* Indexed by the generation's cache_slot, unique per backend (kg_backend_rt):
 * a session is never offered to another backend. */
struct kg_up_cache {
	struct kg_up_entry *e;
	unsigned n;
};

static int up_ex_index = -1;
static pthread_once_t up_ex_once = PTHREAD_ONCE_INIT;

static void make_up_ex_index(void)
{
	up_ex_index = SSL_get_ex_new_index(0, "kg_conn upstream", NULL, NULL, NULL);
}

/* ---- session cache ---- */

static void entry_clear(struct kg_up_entry *e)
{
	for (unsigned i = 0; i < e->n; i++)
		SSL_SESSION_free(e->sess[i]);
	free(e->sess);
	memset(e, 0, sizeof(*e));
}

static bool cache_grow(struct kg_worker *w, unsigned n)
{
	struct kg_up_cache *uc = w->up_cache;
	struct kg_up_entry *e;

	if (!uc && !(uc = w->up_cache = calloc(1, sizeof(*uc))))
		return false;
	if (n <= uc->n)
		return true;
	e = realloc(uc->e, n * sizeof(*e));
	if (!e)
		return false;
	memset(e + uc->n, 0, (n - uc->n) * sizeof(*e));
	uc->e = e;
	uc->n = n;
	return true;
}

/* This connection's backend's entry; with create, emptied when it held
 * another generation's sessions. NULL: session_cache: 0, or no memory. */
static struct kg_up_entry *cache_entry(struct kg_conn *c, bool create)
{
	unsigned slot = c->route->site->backends[c->up_backend].cache_slot;
	unsigned cap = c->up->spec->session_cache;
	struct kg_up_cache *uc = c->w->up_cache;
	struct kg_up_entry *e;

	if (cap == 0)
		return NULL;
	if (!create)
		return uc && slot < uc->n && uc->e[slot].gen == c->gen->number ? &uc->e[slot] : NULL;
	if (!cache_grow(c->w, c->gen->nup_slots))
		return NULL;
	e = &c->w->up_cache->e[slot];
	if (e->gen != c->gen->number || e->cap != cap) {
		entry_clear(e);
		e->sess = calloc(cap, sizeof(*e->sess));
		if (!e->sess)
			return NULL;
		e->gen = c->gen->number;
		e->cap = cap;
	}
	return e;
}

static void entry_push(struct kg_up_entry *e, SSL_SESSION *sess)
{
	if (e->n == e->cap) { /* full: the oldest goes */
		SSL_SESSION_free(e->sess[0]);
		memmove(e->sess, e->sess + 1, (e->n - 1) * sizeof(*e->sess));
		e->n--;
	}
	SSL_SESSION_up_ref(sess);
	e->sess[e->n++] = sess;
}

/* The newest session for this backend, referenced for the caller. */
static SSL_SESSION *cache_take(struct kg_conn *c)
{
	struct kg_up_entry *e = cache_entry(c, false);
	SSL_SESSION *sess;

	if (!e || e->n == 0)
		return NULL;
	sess = e->sess[e->n - 1];
	c->up_kept = sess; /* used (1.3) or still cached (1.2): never kept again */
	if (SSL_SESSION_get_protocol_version(sess) == TLS1_3_VERSION) {
		e->n--; /* this connection brings its own successor */
		return sess;
	}
	SSL_SESSION_up_ref(sess);
	return sess;
}

bool kg_up_sends_no_tickets(struct kg_conn *c)
{
	struct kg_up_entry *e = cache_entry(c, false);

	/* session_cache: 0 keeps no ticket: nothing to wait for either. */
	return c->up->spec->session_cache == 0 || (e && e->no_tickets);
}

void kg_up_note_no_tickets(struct kg_conn *c)
{
	struct kg_up_entry *e = cache_entry(c, true);

	if (e)
		e->no_tickets = true;
}

/* Called after every read from the backend: a TLS 1.3 ticket arrives after
 * the handshake, and OpenSSL then swaps the connection's session object. */
void kg_up_keep_session(struct kg_conn *c)
{
	SSL_SESSION *sess = c->ussl ? SSL_get0_session(c->ussl) : NULL;
	struct kg_up_entry *e;

	if (!sess || sess == c->up_kept || !SSL_SESSION_is_resumable(sess))
		return;
	e = cache_entry(c, true);
	if (!e)
		return;
	entry_push(e, sess);
	e->no_tickets = false;
	c->up_kept = sess;
}

void kg_up_cache_free(struct kg_worker *w)
{
	if (!w->up_cache)
		return;
	for (unsigned i = 0; i < w->up_cache->n; i++)
		entry_clear(&w->up_cache->e[i]);
	free(w->up_cache->e);
	free(w->up_cache);
	w->up_cache = NULL;
}

/* ---- verification ---- */

static int up_verify_cb(int preverify_ok, X509_STORE_CTX *store)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct kg_conn *c = ssl ? SSL_get_ex_data(ssl, up_ex_index) : NULL;

	if (c && !preverify_ok && !c->up_verify_err) {
		c->up_verify_err = X509_STORE_CTX_get_error(store);
		kg_peer_setf(c, KG_PEER_DETAIL, "backend certificate: %s (depth %d)",
			     X509_verify_cert_error_string(c->up_verify_err),
			     X509_STORE_CTX_get_error_depth(store));
	}
	return preverify_ok;
}

/* Sees the decrypted handshake: whether the backend asked for our
 * certificate, whether it sent a ticket. */
static void up_msg_cb(int write_p, int version, int content_type, const void *buf, size_t len,
		      SSL *ssl, void *arg)
{
	struct kg_conn *c = arg;

	kg_ktls_count_record(ssl, write_p, content_type); /* a no-op without c->ukt */
	if (write_p || content_type != SSL3_RT_HANDSHAKE || len < 1)
		return;
	if (((const uint8_t *)buf)[0] == SSL3_MT_CERTIFICATE_REQUEST)
		c->up_cert_asked = true;
	else if (((const uint8_t *)buf)[0] == SSL3_MT_NEWSESSION_TICKET)
		c->up_ticket_seen = true;
}

/* The result= strings are static: the access log keeps the pointer. An
 * X509 error the upstream table lacks is a bad certificate. */
static const char *upstream_reason(const char *base)
{
	enum kg_up_refusal r = kg_up_refusal_of(base);

	return r == KG_UP_REFUSED_handshake_failed ? kg_up_results[KG_UP_REFUSED_bad_certificate]
						    : kg_up_results[r];
}

static bool have_client_cert(const struct kg_conn *c)
{
	return c->up->id.leaf != NULL;
}

static const char *reason_of_alert(struct kg_conn *c, unsigned long e)
{
	const char *r = ERR_reason_error_string(e);

	if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
	    ERR_GET_REASON(e) == SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED) {
		kg_peer_set(c, KG_PEER_DETAIL, have_client_cert(c)
			    ? "backend requires a client certificate and refused ours"
			    : "backend requires a client certificate; backend_tls has none "
			      "(set client_cert and client_key, or pkcs12)");
		return "upstream_no_client_cert";
	}
	if (c->up_cert_asked && !have_client_cert(c)) {
		kg_peer_setf(c, KG_PEER_DETAIL,
			     "backend asked for a client certificate; backend_tls has none (%s)",
			     r ? r : "handshake failed");
		return "upstream_no_client_cert";
	}
	if (c->up_cert_asked && r && strstr(r, "alert")) {
		kg_peer_setf(c, KG_PEER_DETAIL, "backend refused our client certificate: %s", r);
		return "upstream_client_cert_rejected";
	}
	kg_peer_setf(c, KG_PEER_DETAIL, "TLS with the backend failed: %s", r ? r : "unknown error");
	return "upstream_handshake_failed";
}

static const char *classify(struct kg_conn *c)
{
	unsigned long e = ERR_peek_error();

	switch (c->up_verify_err) {
	case 0:
		break;
	case X509_V_ERR_HOSTNAME_MISMATCH:
	case X509_V_ERR_IP_ADDRESS_MISMATCH:
		kg_peer_setf(c, KG_PEER_DETAIL, "backend certificate does not name %s",
			     c->up->spec->verify_name);
		return "upstream_name_mismatch";
	default:
		return upstream_reason(kg_hs_verify_reason(c->up_verify_err));
	}
	return reason_of_alert(c, e);
}

const char *kg_up_late_reason(struct kg_conn *c)
{
	const char *r = classify(c);

	ERR_clear_error();
	return r;
}

/* ---- the handshake ---- */

/* One line and one count per failed backend attempt. */
static void log_refusal(struct kg_conn *c, const char *reason)
{
	struct kg_field f[] = {
		KG_S("backend", kg_peer_get(c, KG_PEER_BACKEND)),
		KG_S("reason", reason),
		KG_S("detail", kg_peer_get(c, KG_PEER_DETAIL)),
		KG_I("conn", c->id),
		KG_I("worker", c->w->id),
	};

	kg_log_event(KG_LOG_WARN, "upstream_refused", f, KG_NFIELDS(f));
	kg_up_count_refusal(c->w, reason);
}

void kg_up_count_refusal(struct kg_worker *w, const char *reason)
{
	w->stats.upstream_refused++;
	w->stats.upstream_refused_by[kg_up_refusal_of(reason)]++;
}

void kg_up_refuse_ktls(struct kg_conn *c, const char *reason)
{
	log_refusal(c, reason);
	c->result = reason;
}

/* Forgets the failed attempt's TLS state: the next backend starts afresh. */
void kg_up_reset(struct kg_conn *c)
{
	kg_ktls_up_free(c);
	SSL_free(c->ussl); /* frees the BIOs too */
	c->ussl = NULL;
	c->urbio = c->uwbio = NULL;
	c->up = NULL;
	c->up_kept = NULL;
	c->up_verify_err = 0;
	c->up_cert_asked = c->up_ticket_seen = false;
	c->bout.off = c->bout.len = 0;
}

void kg_up_refuse(struct kg_conn *c, const char *reason)
{
	log_refusal(c, reason);
	/* Nothing of the client's reached this backend yet: try the next. */
	if (c->state == KG_CS_UPSTREAM && kg_backend_retry(c))
		return;
	c->result = reason;
	/* The client did nothing wrong: close_notify, then FIN. */
	if (c->ssl) {
		ERR_clear_error();
		SSL_shutdown(c->ssl);
	}
	kg_conn_linger(c);
}

void kg_up_flush(struct kg_conn *c)
{
	int n;

	if (c->be_send_busy || c->bout.len || BIO_ctrl_pending(c->uwbio) == 0)
		return;
	if (!kg_buf_ensure(&c->bout)) {
		kg_conn_close(c, "out_of_memory");
		return;
	}
	n = BIO_read(c->uwbio, c->bout.data, KG_BUF_SIZE);
	if (n <= 0)
		return;
	c->bout.off = 0;
	c->bout.len = (uint32_t)n;
	kg_conn_send(c, c->bfd, KG_OP_BE_SEND, &c->bout);
}

static void up_done(struct kg_conn *c)
{
	c->peer.up_version = SSL_get_version(c->ussl);
	c->peer.up_resumed = SSL_session_reused(c->ussl);
	c->w->stats.upstream_handshakes++;
	if (c->peer.up_resumed)
		c->w->stats.upstream_resumed++;
	kg_up_keep_session(c); /* TLS 1.2: the session is complete now */
	if (c->ukt)
		kg_ktls_handshake_done(c->ussl);
	kg_conn_touch(c, c->gen->cfg.idle_timeout_ms);
	kg_backend_ready(c);
}

static void up_step(struct kg_conn *c)
{
	int r, e;

	ERR_clear_error();
	r = SSL_do_handshake(c->ussl);
	kg_up_flush(c);
	if (c->state == KG_CS_CLOSING)
		return;
	if (r == 1) {
		up_done(c);
		return;
	}
	e = SSL_get_error(c->ussl, r);
	if (e == SSL_ERROR_WANT_READ) {
		kg_conn_recv(c, c->bfd, KG_OP_BE_RECV, &c->bin);
		return;
	}
	kg_up_refuse(c, kg_up_late_reason(c));
}

static int set_verify_name(SSL *ssl, const char *name)
{
	unsigned char ip[16];

	/* An IP address is checked against iPAddress SANs and sent as no SNI. */
	if (inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1)
		return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) == 1 ? 0 : -1;
	if (SSL_set_tlsext_host_name(ssl, name) != 1 || SSL_set1_host(ssl, name) != 1)
		return -1;
	return 0;
}

void kg_up_start(struct kg_conn *c)
{
	SSL_SESSION *sess;

	pthread_once(&up_ex_once, make_up_ex_index);
	c->ussl = SSL_new(c->up->ctx);
	c->urbio = BIO_new(BIO_s_mem());
	c->uwbio = BIO_new(BIO_s_mem());
	if (!c->ussl || !c->urbio || !c->uwbio) {
		BIO_free(c->urbio);
		BIO_free(c->uwbio);
		c->urbio = c->uwbio = NULL;
		kg_conn_close(c, "out_of_memory");
		return;
	}
	SSL_set_bio(c->ussl, c->urbio, c->uwbio);
	SSL_set_ex_data(c->ussl, up_ex_index, c);
	SSL_set_connect_state(c->ussl);
	SSL_set_verify(c->ussl, SSL_VERIFY_PEER, up_verify_cb);
	/* Key capture for a kTLS handoff of the backend socket, when it may happen. */
	if (c->w->rt->ktls && c->lrt->spec->ktls != KG_KTLS_OFF && kg_ktls_up_new(c) < 0) {
		kg_conn_close(c, "out_of_memory");
		return;
	}
	SSL_set_msg_callback(c->ussl, up_msg_cb); /* after kg_ktls_up_new's own */
	SSL_set_msg_callback_arg(c->ussl, c);
	if (set_verify_name(c->ussl, c->up->spec->verify_name) < 0) {
		ERR_clear_error();
		kg_conn_close(c, "out_of_memory");
		return;
	}
	if ((sess = cache_take(c))) {
		SSL_set_session(c->ussl, sess);
		SSL_SESSION_free(sess);
	}
	c->state = KG_CS_UPSTREAM;
	kg_conn_touch(c, c->gen->cfg.handshake_timeout_ms);
	up_step(c);
}

static void backend_gone(struct kg_conn *c, int res)
{
	if (c->up_cert_asked && !have_client_cert(c)) {
		kg_peer_set(c, KG_PEER_DETAIL, "backend asked for a client certificate and closed; "
			    "backend_tls has none (set client_cert and client_key, or pkcs12)");
		kg_up_refuse(c, "upstream_no_client_cert");
		return;
	}
	kg_peer_setf(c, KG_PEER_DETAIL, "backend %s during the TLS handshake",
		     res == 0 ? "closed the connection" : strerror(-res));
	kg_up_refuse(c, "upstream_handshake_failed");
}

void kg_up_on_cqe(struct kg_conn *c, enum kg_op op, int res)
{
	switch (op) {
	case KG_OP_CLI_SEND: /* the end of the client's handshake flight */
		kg_conn_send_progress(c, op, res);
		return;
	case KG_OP_BE_SEND:
		if (kg_conn_send_progress(c, op, res))
			kg_up_flush(c);
		return;
	case KG_OP_BE_RECV:
		c->be_recv_busy = false;
		if (res <= 0) {
			backend_gone(c, res);
			return;
		}
		kg_ktls_up_track_rx(c, c->bin.data, (size_t)res);
		BIO_write(c->urbio, c->bin.data, res);
		up_step(c);
		return;
	default:
		return;
	}
}
