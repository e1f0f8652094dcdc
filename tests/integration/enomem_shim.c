/* LD_PRELOAD shim for tests/integration/test_faults.py: makes malloc, calloc,
 * realloc and aligned_alloc fail on demand (and with them OpenSSL's
 * CRYPTO_malloc, jansson, libfyaml: everything in the daemon).
 *
 * KTLSGATE_ENOMEM_CTL=FILE names a file holding one command; the shim reads
 * it again at most every 20 ms, so a test changes the fault while the daemon runs:
 *   off        no failures (also when the file is missing)
 *   every N    from now on, every Nth allocation fails
 *   at K       only the Kth allocation since main() started fails
 *              (sweeping K walks the failure through start-up)
 * Nothing fails before main(): library constructors (ld.so, DPDK's trace
 * points, GnuTLS, libnuma) are not the daemon's code, and some of them crash
 * or exit on a failed allocation.
 * The shim writes "FAILED CALLS" (failed allocations, all allocations so
 * far) to FILE.count each time it reads FILE.
 *
 * KTLSGATE_ENOMEM_SPARE=NAME[,NAME...] never fails an allocation made by (or
 * on behalf of: the 8 innermost frames are looked at) these exported
 * functions: for bugs in libraries we cannot fix. The one known: libfyaml
 * 0.7.12's fy_parse_input_append checks its parser instead of the fy_input
 * that fy_input_create returned (NULL when its calloc or asprintf failed) and
 * dereferences NULL: spare fy_input_create.
 *
 * Forwarding goes to the next definition (RTLD_NEXT): glibc's, or the
 * sanitizer's under ASan (run with ASAN_OPTIONS=verify_asan_link_order=0).
 * dlsym may allocate while the real functions are looked up: those requests
 * come from a static arena that free() recognises. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static void *(*next_malloc)(size_t);
static void *(*next_calloc)(size_t, size_t);
static void *(*next_realloc)(void *, size_t);
static void *(*next_aligned_alloc)(size_t, size_t);
static void (*next_free)(void *);

static _Alignas(64) char boot[1 << 16];
static atomic_size_t boot_used;
static atomic_int resolving;

enum mode { OFF, EVERY, AT };
static atomic_int mode;
static atomic_ulong param;
static atomic_ulong calls_total, calls_since, failures;
static atomic_long last_check_ms = -1000;
static atomic_int ctl_read, ctl_reading;
static char ctl_path[512], count_path[520];

static void *boot_alloc(size_t n)
{
	size_t off = atomic_fetch_add(&boot_used, (n + 63) & ~(size_t)63);

	if (off + n > sizeof(boot))
		return NULL;
	return boot + off;
}

static int in_boot(const void *p)
{
	return (const char *)p >= boot && (const char *)p < boot + sizeof(boot);
}

static void resolve(void)
{
	if (next_malloc || atomic_exchange(&resolving, 1))
		return;
	next_calloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "calloc");
	next_realloc = (void *(*)(void *, size_t))dlsym(RTLD_NEXT, "realloc");
	next_aligned_alloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "aligned_alloc");
	next_free = (void (*)(void *))dlsym(RTLD_NEXT, "free");
	next_malloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "malloc");
}

/* Raw syscalls and no str* calls from here on: the sanitizer's interceptors
 * are not set up yet when its own start-up allocates. */
