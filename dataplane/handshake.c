/* The server handshake on memory BIOs: the ring moves the bytes, OpenSSL only
 * computes. Refusals keep the exact alert OpenSSL chose and log one reason. */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alert.h"
#include "certtext.h"
#include "conn.h"
#include "log.h"
#include "policy.h"
#include "session_cache.h"
#include "ticket_keys.h"
#include "verify_cache.h"

static int conn_ex_index = -1;
static pthread_once_t ex_index_once = PTHREAD_ONCE_INIT;

static void make_ex_index(void)
{
	conn_ex_index = SSL_get_ex_new_index(0, "kg_conn", NULL, NULL, NULL);
}

static void record_peer_cert(struct kg_conn *c, X509 *x)
{
	char buf[256];

	kg_name_text(X509_get_subject_name(x), buf, sizeof(buf));
	kg_peer_set(c, KG_PEER_SUBJECT, buf);
	kg_name_text(X509_get_issuer_name(x), buf, sizeof(buf));
	kg_peer_set(c, KG_PEER_ISSUER, buf);
	kg_serial_text(X509_get0_serialNumber(x), buf, sizeof(buf));
	kg_peer_set(c, KG_PEER_SERIAL, buf);
	kg_cert_fingerprint_hex(x, buf, sizeof(buf));
	kg_peer_set(c, KG_PEER_FINGERPRINT, buf);
	if (kg_cert_spiffe_id(x, buf, sizeof(buf)))
		kg_peer_set(c, KG_PEER_SPIFFE, buf);
}

static struct kg_conn *conn_of_store(X509_STORE_CTX *store)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());

	return ssl ? SSL_get_ex_data(ssl, conn_ex_index) : NULL;
}

/* Keeps OpenSSL's verdict (and so its alert); only remembers what to log. */
static int verify_cb(int preverify_ok, X509_STORE_CTX *store)
{
	struct kg_conn *c = conn_of_store(store);
	X509 *leaf = X509_STORE_CTX_get0_cert(store);
	int e = X509_STORE_CTX_get_error(store);

	if (c && leaf && !kg_peer_get(c, KG_PEER_SUBJECT)[0])
		record_peer_cert(c, leaf);
	/* crl_missing: allow - an intermediate without a CRL is accepted. */
	if (c && !preverify_ok && e == X509_V_ERR_UNABLE_TO_GET_CRL &&
	    c->route->site->auth->crl_missing_allow)
		return 1;
	if (c && !preverify_ok && !c->verify_err) {
		c->verify_err = X509_STORE_CTX_get_error(store);
		kg_peer_setf(c, KG_PEER_DETAIL, "%s (depth %d)",
			 X509_verify_cert_error_string(c->verify_err),
			 X509_STORE_CTX_get_error_depth(store));
	}
	return preverify_ok;
}

/* The worker's cache for site, made on the site's first handshake. A
 * connection still on an older generation gets none: its cache is gone. */
static struct kg_vcache_slot *vcache_of(struct kg_conn *c, const struct kg_site *site)
{
	struct kg_worker *w = c->w;
	struct kg_vcache_slot *s;

	if (c->gen != w->gen)
		return NULL;
	for (size_t i = 0; i < w->nvcaches; i++)
		if (w->vcaches[i].site == site && w->vcaches[i].gen == w->gen->number)
			return &w->vcaches[i];
	s = realloc(w->vcaches, (w->nvcaches + 1) * sizeof(*s));
	if (!s)
		return NULL;
	w->vcaches = s;
	s = &s[w->nvcaches];
	s->cache = kg_vcache_new(KG_VCACHE_ENTRIES);
	if (!s->cache)
		return NULL;
	s->site = site;
	s->gen = w->gen->number;
	s->crl_limit = kg_vcache_crls_limit(site->trust.crls);
	w->nvcaches++;
	return s;
}

