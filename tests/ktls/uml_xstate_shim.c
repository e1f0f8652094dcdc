/* LD_PRELOAD shim for Debian's linux.uml (6.1) on hosts whose CPUs have AMX.
 *
 * Why: UML switches its guest threads' FPU state with PTRACE_GETREGSET/SETREGSET
 * NT_X86_XSTATE using an 832-byte buffer (legacy + AVX). The host kernel truncates
 * GET fine, but SET demands the whole XSAVE buffer (10752 bytes with AMX) and fails
 * with EFAULT: "userspace - ptrace set fp regs failed, errno = 14", and the guest's
 * init dies. Here every UML buffer gets a full-size shadow: GET fills the shadow and
 * hands UML its prefix; SET writes UML's prefix over the shadow and sets all of it.
 * Keyed by UML's buffer address (one per guest thread), so AVX-512 state the 832
 * bytes cannot hold is still saved and restored per thread. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <elf.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/uio.h>

#define FULL_MAX 65536
struct shadow { void *key; size_t len; unsigned char *full; struct shadow *next; };
static struct shadow *table[1024];
typedef long (*ptrace_fn)(int, pid_t, void *, void *);
static ptrace_fn real_ptrace;

static struct shadow *lookup(void *key)
{
	size_t h = ((uintptr_t)key >> 6) & 1023;
	for (struct shadow *s = table[h]; s; s = s->next)
		if (s->key == key) return s;
	struct shadow *s = calloc(1, sizeof(*s));
	s->key = key; s->full = aligned_alloc(64, FULL_MAX);
	s->next = table[h]; table[h] = s;
	return s;
}

long ptrace(enum __ptrace_request req, ...)
{
	va_list ap; va_start(ap, req);
	pid_t pid = va_arg(ap, pid_t); void *addr = va_arg(ap, void *); void *data = va_arg(ap, void *);
	va_end(ap);
	if (!real_ptrace) real_ptrace = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");
	if ((req == PTRACE_GETREGSET || req == PTRACE_SETREGSET) && (uintptr_t)addr == NT_X86_XSTATE) {
		struct iovec *iov = data;
		struct shadow *s = lookup(iov->iov_base);
		struct iovec full = { s->full, FULL_MAX };
		if (req == PTRACE_GETREGSET) {
			long r = real_ptrace(PTRACE_GETREGSET, pid, addr, &full);
			if (r < 0) return r;
			s->len = full.iov_len;
			size_t n = iov->iov_len < full.iov_len ? iov->iov_len : full.iov_len;
			memcpy(iov->iov_base, s->full, n);
			iov->iov_len = n;
			return r;
		}
		if (!s->len) { /* never saved through this buffer: start from the task's own state */
			long r = real_ptrace(PTRACE_GETREGSET, pid, addr, &full);
			if (r < 0) return r;
			s->len = full.iov_len;
		}
		if (iov->iov_len >= s->len) return real_ptrace(req, pid, addr, data);
		memcpy(s->full, iov->iov_base, iov->iov_len);
		full.iov_len = s->len;
		return real_ptrace(PTRACE_SETREGSET, pid, addr, &full);
	}
	return real_ptrace(req, pid, addr, data);
}
