/* Worker thread: pinned to one CPU, owns one io_uring, its listeners and every
 * connection it accepted. Nothing here blocks: all socket I/O is ring I/O. */
#include "worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "log.h"
#include "srclimit.h"

#define KG_RING_ENTRIES 1024
#define KG_CQ_ENTRIES 16384
#define KG_TICK_MS 200
#define KG_LISTEN_BACKLOG 4096
/* Out of fds (or kernel memory): stop accepting this long before retrying.
 * Re-arming at once would fail at once, a busy loop that floods the log. */
#define KG_ACCEPT_BACKOFF_MS 250
#define KG_LOG_INTERVAL_MS 1000

uint64_t kg_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct io_uring_sqe *kg_get_sqe(struct io_uring *ring)
{
	struct io_uring_sqe *sqe;

	while ((sqe = io_uring_get_sqe(ring)) == NULL)
		io_uring_submit(ring);
	return sqe;
}

void kg_reserve_sqes(struct io_uring *ring, unsigned n)
{
	if (io_uring_sq_space_left(ring) < n)
		io_uring_submit(ring);
}

static int open_listener(const struct kg_addr_spec *spec, char *err, size_t errlen)
{
	const struct kg_addr *a = &spec->addr;
	char where[512];
	int one = 1;
	int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		goto fail;
	/* Each worker has its own socket on the same port: the kernel spreads
	 * new connections across workers with no shared accept queue. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
		goto fail;
	if (a->ss.ss_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
		goto fail;
	if (bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0 ||
	    listen(fd, KG_LISTEN_BACKLOG) < 0)
		goto fail;
	return fd;
fail:
	kg_where_format(&spec->at, where, sizeof(where));
	snprintf(err, errlen, spec->at.file ? "%s: %s: %s" : "%s %s: %s", where, a->text,
		 strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

static int open_listeners(struct kg_worker *w, char *err, size_t errlen)
{
	const struct kg_gen *g = w->gen;
	int rc = 0;

	for (size_t i = 0; i < g->cfg.nlisteners && rc == 0; i++) {
		const struct kg_listener_spec *ls = &g->cfg.listeners[i];
		for (size_t j = 0; j < ls->naddrs; j++) {
			struct kg_listener *l = &w->listeners[w->nlisteners];
			if (w->nlisteners == KG_MAX_LISTEN) {
				snprintf(err, errlen, "at most %d listening addresses", KG_MAX_LISTEN);
				rc = -1;
				break;
			}
			l->fd = open_listener(&ls->addrs[j], err, errlen);
			if (l->fd < 0) {
				rc = -1;
				break;
			}
			l->index = (unsigned)i;
			l->worker = w;
			w->nlisteners++;
		}
	}
	return rc;
}

/* KTLSGATE_TEST_CQ_ENTRIES shrinks the completion queue so that tests can
 * make it overflow (tests/README.md). Not a configuration key: a smaller CQ
 * only ever costs throughput, so operators get nothing from tuning it, and a
 * test knob in the environment stays out of the documented surface. Only
 * powers of two from 2 up to the default are taken; anything else is a
 * start-up error. */
static int cq_entries_wanted(unsigned *entries, char *err, size_t errlen)
{
	const char *v = getenv("KTLSGATE_TEST_CQ_ENTRIES");
	char *end;
	unsigned long n;

	*entries = KG_CQ_ENTRIES;
	if (!v || !*v)
		return 0;
	errno = 0;
	n = strtoul(v, &end, 10);
	if (errno || *end || n < 2 || n > KG_CQ_ENTRIES || (n & (n - 1))) {
		snprintf(err, errlen, "KTLSGATE_TEST_CQ_ENTRIES=%.32s: want a power of two "
			 "from 2 to %d", v, KG_CQ_ENTRIES);
		return -1;
	}
	*entries = (unsigned)n;
	return 0;
}

/* The SQ may not be larger than the CQ (the kernel refuses the setup). */
static int init_ring(struct io_uring *ring, unsigned cq_entries, char *err, size_t errlen)
{
	unsigned sq_entries = cq_entries < KG_RING_ENTRIES ? cq_entries : KG_RING_ENTRIES;
	struct io_uring_params p = {
		.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN,
		.cq_entries = cq_entries,
	};
	int rc = io_uring_queue_init_params(sq_entries, ring, &p);

	if (rc == -EINVAL) { /* older kernel: no COOP_TASKRUN / SUBMIT_ALL */
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_CQSIZE;
		p.cq_entries = cq_entries;
		rc = io_uring_queue_init_params(sq_entries, ring, &p);
	}
	if (rc < 0) {
		snprintf(err, errlen, "io_uring setup failed: %s", strerror(-rc));
		return rc;
	}
	/* Without NODROP a full CQ loses completions, and a connection whose
	 * completion is lost is never freed. Every kernel with multishot
	 * accept (5.19) has it; say so plainly if this one does not. */
	if (!(p.features & IORING_FEAT_NODROP)) {
		io_uring_queue_exit(ring);
		snprintf(err, errlen, "io_uring: the kernel drops completions when the "
			 "queue is full (no IORING_FEAT_NODROP)");
		return -ENOTSUP;
	}
	return 0;
}

int kg_worker_init(struct kg_worker *w, unsigned id, int cpu, const struct kg_runtime *rt,
		   char *err, size_t errlen)
{
	char why[160];
	int rc;

	memset(w, 0, sizeof(*w));
	kg_srclimit_configure(rt->gen->cfg.max_conns_per_source);
	w->id = id;
	w->cpu = cpu;
	w->rt = rt;
	w->wake_fd = -1;
	pthread_mutex_init(&w->box_lock, NULL);
	w->gen = rt->gen;
	kg_gen_ref(w->gen);
	if (open_listeners(w, err, errlen) < 0)
		goto fail;
	w->wake_fd = eventfd(0, EFD_CLOEXEC);
	if (w->wake_fd < 0) {
		snprintf(err, errlen, "worker %u: eventfd: %s", id, strerror(errno));
		goto fail;
	}
	if (cq_entries_wanted(&w->cq_entries, err, errlen) < 0)
		goto fail;
	rc = init_ring(&w->ring, w->cq_entries, why, sizeof(why));
	if (rc < 0) {
		snprintf(err, errlen, "worker %u: %s", id, why);
		goto fail;
	}
	return 0;
fail:
	for (size_t i = 0; i < w->nlisteners; i++)
		close(w->listeners[i].fd);
	if (w->wake_fd >= 0)
		close(w->wake_fd);
	kg_gen_unref(w->gen);
	w->gen = NULL;
	return -1;
}

static void arm_accept(struct kg_listener *l)
{
	struct io_uring_sqe *sqe = kg_get_sqe(&l->worker->ring);

	io_uring_prep_multishot_accept(sqe, l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, kg_ud(l, KG_OP_ACCEPT));
	l->armed = true;
}

static void arm_wake(struct kg_worker *w)
{
	struct io_uring_sqe *sqe = kg_get_sqe(&w->ring);

	io_uring_prep_read(sqe, w->wake_fd, &w->wake_value, sizeof(w->wake_value), 0);
	io_uring_sqe_set_data64(sqe, kg_ud(w, KG_OP_WAKE));
}

static void arm_tick(struct kg_worker *w)
{
	struct io_uring_sqe *sqe = kg_get_sqe(&w->ring);

	w->tick.tv_sec = 0;
	w->tick.tv_nsec = KG_TICK_MS * 1000000LL;
	io_uring_prep_timeout(sqe, &w->tick, 0, 0);
	io_uring_sqe_set_data64(sqe, kg_ud(w, KG_OP_TICK));
}

static void close_fd_via_ring(struct kg_worker *w, int fd)
{
	struct io_uring_sqe *sqe = kg_get_sqe(&w->ring);

	io_uring_prep_close(sqe, fd);
	io_uring_sqe_set_data64(sqe, kg_ud(NULL, KG_OP_IGNORE));
}

static void refuse_over_limit(struct kg_worker *w, int fd)
{
	uint64_t now = kg_now_ms();

	w->stats.conn_limit_hits++;
	if (now - w->last_limit_log_ms >= 1000) {
		w->last_limit_log_ms = now;
		struct kg_field f[] = { KG_I("worker", w->id), KG_I("max_conns", w->gen->cfg.max_conns),
					KG_I("refused_total", w->stats.conn_limit_hits) };
		kg_log_event(KG_LOG_WARN, "conn_limit", f, KG_NFIELDS(f));
	}
	close_fd_via_ring(w, fd);
}

/* Counts the client against its address's cap; false (and logged at most
 * once per second per worker) when it is over. */
static bool source_admitted(struct kg_worker *w, int fd, struct kg_src_key *key)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char client[64];
	uint64_t now;

	key->family = 0;
	if (!kg_srclimit_enabled())
		return true;
	if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
		return true; /* already reset: the handshake will notice and log it */
	if (kg_srclimit_acquire((struct sockaddr *)&ss, key))
		return true;
	w->stats.source_limit_hits++;
	now = kg_now_ms();
	if (!w->last_source_log_ms || now - w->last_source_log_ms >= KG_LOG_INTERVAL_MS) {
		w->last_source_log_ms = now;
		/* The address without the port: the port differs per connection. */
		if (ss.ss_family == AF_INET6)
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, client, sizeof(client));
		else
			inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, client, sizeof(client));
		struct kg_field f[] = {
			KG_I("worker", w->id), KG_S("client", client),
			KG_I("max_conns_per_source", w->gen->cfg.max_conns_per_source),
			KG_I("refused_total", w->stats.source_limit_hits),
		};
		kg_log_event(KG_LOG_WARN, "source_limit", f, KG_NFIELDS(f));
	}
	return false;
}

