/* Relay buffers (bufpool.h): a receive with IOSQE_BUFFER_SELECT lands in a
 * ring buffer that goes back after use, pending bytes move to an owned
 * buffer, a dry ring fails with ENOBUFS (conn.c then posts an owned buffer),
 * and drained send buffers are reused from a bounded spare list. */
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bufpool.h"
#include "test.h"

#define NSOCK 257 /* one more than the ring has buffers */

static struct io_uring ring;
static int sv[NSOCK][2];

static void post_select_recv(int fd, uint64_t ud)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);

	io_uring_prep_recv(sqe, fd, NULL, KG_BUF_SIZE, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = KG_BUF_GROUP;
	io_uring_sqe_set_data64(sqe, ud);
	io_uring_submit(&ring);
}

/* One receive on socket i, with a byte already waiting: its completion. */
static int recv_one(int i, struct kg_buf *b)
{
	struct io_uring_cqe *cqe;
	int res;

	CHECK(write(sv[i][1], "abcdef", 6) == 6);
	post_select_recv(sv[i][0], (uint64_t)i);
	if (io_uring_wait_cqe(&ring, &cqe) != 0)
		return -EIO;
	res = cqe->res;
	if (cqe->flags & IORING_CQE_F_BUFFER)
		kg_buf_from_ring(b, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
	io_uring_cqe_seen(&ring, cqe);
	return res;
}

static void test_ring_receive_and_keep(void)
{
	struct kg_buf b = { 0 };
	uint8_t *ring_data;

	CHECK(recv_one(0, &b) == 6);
	CHECK(b.data && kg_buf_is_ring(&b) && memcmp(b.data, "abcdef", 6) == 0);
	/* The bytes could not be passed on yet: they leave the ring. */
	ring_data = b.data;
	b.off = 2;
	b.len = 4;
	CHECK(kg_buf_keep(&b));
	CHECK(!kg_buf_is_ring(&b) && b.data != ring_data);
	CHECK(b.off == 0 && b.len == 4 && memcmp(b.data, "cdef", 4) == 0);
	kg_buf_release(&b);
	CHECK(b.data == NULL && b.len == 0);
}

static void test_dry_ring_says_enobufs(void)
{
	static struct kg_buf held[NSOCK];
	struct kg_buf b = { 0 };
	int i;

	for (i = 0; i < NSOCK - 1; i++)
		CHECK(recv_one(i, &held[i]) == 6);
	CHECK(recv_one(NSOCK - 1, &held[NSOCK - 1]) == -ENOBUFS);
	CHECK(held[NSOCK - 1].data == NULL);
	kg_buf_release(&held[0]); /* one back: the next receive gets it */
	CHECK(read(sv[NSOCK - 1][0], (char[8]){ 0 }, 8) == 6);
	CHECK(recv_one(NSOCK - 1, &b) == 6 && kg_buf_is_ring(&b));
	kg_buf_release(&b);
	for (i = 1; i < NSOCK - 1; i++)
		kg_buf_release(&held[i]);
}

static void test_spare_list_reuses_and_is_bounded(struct kg_bufpool *p)
{
	struct kg_buf b[40];
	uint8_t *first;

	memset(b, 0, sizeof(b));
	CHECK(kg_buf_ensure(&b[0]));
	first = b[0].data;
	CHECK(kg_buf_ensure(&b[0]) && b[0].data == first); /* kept while held */
	kg_buf_release(&b[0]);
	CHECK(kg_buf_ensure(&b[0]) && b[0].data == first); /* reused, not malloc'd */
	for (int i = 1; i < 40; i++)
		CHECK(kg_buf_ensure(&b[i]) && !kg_buf_is_ring(&b[i]));
	for (int i = 0; i < 40; i++)
		kg_buf_release(&b[i]);
	CHECK(p->nspare == 32);
}

int main(void)
{
	struct kg_bufpool pool;

	if (io_uring_queue_init(256, &ring, 0) != 0)
		return T_EXIT_SKIP;
	kg_bufpool_init(&pool, &ring);
	kg_bufpool_attach(&pool);
	if (!kg_bufpool_selects()) {
		fprintf(stderr, "no provided-buffer rings on this kernel\n");
		return T_EXIT_SKIP;
	}
	for (int i = 0; i < NSOCK; i++)
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv[i]) != 0)
			return T_EXIT_FAIL;
	test_ring_receive_and_keep();
	test_dry_ring_says_enobufs();
	test_spare_list_reuses_and_is_bounded(&pool);
	kg_bufpool_destroy(&pool, &ring);
	io_uring_queue_exit(&ring);
	return T_DONE();
}
