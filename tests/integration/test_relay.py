"""Bytes through the relay: exact, bounded, half-closed, and what happens
when the backend is not there."""
import hashlib
import json
import os
import socket
import ssl
import time

import pytest

import tlsclient
from conftest import Backend, echo_handler, free_port

MIB = 1 << 20


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3],
                         ids=["tls12", "tls13"])
def test_64_mib_each_way_byte_exact(pki, echo_backend, start_daemon, version):
    # The OpenSSL path; the DPDK engine has its own in test_dpdk.py.
    d, port = start_daemon(echo_backend.addr, "--record-engine", "openssl")
    ok, _ = tlsclient.echo_transfer(tlsclient.context(pki, version=version), port, 64 * MIB)
    assert ok
    line = d.wait_access(1)[-1]
    assert f"bytes_in={64 * MIB}" in line and f"bytes_out={64 * MIB}" in line
    assert "path=user" in line


def test_200_concurrent_clients(pki, echo_backend, start_daemon):
    d, port = start_daemon(echo_backend.addr)
    ctx = tlsclient.context(pki)
    results = tlsclient.concurrent_echo(ctx, port, 200, 64 * 1024, timeout=60, join_timeout=90)
    assert results == [True] * 200, [r for r in results if r is not True][:5]
    lines = d.wait_access(200, timeout=20)
    assert sum("result=ok" in l and "bytes_in=65536" in l for l in lines) == 200


def test_client_half_close(pki, sink_backend, start_daemon):
    """close_notify from the client reaches the backend as EOF; the backend's
    answer still reaches the client afterwards."""
    d, port = start_daemon(sink_backend.addr)
    payload = os.urandom(3 * MIB + 17)
    reply = tlsclient.half_close_exchange(tlsclient.context(pki), port, payload)
    assert reply == hashlib.sha256(payload).hexdigest().encode()
    assert sink_backend.received == [len(payload)]
    assert "end=client_eof" in d.wait_access(1)[-1]


def test_backend_half_close(pki, start_daemon):
    """The backend closes its side first: the client gets close_notify, and
    may still send; what it sends still reaches the backend."""
    got = []

    def handler(backend, c):
        c.sendall(b"banner")
        c.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            d = c.recv(4096)
            if not d:
                break
            data += d
        got.append(data)
    b = Backend(handler)
    d, port = start_daemon(b.addr)
    s = tlsclient.connect(tlsclient.context(pki), port)
    assert s.recv(6) == b"banner"
    assert s.recv(10) == b""  # close_notify from ktlsgate
    s.sendall(b"after-close")
    s.close()  # our close_notify + FIN
    deadline = time.time() + 5
    while not got and time.time() < deadline:
        time.sleep(0.05)
    assert got == [b"after-close"]
    assert "end=backend_eof" in d.wait_access(1)[-1]
    b.close()


def test_backend_down_closes_client_with_reason(pki, start_daemon):
    dead = f"127.0.0.1:{free_port()}"
    d, port = start_daemon(dead)
    s = tlsclient.connect(tlsclient.context(pki), port)
    s.sendall(b"anyone?")
    assert s.recv(10) == b""  # close_notify, no data
    line = d.wait_access(1)[-1]
    assert "result=backend_unavailable" in line
    assert "Connection refused" in line
    assert "backend_connect_failed" in d.text()


def test_backend_failover(pki, echo_backend, start_daemon):
    dead = f"127.0.0.1:{free_port()}"
    d, port = start_daemon([dead, echo_backend.addr])
    for _ in range(4):  # round-robin start: some tries hit the dead one first
        assert tlsclient.echo_transfer(tlsclient.context(pki), port, 1000)[0]
    lines = d.wait_access(4)
    assert all(f"backend={echo_backend.addr}" in l and "result=ok" in l for l in lines)


def test_unix_socket_backend(pki, start_daemon, tmp_path):
    b = Backend(echo_handler, unix_path=str(tmp_path / "echo.sock"))
    d, port = start_daemon(b.addr)
    assert tlsclient.echo_transfer(tlsclient.context(pki), port, 100000)[0]
    assert f"backend={b.addr}" in d.wait_access(1)[-1]
    b.close()