static bool accept_out_of_resources(int res)
{
	return res == -EMFILE || res == -ENFILE || res == -ENOBUFS || res == -ENOMEM;
}

/* At most one line per second per worker; the count says what was skipped. */
static void log_accept_error(struct kg_worker *w, int res, bool paused)
{
	uint64_t now = kg_now_ms();

	w->stats.accept_errors++;
	w->accept_errors_unlogged++;
	if (w->last_accept_log_ms && now - w->last_accept_log_ms < KG_LOG_INTERVAL_MS)
		return;
	w->last_accept_log_ms = now;
	struct kg_field f[] = {
		KG_I("worker", w->id), KG_S("reason", strerror(-res)),
		KG_I("errors", w->accept_errors_unlogged), KG_I("errors_total", w->stats.accept_errors),
		KG_I("backoff_ms", paused ? KG_ACCEPT_BACKOFF_MS : 0),
	};
	kg_log_event(KG_LOG_WARN, "accept_error", f, KG_NFIELDS(f));
	w->accept_errors_unlogged = 0;
}

/* Stops accepting on l until the tick after resume_ms. */
static void pause_accept(struct kg_listener *l, bool multishot_alive)
{
	struct io_uring_sqe *sqe;

	if (l->resume_ms)
		return;
	l->resume_ms = kg_now_ms() + KG_ACCEPT_BACKOFF_MS;
	if (multishot_alive) {
		sqe = kg_get_sqe(&l->worker->ring);
		io_uring_prep_cancel64(sqe, kg_ud(l, KG_OP_ACCEPT), 0);
		io_uring_sqe_set_data64(sqe, kg_ud(NULL, KG_OP_IGNORE));
	}
}