void kg_hs_vcache_reset(struct kg_worker *w)
{
	for (size_t i = 0; i < w->nvcaches; i++)
		kg_vcache_free(w->vcaches[i].cache);
	free(w->vcaches);
	w->vcaches = NULL;
	w->nvcaches = 0;
}

/* A chain that just verified stays good until its first certificate (or the
 * site's first CRL) expires. */
static void vcache_remember(struct kg_vcache_slot *vc, const uint8_t *key, X509_STORE_CTX *store)
{
	int64_t nb, na;

	if (!kg_vcache_chain_window(X509_STORE_CTX_get0_chain(store), &nb, &na))
		return;
	if (vc->crl_limit < na)
		na = vc->crl_limit;
	if (na > (int64_t)time(NULL))
		kg_vcache_insert(vc->cache, key, nb, na);
}

/* The chain (from the cache, or verified in full) first, then who may pass:
 * a refused client gets access_denied inside the handshake, never a finished
 * handshake and a close. A cache hit only skips OpenSSL's chain building and
 * CRL lookups; the rules run every time. */
static int verify_chain_cb(X509_STORE_CTX *store, void *arg)
{
	const struct kg_route *route = arg;
	struct kg_conn *c = conn_of_store(store);
	X509 *leaf = X509_STORE_CTX_get0_cert(store);
	struct kg_vcache_slot *vc = c ? vcache_of(c, route->site) : NULL;
	uint8_t key[KG_VCACHE_KEY_LEN];
	bool keyed = vc && kg_vcache_chain_key(leaf, X509_STORE_CTX_get0_untrusted(store), key) == 0;
	const char *rule = NULL;
	int ok;

	if (keyed && kg_vcache_lookup(vc->cache, key, (int64_t)time(NULL))) {
		c->w->stats.verify_cache_hits++;
		if (!kg_peer_get(c, KG_PEER_SUBJECT)[0])
			record_peer_cert(c, leaf);
		ok = 1;
	} else {
		ok = X509_verify_cert(store);
		/* Failures are never stored: they keep OpenSSL's alert and reason. */
		if (ok > 0 && keyed)
			vcache_remember(vc, key, store);
	}
	if (ok <= 0 || !c)
		return ok;
	if (kg_policy_check(route->site->policy, X509_STORE_CTX_get0_cert(store), &rule))
		return 1;
	c->peer.rule = rule;
	c->verify_err = X509_V_ERR_APPLICATION_VERIFICATION;
	kg_peer_setf(c, KG_PEER_DETAIL, "refused by rule %s", rule);
	X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
	return 0;
}

/* The server_name extension's first host_name (RFC 6066 §3), or "". */
static void parse_sni(const unsigned char *p, size_t len, char *out, size_t cap)
{
	size_t list, n;

	out[0] = '\0';
	if (len < 5)
		return;
	list = (size_t)p[0] << 8 | p[1];
	if (list + 2 != len || p[2] != TLSEXT_NAMETYPE_host_name)
		return;
	n = (size_t)p[3] << 8 | p[4];
	if (n == 0 || n + 5 > len || n >= cap || memchr(p + 5, '\0', n))
		return;
	memcpy(out, p + 5, n);
	out[n] = '\0';
}

static void use_route(struct kg_conn *c, const struct kg_route *r)
{
	SSL_set_SSL_CTX(c->ssl, r->ctx);
	/* SSL_new copied these from the first context; the site decides them. */
	SSL_set_verify(c->ssl, SSL_CTX_get_verify_mode(r->ctx), verify_cb);
	SSL_set_verify_depth(c->ssl, SSL_CTX_get_verify_depth(r->ctx));
	SSL_set_purpose(c->ssl, r->site->auth->require_client_eku ? X509_PURPOSE_SSL_CLIENT
								  : X509_PURPOSE_ANY);
	c->route = r;
}

/* Runs before anything else of the handshake: pick the site and the
 * certificates for the name the client asks for. */