def test_ipv6_listener(pki, echo_backend, start_daemon):
    port = free_port(socket.AF_INET6)
    d, _ = start_daemon(echo_backend.addr, listen=f"[::1]:{port}", port=port)
    raw = socket.create_connection(("::1", port), timeout=10)
    s = tlsclient.context(pki).wrap_socket(raw, server_hostname="localhost")
    s.sendall(b"v6")
    assert s.recv(2) == b"v6"
    s.close()
    assert "client=[::1]:" in d.wait_access(1)[-1]


def test_handshake_timeout(pki, echo_backend, start_daemon):
    d, port = start_daemon(echo_backend.addr, "--handshake-timeout", "1")
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    t0 = time.time()
    assert s.recv(10) == b""  # closed by the server, we sent nothing
    assert time.time() - t0 < 3
    assert "result=handshake_timeout" in d.wait_access(1)[-1]


def test_idle_timeout(pki, echo_backend, start_daemon):
    d, port = start_daemon(echo_backend.addr, "--idle-timeout", "1")
    s = tlsclient.connect(tlsclient.context(pki), port)
    s.sendall(b"hi")
    assert s.recv(2) == b"hi"
    t0 = time.time()
    assert s.recv(10) == b""
    assert time.time() - t0 < 3
    assert "end=idle_timeout" in d.wait_access(1)[-1]


def test_json_access_log(pki, echo_backend, start_daemon):
    d, port = start_daemon(echo_backend.addr, "--log-format", "json", "--record-engine", "openssl")
    assert tlsclient.echo_transfer(tlsclient.context(pki), port, 123)[0]
    tlsclient.refusal(tlsclient.context(pki, cert="client-expired"), port)
    lines = d.wait_access(2)
    for line in d.log_lines():
        json.loads(line)  # every line is one JSON object
    ok, refused = (json.loads(l) for l in lines)
    assert ok["event"] == "access" and ok["result"] == "ok" and ok["bytes_in"] == 123
    assert ok["subject"] == "CN=client.demo,O=ktlsgate demo" and ok["path"] == "user"
    assert refused["result"] == "certificate_expired" and refused["backend"] is None


def test_sigterm_drains_and_exits_zero(pki, echo_backend, start_daemon):
    d, port = start_daemon(echo_backend.addr)
    s = tlsclient.connect(tlsclient.context(pki), port)
    s.sendall(b"before")
    assert s.recv(6) == b"before"
    d.proc.send_signal(15)
    time.sleep(0.3)
    with pytest.raises(OSError):  # no longer accepting
        socket.create_connection(("127.0.0.1", port), timeout=2)
    s.sendall(b"during")  # live connections keep working while draining
    assert s.recv(6) == b"during"
    s.close()
    assert d.proc.wait(10) == 0
    assert "stopped" in d.text()


def test_backend_connect_timeout(pki, start_daemon):
    """A backend whose accept queue is full drops SYNs: the connect must time
    out (linked ring timeout), be logged and counted, and the client closed."""
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    addr = blackhole.getsockname()
    fillers = []
    for _ in range(4):  # fill the accept queue; later SYNs are dropped
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(addr)
        fillers.append(f)
    time.sleep(0.2)
    d, port = start_daemon(f"127.0.0.1:{addr[1]}", "--connect-timeout", "0.5")
    s = tlsclient.connect(tlsclient.context(pki), port)
    s.sendall(b"x")
    t0 = time.time()
    assert s.recv(1) == b""
    assert time.time() - t0 < 3
    line = d.wait_access(1)[-1]
    assert "result=backend_unavailable" in line and "Connection timed out" in line
    for f in fillers:
        f.close()
    blackhole.close()


def test_max_conns_per_worker(pki, echo_backend, start_daemon):
    d, port = start_daemon(echo_backend.addr, "--workers", "1", "--max-conns", "1")
    first = tlsclient.connect(tlsclient.context(pki), port)
    first.sendall(b"a")
    assert first.recv(1) == b"a"
    with pytest.raises((ssl.SSLError, OSError)):
        second = tlsclient.connect(tlsclient.context(pki), port)
        second.sendall(b"b")
        second.recv(1)
    d.wait_log(r"conn_limit worker=0 max_conns=1 refused_total=1")
    first.sendall(b"c")  # the connection we already had is unaffected
    assert first.recv(1) == b"c"
    first.close()