static void resume_accepts(struct kg_worker *w, uint64_t now)
{
	for (size_t i = 0; i < w->nlisteners; i++) {
		struct kg_listener *l = &w->listeners[i];
		if (!l->resume_ms || now < l->resume_ms)
			continue;
		l->resume_ms = 0;
		if (!l->armed && !w->draining)
			arm_accept(l);
	}
}

static void on_accept(struct kg_listener *l, int res, unsigned flags)
{
	struct kg_worker *w = l->worker;
	bool ended = !(flags & IORING_CQE_F_MORE);

	if (res < 0 && accept_out_of_resources(res))
		pause_accept(l, !ended);
	if (ended) {
		l->armed = false;
		if (w->draining)
			close_fd_via_ring(w, l->fd);
		else if (!l->resume_ms)
			arm_accept(l); /* the kernel ended the multishot */
	}
	if (res < 0) {
		if (res != -ECANCELED)
			log_accept_error(w, res, l->resume_ms != 0);
		return;
	}
	if (w->draining) {
		close_fd_via_ring(w, res);
		return;
	}
	if (w->nconns >= w->gen->cfg.max_conns) {
		refuse_over_limit(w, res);
		return;
	}
	struct kg_src_key src;
	if (!source_admitted(w, res, &src)) {
		close_fd_via_ring(w, res);
		return;
	}
	struct kg_conn *c = kg_conn_new(w, res, l->index);
	if (!c) { /* no memory for its state: this one client is refused, and says so */
		kg_srclimit_release(&src);
		close_fd_via_ring(w, res);
		log_accept_error(w, -ENOMEM, false);
		return;
	}
	c->src = src;
	if (kg_hs_start(c) < 0) {
		c->result = "internal_error";
		kg_conn_close(c, "out_of_memory");
	}
}