static int client_hello_cb(SSL *ssl, int *alert, void *arg)
{
	struct kg_conn *c = SSL_get_ex_data(ssl, conn_ex_index);
	const unsigned char *ext;
	size_t len;

	if (!c)
		return SSL_CLIENT_HELLO_SUCCESS;
	char sni[KG_SNI_MAX] = "";

	if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &ext, &len))
		parse_sni(ext, len, sni, sizeof(sni));
	kg_peer_set(c, KG_PEER_SNI, sni);
	const struct kg_route *r = kg_listener_route(c->lrt, sni[0] ? sni : NULL);
	if (r != c->route)
		use_route(c, r);
	return SSL_CLIENT_HELLO_SUCCESS;
}

/* Where c's session was made. OpenSSL keeps no SNI in TLS 1.3 server
 * sessions, and looks cached ones up in the first context of the
 * connection, not the site's: the tag is what ties a session to its site. */
static void tag_of(const struct kg_conn *c, struct kg_sess_tag *tag)
{
	tag->listener = c->lrt->index;
	memcpy(tag->trust, c->route->site->trust.digest, sizeof(tag->trust));
	snprintf(tag->sni, sizeof(tag->sni), "%s", kg_peer_get(c, KG_PEER_SNI));
}

/* A session (from a ticket or the cache) resumes only where a full
 * handshake would pass today: same listener and site, the site still has
 * the same client CAs and CRLs (a CRL update re-verifies every client
 * once: the session keeps no intermediates to check), the session has not
 * outlived session_timeout, and the certificate it carries is still within
 * its validity, passes the site's rules and is not revoked. */
static bool may_resume(const struct kg_conn *c, SSL_SESSION *sess, const struct kg_sess_tag *tag)
{
	const struct kg_site *site = c->route->site;
	X509 *peer = SSL_SESSION_get0_peer(sess);
	const char *rule;

	if (tag->listener != c->lrt->index ||
	    kg_listener_route(c->lrt, tag->sni[0] ? tag->sni : NULL) != c->route ||
	    memcmp(tag->trust, site->trust.digest, sizeof(tag->trust)) != 0)
		return false;
	if ((int64_t)SSL_SESSION_get_time(sess) + SSL_SESSION_get_timeout(sess) <= (int64_t)time(NULL))
		return false;
	if (!peer)
		return site->auth->client_auth != KG_AUTH_REQUIRED;
	if (X509_cmp_current_time(X509_get0_notAfter(peer)) <= 0 ||
	    X509_cmp_current_time(X509_get0_notBefore(peer)) >= 0)
		return false; /* expired since (a full handshake says so) */
	return kg_policy_check(site->policy, peer, &rule) && !kg_tls_trust_revokes(&site->trust, peer);
}

/* session_tickets: the tag travels inside the ticket, as its appdata. */
static int ticket_gen_cb(SSL *ssl, void *arg)
{
	struct kg_conn *c = SSL_get_ex_data(ssl, conn_ex_index);
	SSL_SESSION *sess = SSL_get_session(ssl);
	unsigned char buf[sizeof(struct kg_sess_tag)];
	struct kg_sess_tag tag;
	size_t n;

	if (!c || !sess)
		return 1;
	tag_of(c, &tag);
	n = kg_sess_tag_encode(&tag, buf, sizeof(buf));
	return n && SSL_SESSION_set1_ticket_appdata(sess, buf, n);
}

static SSL_TICKET_RETURN ticket_cb(SSL *ssl, SSL_SESSION *sess, const unsigned char *name,
				   size_t namelen, SSL_TICKET_STATUS status, void *arg)
{
	struct kg_conn *c = SSL_get_ex_data(ssl, conn_ex_index);
	struct kg_sess_tag tag;
	void *data = NULL;
	size_t len = 0;

	if (status != SSL_TICKET_SUCCESS && status != SSL_TICKET_SUCCESS_RENEW)
		return SSL_TICKET_RETURN_IGNORE_RENEW;
	if (!c || !SSL_SESSION_get0_ticket_appdata(sess, &data, &len) ||
	    !kg_sess_tag_decode(data, len, &tag) || !may_resume(c, sess, &tag))
		return SSL_TICKET_RETURN_IGNORE_RENEW;
	/* TLS 1.3 clients use a ticket once (RFC 8446 §C.4; OpenSSL's own
	 * client does): without a fresh one, every other handshake is full. */
	if (status == SSL_TICKET_SUCCESS_RENEW || SSL_version(ssl) == TLS1_3_VERSION)
		return SSL_TICKET_RETURN_USE_RENEW;
	return SSL_TICKET_RETURN_USE;
}

