"""What an idle userspace-relayed connection costs the daemon: no relay
buffers (receives take a ring buffer only when bytes arrive, sends give
theirs back once drained) and no OpenSSL record buffers or grown memory
BIOs. Before that work one connection held ~63 KB of RSS (four 16.9 KiB
buffers plus OpenSSL's); the bound below is far under that and far above
what remains (~25 KB: the SSL object, its session and the parsed client
chain), so allocator noise does not make it flaky."""
import time

import pytest

import tlsclient
from conftest import SANITIZED
from procfs import rss_kib

N = 300
MAX_BYTES_PER_CONN = 42000


def proven(ctx, port):
    s = tlsclient.connect(ctx, port, timeout=30)
    s.sendall(b"x")
    assert s.recv(1) == b"x"
    return s


@pytest.mark.skipif(SANITIZED, reason="the sanitizer's allocator has its own per-block costs")
def test_idle_userspace_connections_hold_little_memory(pki, echo_backend, start_daemon):
    d, port = start_daemon(echo_backend.addr, "--record-engine", "openssl")
    ctx = tlsclient.context(pki)
    for _ in range(20):  # libraries, caches and the workers' pools touched once
        proven(ctx, port).close()
    time.sleep(1.5)      # a worker tick: the heap trim after handshakes
    before = rss_kib(d.proc.pid)
    held = [proven(ctx, port) for _ in range(N)]
    time.sleep(1.5)      # a worker tick: idle connections trim their TLS state
    after = rss_kib(d.proc.pid)
    per_conn = (after - before) * 1024 / N
    try:
        assert per_conn < MAX_BYTES_PER_CONN, f"{per_conn:.0f} B RSS per idle connection"
        # Still relaying after the trim: every connection echoes again.
        for s in held:
            s.sendall(b"y" * 40000)
        for s in held:
            got = b""
            while len(got) < 40000:
                chunk = s.recv(65536)
                assert chunk
                got += chunk
            assert got == b"y" * 40000
    finally:
        for s in held:
            s.close()
    lines = d.wait_access(N + 20, timeout=30)
    assert sum("path=user" in l and "result=ok" in l for l in lines) == N + 20