static void start_drain(struct kg_worker *w)
{
	struct io_uring_sqe *sqe;

	w->draining = true;
	w->drain_deadline_ms = kg_now_ms() + w->gen->cfg.drain_timeout_ms;
	for (size_t i = 0; i < w->nlisteners; i++) {
		if (!w->listeners[i].armed) {
			if (w->listeners[i].resume_ms) /* paused: nothing will close it later */
				close_fd_via_ring(w, w->listeners[i].fd);
			w->listeners[i].resume_ms = 0;
			continue;
		}
		sqe = kg_get_sqe(&w->ring);
		io_uring_prep_cancel64(sqe, kg_ud(&w->listeners[i], KG_OP_ACCEPT), 0);
		io_uring_sqe_set_data64(sqe, kg_ud(NULL, KG_OP_IGNORE));
	}
}

/* A burst of handshakes leaves the heap as large as its peak (SSL objects and
 * TLS buffers, ~60 KiB each), with the pages of their freed chunks still
 * resident between the small long-lived blocks of the connections that stay.
 * Once no handshake has been in flight for a whole tick, hand those pages back
 * (at most once a second): an idle kTLS connection keeps well under 1 KiB. */
/* Sanitizers bring their own allocator: glibc's heap is then never set up
 * and malloc_trim walks an arena that does not exist (SEGV in mtrim). */
static void release_heap(void)
{
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
	malloc_trim(0);
#endif
}

static void trim_after_handshakes(struct kg_worker *w, bool handshaking, uint64_t now)
{
	if (handshaking) {
		w->trim_pending = true;
		return;
	}
	if (w->trim_pending && now - w->last_trim_ms >= 1000) {
		release_heap();
		w->trim_pending = false;
		w->last_trim_ms = now;
	}
}

static void on_tick(struct kg_worker *w)
{
	uint64_t now = kg_now_ms();
	bool drain_expired = w->draining && now >= w->drain_deadline_ms;
	bool handshaking = false;
	struct kg_conn *c, *next;

	for (c = w->conns; c; c = next) {
		next = c->next; /* c may be freed below */
		if (c->state == KG_CS_CLOSING)
			continue;
		if (c->state == KG_CS_HANDSHAKE || c->state == KG_CS_CONNECTING)
			handshaking = true;
		if (drain_expired)
			kg_conn_close(c, "drain");
		else if (c->deadline_ms && now >= c->deadline_ms)
			kg_conn_on_deadline(c);
		else
			kg_conn_trim_tls(c); /* a burst's buffers, once it is over */
	}
	resume_accepts(w, now);
	trim_after_handshakes(w, handshaking, now);
	arm_tick(w);
}