/* The client's intermediates, which OpenSSL keeps in the session for
 * SSL_get_peer_cert_chain: verification is over, nothing of ours reads
 * them again and a resumption checks only the leaf. Parsed, each is ~5 KiB
 * that a cached session would otherwise hold for session_timeout. */
static void drop_peer_chain(SSL *ssl, SSL_SESSION *sess)
{
	STACK_OF(X509) *chain = SSL_get_session(ssl) == sess ? SSL_get_peer_cert_chain(ssl) : NULL;
	X509 *x;

	while (chain && (x = sk_X509_pop(chain)) != NULL)
		X509_free(x);
}

/* The session cache (session_cache.h): OpenSSL hands over every new server
 * session (TLS 1.3: the one its stateful ticket names by id). */
static int sess_new_cb(SSL *ssl, SSL_SESSION *sess)
{
	struct kg_conn *c = SSL_get_ex_data(ssl, conn_ex_index);
	struct kg_sess_tag tag;
	unsigned evicted;
	bool kept;

	if (!c || !c->route || !c->gen->cfg.session_cache)
		return 0;
	drop_peer_chain(ssl, sess);
	tag_of(c, &tag);
	kept = kg_scache_put(sess, &tag, c->gen->cfg.session_cache, &evicted);
	c->w->stats.session_cache_evictions += evicted;
	return kept;
}

/* Runs after the ClientHello callback picked the site (TLS 1.2 session id
 * or TLS 1.3 PSK identity): a session that may not resume here is simply
 * not found, and the client gets a full handshake. */
static SSL_SESSION *sess_get_cb(SSL *ssl, const unsigned char *id, int len, int *copy)
{
	struct kg_conn *c = SSL_get_ex_data(ssl, conn_ex_index);
	struct kg_sess_tag tag;
	SSL_SESSION *sess;

	*copy = 0; /* the reference kg_scache_get took is OpenSSL's */
	if (!c || len <= 0)
		return NULL;
	sess = kg_scache_get(id, (unsigned)len, &tag);
	if (!sess) {
		c->w->stats.session_cache_misses++;
		return NULL;
	}
	if (!may_resume(c, sess, &tag)) {
		c->w->stats.session_cache_refused++;
		SSL_SESSION_free(sess);
		return NULL;
	}
	c->w->stats.session_cache_hits++;
	return sess;
}

/* OpenSSL drops a session after a fatal alert on its connection. */
static void sess_remove_cb(SSL_CTX *ctx, SSL_SESSION *sess)
{
	kg_scache_remove(sess);
}

/* Tickets are sealed with the process-wide keys (ticket_keys.c), rotated on
 * the interval of the connection's generation. */
static int ticket_key_cb(SSL *ssl, unsigned char name[16], unsigned char *iv,
			 EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
	struct kg_conn *c = SSL_get_ex_data(ssl, conn_ex_index);

	return kg_ticket_key_cb(ssl, name, iv, cctx, hctx, enc,
				c ? c->gen->cfg.ticket_key_rotation_ms : 0);
}

/* session_tickets: true - stateless tickets (they survive restarts);
 * otherwise the process-wide cache, whose TLS 1.3 tickets carry only a
 * session id; session_cache: 0 - no resumption at all. Every route context
 * of a generation gets the same mode: OpenSSL takes the options and the
 * cache from the connection's first context. */
