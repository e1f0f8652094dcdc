/* The worker's mailbox: a locked list the control thread appends to, and an
 * eventfd write that wakes the worker's ring. */
#include "mailbox.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "generation.h"
#include "worker.h"

struct kg_wmsg *kg_wmsg_new(enum kg_wmsg_kind kind)
{
	struct kg_wmsg *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->kind = kind;
	atomic_init(&m->refs, 2);
	sem_init(&m->done, 0, 0);
	return m;
}

void kg_wmsg_put(struct kg_wmsg *m)
{
	if (!m || atomic_fetch_sub(&m->refs, 1) != 1)
		return;
	sem_destroy(&m->done);
	free(m->views);
	free(m);
}

void kg_wmsg_abandon(struct kg_wmsg *m)
{
	kg_gen_unref(m->gen);
	m->gen = NULL;
	sem_post(&m->done);
	kg_wmsg_put(m);
}

static void post(struct kg_worker *w, struct kg_wmsg *m)
{
	uint64_t one = 1;

	pthread_mutex_lock(&w->box_lock);
	if (w->box_closed) {
		pthread_mutex_unlock(&w->box_lock);
		kg_wmsg_abandon(m);
		return;
	}
	struct kg_wmsg **tail = &w->box;
	while (*tail)
		tail = &(*tail)->next;
	*tail = m;
	/* Under the lock: once the worker has closed its box it closes wake_fd,
	 * and a write after that could land on a reused descriptor. */
	ssize_t unused = write(w->wake_fd, &one, sizeof(one));
	(void)unused;
	pthread_mutex_unlock(&w->box_lock);
}

void kg_worker_post(struct kg_worker *w, struct kg_wmsg *m)
{
	atomic_fetch_sub(&m->refs, 1); /* the caller's reference goes with it */
	post(w, m);
}

bool kg_worker_call(struct kg_worker *w, struct kg_wmsg *m, unsigned timeout_ms)
{
	struct timespec until;

	post(w, m);
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	while (sem_timedwait(&m->done, &until) < 0)
		if (errno != EINTR)
			return false;
	return true;
}

int kg_revoked_cmp(const void *a, const void *b)
{
	const struct kg_revoked *x = a, *y = b;
	int r = strcmp(x->serial, y->serial);

	return r ? r : strcmp(x->issuer, y->issuer);
}