static void copy_stats(struct kg_worker *w, struct kg_wmsg *m)
{
	m->stats = w->stats;
	m->stats.conns_active = w->nconns;
}

static void handle(struct kg_worker *w, struct kg_wmsg *m)
{
	switch (m->kind) {
	case KG_WMSG_STOP:
		if (!w->draining)
			start_drain(w);
		break;
	case KG_WMSG_GEN:
		kg_gen_unref(w->gen);
		w->gen = m->gen; /* the reference travels with the message */
		m->gen = NULL;
		kg_hs_vcache_reset(w); /* new CAs, CRLs or rules: nothing verified before counts */
		break;
	case KG_WMSG_STATS:
		copy_stats(w, m);
		break;
	case KG_WMSG_CONNS:
		kg_conn_describe_all(w, m);
		break;
	case KG_WMSG_KILL:
		m->killed = kg_conn_kill_matching(w, &m->kill, m);
		break;
	}
}

static void read_mailbox(struct kg_worker *w)
{
	struct kg_wmsg *m, *next;

	pthread_mutex_lock(&w->box_lock);
	m = w->box;
	w->box = NULL;
	pthread_mutex_unlock(&w->box_lock);
	for (; m; m = next) {
		next = m->next;
		handle(w, m);
		sem_post(&m->done);
		kg_wmsg_put(m);
	}
}

/* After the loop: nobody will handle these; release their senders. */
static void abandon_mailbox(struct kg_worker *w)
{
	struct kg_wmsg *m, *next;

	pthread_mutex_lock(&w->box_lock);
	m = w->box;
	w->box = NULL;
	w->box_closed = true; /* later posts are released at once */
	pthread_mutex_unlock(&w->box_lock);
	for (; m; m = next) {
		next = m->next;
		kg_wmsg_abandon(m);
	}
}

static bool listeners_armed(const struct kg_worker *w)
{
	for (size_t i = 0; i < w->nlisteners; i++)
		if (w->listeners[i].armed)
			return true;
	return false;
}

static void dispatch(struct kg_worker *w, struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	void *obj = kg_ud_obj(ud);

	switch (kg_ud_op(ud)) {
	case KG_OP_ACCEPT:
		on_accept(obj, cqe->res, cqe->flags);
		return;
	case KG_OP_WAKE:
		read_mailbox(w);
		arm_wake(w);
		return;
	case KG_OP_TICK:
		on_tick(w);
		return;
	case KG_OP_IGNORE:
	case KG_OP_NONE:
		return;
	default:
		kg_conn_on_cqe(obj, kg_ud_op(ud), cqe->res, cqe->flags);
	}
}

static void pin_to_cpu(struct kg_worker *w)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(w->cpu, &set);
	if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set) != 0)
		kg_log_msg(KG_LOG_WARN, "pin_failed", "worker %u: cannot pin to CPU %d", w->id, w->cpu);
}

/* Completions the CQ had no room for wait in the kernel (IORING_FEAT_NODROP)
 * and come in order at the next io_uring_enter: nothing is lost, but a CQ that
 * keeps overflowing is too small for the load. Counted per loop round that
 * found some parked; one line a second at most. koverflow counts completions
 * the kernel really dropped (it had no memory to park them). */