static void prepare_resumption(SSL_CTX *ctx, const struct kg_config *cfg)
{
	SSL_CTX_set_timeout(ctx, (long)cfg->session_timeout_s);
	kg_scache_trim(cfg->session_tickets ? 0 : cfg->session_cache);
	if (cfg->session_tickets) {
		SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_cb);
		SSL_CTX_set_session_ticket_cb(ctx, ticket_gen_cb, ticket_cb, NULL);
		return;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	if (!cfg->session_cache) {
		SSL_CTX_set_num_tickets(ctx, 0);
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
		return;
	}
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL);
	SSL_CTX_sess_set_new_cb(ctx, sess_new_cb);
	SSL_CTX_sess_set_get_cb(ctx, sess_get_cb);
	SSL_CTX_sess_set_remove_cb(ctx, sess_remove_cb);
}

void kg_hs_prepare_ctx(SSL_CTX *ctx, struct kg_route *route)
{
	/* backend_tls (route NULL): a client context, only the key capture for a
	 * kTLS handoff. Ticket keys are a server's: a client never seals one. */
	if (!route) {
		kg_ktls_prepare_ctx(ctx);
		return;
	}
	SSL_CTX_set_client_hello_cb(ctx, client_hello_cb, NULL);
	SSL_CTX_set_cert_verify_callback(ctx, verify_chain_cb, route);
	prepare_resumption(ctx, &route->listener->gen->cfg);
	kg_ktls_prepare_ctx(ctx);
}

int kg_hs_start(struct kg_conn *c)
{
	/* listen_tls: false: nothing to verify, the backend side does the TLS. */
	if (c->lrt->spec->plain) {
		c->result = "ok";
		c->state = KG_CS_CONNECTING;
		kg_conn_touch(c, c->gen->cfg.idle_timeout_ms);
		kg_backend_connect(c);
		return 0;
	}
	pthread_once(&ex_index_once, make_ex_index);
	c->ssl = SSL_new(c->route->ctx);
	c->rbio = BIO_new(BIO_s_mem());
	c->wbio = BIO_new(BIO_s_mem());
	if (!c->ssl || !c->rbio || !c->wbio) {
		BIO_free(c->rbio);
		BIO_free(c->wbio);
		c->rbio = c->wbio = NULL;
		return -1;
	}
	SSL_set_bio(c->ssl, c->rbio, c->wbio);
	SSL_set_ex_data(c->ssl, conn_ex_index, c);
	use_route(c, c->route);
	SSL_set_accept_state(c->ssl);
	/* Secrets are captured for every connection: the kTLS handoff needs them,
	 * and so does rewriting a refusal's alert under TLS 1.3. */
	if (kg_ktls_conn_new(c) < 0)
		return -1;
	c->state = KG_CS_HANDSHAKE;
	kg_conn_touch(c, c->gen->cfg.handshake_timeout_ms);
	kg_conn_recv(c, c->cfd, KG_OP_CLI_RECV, &c->cin);
	return 0;
}

const char *kg_hs_verify_reason(int e)
{
	switch (e) {
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
		return "unknown_ca";
	case X509_V_ERR_CERT_HAS_EXPIRED:
		return "certificate_expired";
	case X509_V_ERR_CERT_NOT_YET_VALID:
		return "certificate_not_yet_valid";
	case X509_V_ERR_CERT_REVOKED:
		return "certificate_revoked";
	case X509_V_ERR_CERT_SIGNATURE_FAILURE:
	case X509_V_ERR_CRL_SIGNATURE_FAILURE:
		return "bad_signature";
	case X509_V_ERR_INVALID_PURPOSE:
		return "bad_purpose";
	case X509_V_ERR_APPLICATION_VERIFICATION:
		return "access_denied";
	case X509_V_ERR_CERT_CHAIN_TOO_LONG:
		return "chain_too_long";
	case X509_V_ERR_UNABLE_TO_GET_CRL:
		return "crl_missing";
	case X509_V_ERR_CRL_HAS_EXPIRED:
	case X509_V_ERR_CRL_NOT_YET_VALID:
		return "crl_stale";
	default:
		return "bad_certificate";
	}
}