static long now_ms(void)
{
	struct timespec ts;

	syscall(SYS_clock_gettime, CLOCK_MONOTONIC_COARSE, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static unsigned long parse_ulong(const char *p)
{
	unsigned long v = 0;

	while (*p == ' ')
		p++;
	while (*p >= '0' && *p <= '9')
		v = v * 10 + (unsigned long)(*p++ - '0');
	return v;
}

/* Raw syscalls only: nothing here may allocate. */
static char *put_ulong(char *p, unsigned long v)
{
	do
		*--p = (char)('0' + v % 10);
	while (v /= 10);
	return p;
}

/* "FAILURES CALLS\n": failed allocations and all allocations so far. */
static void write_count(void)
{
	char buf[48], *p = buf + sizeof(buf);
	int fd;

	*--p = '\n';
	p = put_ulong(p, atomic_load(&calls_total));
	*--p = ' ';
	p = put_ulong(p, atomic_load(&failures));
	fd = (int)syscall(SYS_openat, AT_FDCWD, count_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
			  0644);
	if (fd < 0)
		return;
	(void)!syscall(SYS_write, fd, p, (size_t)(buf + sizeof(buf) - p));
	syscall(SYS_close, fd);
}

static int starts_with(const char *s, const char *prefix)
{
	while (*prefix && *s == *prefix)
		s++, prefix++;
	return !*prefix;
}

static int set_paths(void)
{
	const char *env = getenv("KTLSGATE_ENOMEM_CTL");
	size_t n = 0;

	if (!env)
		return -1;
	while (env[n] && n < sizeof(ctl_path) - 1) {
		ctl_path[n] = count_path[n] = env[n];
		n++;
	}
	if (env[n])
		return -1;
	ctl_path[n] = '\0';
	for (const char *sfx = ".count"; *sfx; sfx++)
		count_path[n++] = *sfx;
	count_path[n] = '\0';
	return 0;
}

/* While failing, every allocation looks at the clock (an idle daemon must
 * see "off" on its next request); otherwise every 64th. The file is read
 * every 20 ms at most. */
static void reread_ctl(unsigned long calls)
{
	long now, last = atomic_load(&last_check_ms);
	char buf[64];
	int fd, m = OFF;
	long n;
	unsigned long v = 0;

	/* Until the file has been read once, every call tries: "at K" may
	 * name one of the very first allocations. */
	if (!atomic_load(&ctl_read)) {
		if (atomic_exchange(&ctl_reading, 1))
			return;
		if (!ctl_path[0] && set_paths() < 0) { /* no environment yet */
			atomic_store(&ctl_reading, 0);
			return;
		}
		last = -1000;
	} else if (atomic_load(&mode) == OFF && calls % 64 != 1) {
		return;
	}
	now = now_ms();
	if (now - last < 20 || !atomic_compare_exchange_strong(&last_check_ms, &last, now))
		return;
	fd = (int)syscall(SYS_openat, AT_FDCWD, ctl_path, O_RDONLY | O_CLOEXEC);
	n = fd < 0 ? 0 : syscall(SYS_read, fd, buf, sizeof(buf) - 1);
	if (fd >= 0)
		syscall(SYS_close, fd);
	buf[n > 0 ? n : 0] = '\0';
	if (starts_with(buf, "every")) {
		m = EVERY;
		v = parse_ulong(buf + 5);
	} else if (starts_with(buf, "at")) {
		m = AT;
		v = parse_ulong(buf + 2);
	}
	atomic_store(&ctl_read, 1);
	if (m != atomic_load(&mode) || v != atomic_load(&param)) {
		atomic_store(&calls_since, 0);
		atomic_store(&param, v);
		atomic_store(&mode, m);
	}
	write_count();
}

static int listed(const char *list, const void *ip)
{
	Dl_info info;
	size_t n;

	if (!dladdr(ip, &info) || !info.dli_sname)
		return 0;
	n = strlen(info.dli_sname);
	for (const char *p = list; *p; p += strcspn(p, ","), p += *p == ',') {
		if (strncmp(p, info.dli_sname, n) == 0 && (p[n] == ',' || p[n] == '\0'))
			return 1;
	}
	return 0;
}

/* Whether a spared function is among the callers; only asked when a failure
 * is due. backtrace() was warmed up at load (its first call loads libgcc_s
 * and allocates); dladdr takes a lock but does not allocate. */
static __thread int unwinding __attribute__((tls_model("initial-exec")));

static int spared(void)
{
	const char *list = getenv("KTLSGATE_ENOMEM_SPARE");
	void *ips[32];
	int n, hit = 0;

	if (!list || !*list)
		return 0;
	if (unwinding) /* the unwinder's own allocations: never failed */
		return 1;
	unwinding = 1;
	n = backtrace(ips, 32);
	for (int i = 2; i < n && !hit; i++) /* 0: here, 1: should_fail */
		hit = listed(list, ips[i]);
	unwinding = 0;
	return hit;
}

__attribute__((constructor)) static void warm_up_backtrace(void)
{
	void *ips[2];

	backtrace(ips, 2);
}

static atomic_int main_started;

static int should_fail(void)
{
	unsigned long total;

	if (!atomic_load(&main_started))
		return 0;
	total = atomic_fetch_add(&calls_total, 1) + 1;
	unsigned long since = atomic_fetch_add(&calls_since, 1) + 1;
	unsigned long v;
	int fail = 0;

	reread_ctl(total);
	v = atomic_load(&param);
	switch (atomic_load(&mode)) {
	case EVERY:
		fail = v && since % v == 0;
		break;
	case AT:
		fail = total == v;
		break;
	default:
		break;
	}
	if (fail && spared())
		fail = 0;
	if (fail) {
		atomic_fetch_add(&failures, 1);
		errno = ENOMEM;
	}
	return fail;
}

void *malloc(size_t n)
{
	resolve();
	if (!next_malloc)
		return boot_alloc(n);
	return should_fail() ? NULL : next_malloc(n);
}

void *calloc(size_t n, size_t size)
{
	resolve();
	if (!next_calloc) /* the arena is static: already zero */
		return size && n > SIZE_MAX / size ? NULL : boot_alloc(n * size);
	return should_fail() ? NULL : next_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
	resolve();
	if (in_boot(p) || !next_realloc) {
		void *q = next_malloc ? next_malloc(n) : boot_alloc(n);
		if (q && p) {
			size_t room = in_boot(p) ? (size_t)(boot + sizeof(boot) - (char *)p) : n;
			memcpy(q, p, n < room ? n : room);
		}
		return q;
	}
	return should_fail() ? NULL : next_realloc(p, n);
}

void *aligned_alloc(size_t align, size_t n)
{
	resolve();
	if (!next_aligned_alloc)
		return boot_alloc(n);
	return should_fail() ? NULL : next_aligned_alloc(align, n);
}

void free(void *p)
{
	if (!p || in_boot(p))
		return;
	resolve();
	if (next_free)
		next_free(p);
}

/* __libc_start_main runs the executable's constructors, then main: the
 * wrapper marks where the daemon's own code begins. */
typedef int (*main_fn)(int, char **, char **);
static main_fn real_main;

static int main_wrapper(int argc, char **argv, char **envp)
{
	atomic_store(&main_started, 1);
	return real_main(argc, argv, envp);
}

int __libc_start_main(main_fn main, int argc, char **argv, void (*init)(void),
		      void (*fini)(void), void (*rtld_fini)(void), void *stack_end)
{
	int (*next)(main_fn, int, char **, void (*)(void), void (*)(void), void (*)(void),
		    void *) = (int (*)(main_fn, int, char **, void (*)(void), void (*)(void),
				       void (*)(void), void *))dlsym(RTLD_NEXT, "__libc_start_main");

	real_main = main;
	return next(main_wrapper, argc, argv, init, fini, rtld_fini, stack_end);
}
