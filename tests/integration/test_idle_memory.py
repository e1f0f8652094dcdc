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
# The DPDK engine frees the SSL object at the handoff; an idle connection
# then holds its engine state, cryptodev sessions and no record buffers.
# It held three (~20 KB resident each idle connection) before they went
# back to a per-worker spare list between bursts.
DPDK_MAX_BYTES_PER_CONN = 24000


def proven(ctx, port):
    s = tlsclient.connect(ctx, port, timeout=30)
    s.sendall(b"x")
    assert s.recv(1) == b"x"
    return s


def idle_rss_per_conn(pki, d, port):
    """(bytes of RSS per idle proven connection, the held sockets)."""
    ctx = tlsclient.context(pki)
    for _ in range(20):  # libraries, caches and the workers' pools touched once
        proven(ctx, port).close()
    time.sleep(1.5)      # a worker tick: the heap trim after handshakes
    before = rss_kib(d.proc.pid)
    held = [proven(ctx, port) for _ in range(N)]
    time.sleep(1.5)      # a worker tick: idle connections trim their TLS state
    after = rss_kib(d.proc.pid)
    return (after - before) * 1024 / N, held


def still_relaying(held):
    """Every idle connection echoes again, buffers taken anew."""
    for s in held:
        s.sendall(b"y" * 40000)
    for s in held:
        got = b""
        while len(got) < 40000:
            chunk = s.recv(65536)
            assert chunk
            got += chunk
        assert got == b"y" * 40000


def check_idle(pki, d, port, bound, path):
    """Idle RSS per connection under bound, then every connection relays."""
    per_conn, held = idle_rss_per_conn(pki, d, port)
    try:
        print(f"path={path}: {per_conn:.0f} B RSS per idle connection")
        assert per_conn < bound, f"{per_conn:.0f} B RSS per idle connection"
        still_relaying(held)
    finally:
        for s in held:
            s.close()
    lines = d.wait_access(N + 20, timeout=30)
    assert sum(f"path={path}" in l and "result=ok" in l for l in lines) == N + 20


@pytest.mark.skipif(SANITIZED, reason="the sanitizer's allocator has its own per-block costs")
def test_idle_userspace_connections_hold_little_memory(pki, echo_backend, start_daemon):
    d, port = start_daemon(echo_backend.addr, "--record-engine", "openssl")
    check_idle(pki, d, port, MAX_BYTES_PER_CONN, "user")


@pytest.mark.skipif(SANITIZED, reason="the sanitizer's allocator has its own per-block costs")
def test_idle_dpdk_connections_hold_no_record_buffers(pki, echo_backend, start_daemon):
    d, port = start_daemon(echo_backend.addr, "--record-engine", "dpdk", ready=False)
    try:
        d.wait_ready(timeout=20)
    except Exception:
        if "built without DPDK" in d.text():
            pytest.skip("this build has DPDK off (-Ddpdk=disabled)")
        raise
    check_idle(pki, d, port, DPDK_MAX_BYTES_PER_CONN, "dpdk")