static const char *reason_from_ssl_error(unsigned long e)
{
	if (ERR_GET_LIB(e) != ERR_LIB_SSL)
		return "handshake_failed";
	switch (ERR_GET_REASON(e)) {
	case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
		return "no_certificate";
	case SSL_R_UNSUPPORTED_PROTOCOL:
	case SSL_R_VERSION_TOO_LOW:
	case SSL_R_WRONG_VERSION_NUMBER:
		return "protocol_version";
	case SSL_R_NO_SHARED_CIPHER:
		return "no_shared_cipher";
	default:
		return "handshake_failed";
	}
}

static const char *classify_failure(struct kg_conn *c)
{
	unsigned long e = ERR_peek_error();

	if (c->verify_err)
		return kg_hs_verify_reason(c->verify_err);
	if (!kg_peer_get(c, KG_PEER_DETAIL)[0] && e) {
		const char *r = ERR_reason_error_string(e);
		kg_peer_setf(c, KG_PEER_DETAIL, "%s",
			 r ? r : "TLS handshake failed");
	}
	return e ? reason_from_ssl_error(e) : "handshake_failed";
}

void kg_hs_refuse(struct kg_conn *c, const char *reason)
{
	c->result = reason;
	c->w->stats.handshakes_refused++;
	c->w->stats.refused[kg_refusal_of(reason)]++;
	kg_conn_linger(c);
}

static void record_session(struct kg_conn *c)
{
	X509 *peer = SSL_get0_peer_certificate(c->ssl);

	c->peer.version = SSL_get_version(c->ssl);
	c->peer.cipher = SSL_CIPHER_get_name(SSL_get_current_cipher(c->ssl));
	c->peer.resumed = SSL_session_reused(c->ssl);
	/* A full handshake recorded the leaf while verifying it; a resumed
	 * session carries the certificate from its full handshake. */
	if (peer && !kg_peer_get(c, KG_PEER_SUBJECT)[0])
		record_peer_cert(c, peer);
}

static void handshake_done(struct kg_conn *c)
{
	record_session(c);
	c->w->stats.hs_latency[kg_lat_bucket(kg_now_us() - c->start_us)]++;
	if (c->kt)
		kg_ktls_handshake_done(c->ssl);
	c->result = "ok";
	c->w->stats.handshakes_ok++;
	if (c->peer.resumed)
		c->w->stats.handshakes_resumed++;
	c->state = KG_CS_CONNECTING;
	kg_conn_touch(c, c->gen->cfg.idle_timeout_ms);
	kg_backend_connect(c);
}

/* The alert the reason deserves where OpenSSL's table says otherwise. */
static void correct_alert(struct kg_conn *c, const char *reason)
{
	if (strcmp(reason, "certificate_not_yet_valid") == 0)
		kg_alert_rewrite(c, KG_ALERT_CERTIFICATE_EXPIRED);
	else if (strcmp(reason, "access_denied") == 0)
		kg_alert_rewrite(c, KG_ALERT_ACCESS_DENIED);
}

void kg_hs_on_client_bytes(struct kg_conn *c)
{
	int r, e;

	ERR_clear_error();
	r = SSL_do_handshake(c->ssl);
	if (r == 1) {
		kg_conn_flush_tls(c);
		if (c->state != KG_CS_CLOSING)
			handshake_done(c);
		return;
	}
	e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ) {
		kg_conn_flush_tls(c);
		if (c->state != KG_CS_CLOSING)
			kg_conn_recv(c, c->cfd, KG_OP_CLI_RECV, &c->cin);
		return;
	}
	const char *reason = classify_failure(c);
	ERR_clear_error();
	correct_alert(c, reason);
	kg_hs_refuse(c, reason); /* flushes the alert */
}