static void note_cq_overflow(struct kg_worker *w)
{
	uint64_t now;

	if (!(IO_URING_READ_ONCE(*w->ring.sq.kflags) & IORING_SQ_CQ_OVERFLOW))
		return;
	w->stats.cq_overflows++;
	w->cq_overflows_unlogged++;
	now = kg_now_ms();
	if (w->last_overflow_log_ms && now - w->last_overflow_log_ms < KG_LOG_INTERVAL_MS)
		return;
	w->last_overflow_log_ms = now;
	struct kg_field f[] = {
		KG_I("worker", w->id), KG_I("cq_entries", w->cq_entries),
		KG_I("rounds", w->cq_overflows_unlogged), KG_I("rounds_total", w->stats.cq_overflows),
		KG_I("dropped", IO_URING_READ_ONCE(*w->ring.cq.koverflow)),
	};
	kg_log_event(KG_LOG_WARN, "cq_overflow", f, KG_NFIELDS(f));
	w->cq_overflows_unlogged = 0;
}

/* -EBADR: the kernel could not even park a completion (out of memory) and
 * dropped it. Keep serving the rest: stopping the worker would end all of
 * its connections, where the lost completion costs one (it never reaches
 * zero operations in flight, so it is only freed when the daemon stops). */
static bool ring_wait_failed(struct kg_worker *w, int rc)
{
	if (rc >= 0 || rc == -EINTR || rc == -EAGAIN || rc == -EBUSY || rc == -ETIME)
		return false;
	if (rc == -EBADR) {
		uint64_t now = kg_now_ms();
		if (!w->last_overflow_log_ms || now - w->last_overflow_log_ms >= KG_LOG_INTERVAL_MS) {
			w->last_overflow_log_ms = now;
			kg_log_msg(KG_LOG_ERROR, "cq_dropped", "worker %u: the kernel dropped %u "
				   "completions (out of memory)", w->id,
				   IO_URING_READ_ONCE(*w->ring.cq.koverflow));
		}
		return false;
	}
	kg_log_msg(KG_LOG_ERROR, "ring_error", "worker %u: %s", w->id, strerror(-rc));
	return true;
}

static void *worker_main(void *arg)
{
	struct kg_worker *w = arg;
	struct io_uring_cqe *cqe;
	unsigned head;

	pin_to_cpu(w);
	kg_bufpool_init(&w->bufs, &w->ring);
	kg_bufpool_attach(&w->bufs);
	for (size_t i = 0; i < w->nlisteners; i++)
		arm_accept(&w->listeners[i]);
	arm_wake(w);
	arm_tick(w);
	while (!(w->draining && w->nconns == 0 && !listeners_armed(w))) {
		int rc = io_uring_submit_and_wait(&w->ring, 1);
		if (ring_wait_failed(w, rc)) {
			w->exit_status = 1;
			break;
		}
		/* Each slot is handed back before its completion is handled:
		 * handlers submit (and may enter the kernel when the SQ is full),
		 * and the kernel can then post into the CQ instead of parking. */
		io_uring_for_each_cqe(&w->ring, head, cqe) {
			struct io_uring_cqe done = *cqe;
			io_uring_cq_advance(&w->ring, 1);
			dispatch(w, &done);
		}
		note_cq_overflow(w);
		kg_dpdk_flush(w); /* one crypto burst for everything this round queued */
	}
	abandon_mailbox(w);
	io_uring_submit(&w->ring); /* the last closes */
	kg_bufpool_destroy(&w->bufs, &w->ring);
	io_uring_queue_exit(&w->ring);
	close(w->wake_fd);
	return NULL;
}

int kg_worker_start(struct kg_worker *w)
{
	return pthread_create(&w->thread, NULL, worker_main, w);
}

void kg_worker_request_stop(struct kg_worker *w)
{
	struct kg_wmsg *m = kg_wmsg_new(KG_WMSG_STOP);

	if (m)
		kg_worker_post(w, m);
}

void kg_worker_join(struct kg_worker *w)
{
	pthread_join(w->thread, NULL);
	kg_up_cache_free(w);
	kg_hs_vcache_reset(w);
	kg_gen_unref(w->gen);
	w->gen = NULL;
}
