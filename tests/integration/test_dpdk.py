"""The DPDK cryptodev record engine (record_engine: dpdk): interop with
OpenSSL clients for every suite the PMD has, record boundaries, KeyUpdate,
close_notify, a corrupted record, many connections. Skipped only when the
build has DPDK off (-Ddpdk=disabled)."""
import hashlib
import os
import socket
import ssl
import subprocess
import time

import pytest

import tlsclient
from conftest import BIN, SANITIZED, Backend, control
from procfs import rss_kib

MIB = 1 << 20

CONFIG = """
global:
  record_engine: dpdk
  workers: 2
listeners:
  - listen: "127.0.0.1:{port}"
    identities: [{{ cert: "{pki}/server-ecdsa-chain.crt", key: "{pki}/server-ecdsa.key" }}]
    client_ca: "{pki}/client-ca.pem"
    backends: "{backend}"
    tls: {{ ciphersuites: "{suites}" }}
"""

SUITES13 = ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"]
SUITES12 = ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
            "ECDHE-ECDSA-CHACHA20-POLY1305"]


@pytest.fixture
def dpdk_daemon(start_config, echo_backend):
    """start(suites=...) -> (Daemon, port); skips when the build has no DPDK."""
    def start(suites=":".join(SUITES13), backend=None):
        d, port, _ = start_config(CONFIG, ready=False, backend=backend or echo_backend.addr,
                                  suites=suites)
        deadline = time.time() + 20
        while time.time() < deadline:
            text = d.text()
            if " ready " in text or '"event":"ready"' in text:
                break
            if d.proc.poll() is not None:
                if "built without DPDK" in text:
                    pytest.skip("this build has DPDK off (-Ddpdk=disabled)")
                raise AssertionError(f"ktlsgate exited:\n{text[-3000:]}")
            time.sleep(0.05)
        assert "engine=dpdk" in d.text() or '"engine":"dpdk"' in d.text(), d.text()[-3000:]
        return d, port
    return start


def transfer_64mib(pki, port, version, ciphers=None):
    ctx = tlsclient.context(pki, version=version, ciphers=ciphers)
    return tlsclient.echo_transfer(ctx, port, 64 * MIB, timeout=300)


@pytest.mark.parametrize("suite", SUITES13)
def test_tls13_64_mib_each_way(pki, dpdk_daemon, suite):
    d, port = dpdk_daemon(suites=suite)
    ok, info = transfer_64mib(pki, port, ssl.TLSVersion.TLSv1_3)
    assert ok and info["cipher"] == suite
    line = d.wait_access(1)[-1]
    assert "path=dpdk" in line and f"bytes_in={64 * MIB}" in line, line


@pytest.mark.parametrize("suite", SUITES12)
def test_tls12_64_mib_each_way(pki, dpdk_daemon, suite):
    d, port = dpdk_daemon()
    ok, info = transfer_64mib(pki, port, ssl.TLSVersion.TLSv1_2, ciphers=suite)
    assert ok and info["cipher"] == suite
    line = d.wait_access(1)[-1]
    assert "path=dpdk" in line and f"bytes_out={64 * MIB}" in line, line


def echo_sizes(s, sizes):
    """Each size as one write, its echo read back whole and compared."""
    for size in sizes:
        payload = os.urandom(size)
        s.sendall(payload)
        got = b""
        while len(got) < size:
            got += s.recv(65536)
        assert got == payload, size


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3],
                         ids=["tls12", "tls13"])
def test_record_boundaries(pki, dpdk_daemon, version):
    """1-byte records, exactly 16 KiB, 16 KiB + 1 (two records each way)."""
    d, port = dpdk_daemon()
    s = tlsclient.connect(tlsclient.context(pki, version=version), port)
    s.settimeout(20)
    echo_sizes(s, (1, 16384, 16385, 3 * 16384 + 7))
    ones = os.urandom(300)
    for b in ones:  # 300 one-byte records
        s.sendall(bytes([b]))
    got = b""
    while len(got) < len(ones):
        got += s.recv(65536)
    assert got == ones
    s.unwrap()  # close_notify both ways
    s.close()
    assert "path=dpdk" in d.wait_access(1)[-1]


def test_slow_reader_bounded_and_byte_exact(pki, dpdk_daemon):
    """The backend pushes 32 MiB; the client reads nothing for 2 s. Record
    buffers are taken per burst now: the engine must still read the backend
    only as fast as the client drains, so memory stays flat, bytes exact."""
    payload = os.urandom(32 * MIB)

    def handler(backend, c):
        c.recv(1)
        c.sendall(payload)
        c.shutdown(socket.SHUT_WR)
        while c.recv(65536):
            pass
    b = Backend(handler)
    d, port = dpdk_daemon(backend=b.addr)
    base = rss_kib(d.proc.pid)
    s = tlsclient.connect(tlsclient.context(pki), port, timeout=60)
    s.sendall(b"g")
    time.sleep(2)
    grown = rss_kib(d.proc.pid) - base
    h, n = hashlib.sha256(), 0
    while n < len(payload):
        chunk = s.recv(1 << 20)
        assert chunk
        h.update(chunk)
        n += len(chunk)
    assert h.digest() == hashlib.sha256(payload).digest()
    s.close()
    print(f"slow reader: RSS grew {grown} KiB")
    assert grown < (48 if SANITIZED else 8) * 1024, f"RSS grew {grown} KiB"
    assert "path=dpdk" in d.wait_access(1)[-1]
    b.close()


def test_close_notify_half_close(pki, dpdk_daemon, sink_backend):
    d, port = dpdk_daemon(backend=sink_backend.addr)
    payload = os.urandom(MIB + 3)
    reply = tlsclient.half_close_exchange(tlsclient.context(pki), port, payload)
    assert reply == hashlib.sha256(payload).hexdigest().encode()
    line = d.wait_access(1)[-1]
    assert "end=client_eof" in line and "path=dpdk" in line, line


def test_key_update_from_openssl_s_client(pki, dpdk_daemon):
    """s_client 'K' sends KeyUpdate(update_requested), 'k' without: the engine
    rekeys its receive side, answers with its own KeyUpdate, and keeps going."""
    d, port = dpdk_daemon()
    p = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3",
                          "-cert", f"{pki}/client.crt", "-cert_chain", f"{pki}/client-chain.crt",
                          "-key", f"{pki}/client.key", "-CAfile", f"{pki}/root-ca.crt"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for line in (b"before-update\n", b"K\n", b"after-requested\n", b"k\n", b"after-plain\n",
                 b"K\n", b"last\n"):
        p.stdin.write(line)
        p.stdin.flush()
        time.sleep(0.4)
    time.sleep(0.5)
    p.terminate()
    out = p.communicate(timeout=10)[0].decode(errors="replace")
    for word in ("before-update", "after-requested", "after-plain", "last"):
        assert word in out, out[-2000:]
    line = d.wait_access(1)[-1]
    assert "path=dpdk" in line and "bytes_in=" in line
    assert "bytes_in=0" not in line
    stats = control(d.ctl_path, {"cmd": "show stats"})
    assert stats["ok"], stats
    assert stats["total"]["dpdk"]["key_updates"] == 3, stats["total"]["dpdk"]
    assert "KEYUPDATE" in out


def test_corrupted_record_gets_bad_record_mac(pki, dpdk_daemon):
    """A flipped ciphertext bit: the client receives bad_record_mac, then EOF."""
    d, port = dpdk_daemon()
    ctx = tlsclient.context(pki, version=ssl.TLSVersion.TLSv1_3)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            raw.sendall(out.read())
            data = raw.recv(65536)
            assert data
            inc.write(data)
    raw.sendall(out.read())
    obj.write(b"x" * 100)
    rec = bytearray(out.read())
    rec[20] ^= 0x01
    raw.sendall(bytes(rec))
    err = None
    deadline = time.time() + 10
    while time.time() < deadline:
        data = raw.recv(65536)
        if not data:
            break
        inc.write(data)
        try:
            obj.read(65536)
        except ssl.SSLWantReadError:
            continue
        except ssl.SSLError as e:
            err = e
            break
    assert err is not None and "BAD_RECORD_MAC" in str(err).upper(), err
    assert raw.recv(65536) == b""  # and the server closes
    raw.close()
    line = d.wait_access(1)[-1]
    assert "end=bad_record_mac" in line and "path=dpdk" in line, line


def test_100_concurrent_connections(pki, dpdk_daemon):
    d, port = dpdk_daemon()
    ctx = tlsclient.context(pki)
    results = tlsclient.concurrent_echo(ctx, port, 100, 256 * 1024, timeout=120, join_timeout=180)
    assert results == [True] * 100, [r for r in results if r is not True][:5]
    lines = d.wait_access(100, timeout=30)
    assert sum("path=dpdk" in l and "bytes_in=262144" in l for l in lines) == 100
    stats = control(d.ctl_path, {"cmd": "show stats"})
    # Bytes that arrive with the handshake are OpenSSL's before the handoff.
    assert stats["total"]["dpdk"]["records_rx"] >= 100 * 8
    assert stats["total"]["dpdk"]["bursts"] > 0
    # Builds with -Dc_args=-DKG_DP_MAX_PENDING=128 make this test exercise the
    # waiting list (queue_waits > 0); the default queue rarely fills here.
    assert stats["total"]["dpdk"]["queue_waits"] >= 0


def test_eal_pins_nothing(pki, dpdk_daemon):
    """EAL runs on the control thread with --lcores = our own CPU set: the main
    thread keeps the process's CPUs, each worker keeps the one it pinned itself,
    and EAL's own threads stay off a single worker CPU."""
    d, port = dpdk_daemon()
    pid = d.proc.pid
    allowed = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            for line in f:
                if line.startswith("Cpus_allowed_list:"):
                    allowed[int(tid)] = line.split()[1]
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            allowed[int(tid)] = (f.read().strip(), allowed[int(tid)])
    mine = os.sched_getaffinity(0)
    expect = f"{min(mine)}-{max(mine)}" if len(mine) > 1 else str(min(mine))
    assert allowed[pid][1] == expect, allowed
    info = d.ctl("show info")
    worker_cpus = sorted(str(w["cpu"]) for w in info["workers"])
    singles = sorted(cpus for comm, cpus in allowed.values() if "-" not in cpus and "," not in cpus)
    assert singles == worker_cpus, allowed  # only the workers are pinned, each to its own
    assert "dpdk" in info["record_engine"], info["record_engine"]


def test_tls13_padded_records_accepted(pki, dpdk_daemon):
    """s_client -record_padding pads every TLS 1.3 record to 512 bytes: the
    engine strips the zeros and finds the inner content type."""
    d, port = dpdk_daemon()
    p = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3",
                          "-cert", f"{pki}/client.crt", "-cert_chain", f"{pki}/client-chain.crt",
                          "-key", f"{pki}/client.key", "-CAfile", f"{pki}/root-ca.crt",
                          "-record_padding", "512"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for line in (b"padded-one\n", b"padded-two\n"):
        p.stdin.write(line)
        p.stdin.flush()
        time.sleep(0.4)
    time.sleep(0.4)
    p.terminate()
    out = p.communicate(timeout=10)[0].decode(errors="replace")
    assert "padded-one" in out.split("---")[-1] and "padded-two" in out, out[-2000:]
    line = d.wait_access(1)[-1]
    assert "path=dpdk" in line and "bytes_in=22 " in line, line


def test_curl_through_the_engine(pki, start_config, http_backend):
    """curl (libcurl + OpenSSL) as the client, an HTTP backend behind the engine."""
    d, port, _ = start_config(CONFIG, ready=False, backend=http_backend.addr,
                              suites=":".join(SUITES13))
    deadline = time.time() + 20
    while time.time() < deadline and " ready " not in d.text() and d.proc.poll() is None:
        time.sleep(0.05)
    if d.proc.poll() is not None and "built without DPDK" in d.text():
        pytest.skip("this build has DPDK off (-Ddpdk=disabled)")
    for tls in ("--tlsv1.2", "--tlsv1.3"):
        args = ["curl", "-sS", tls, "--cacert", f"{pki}/root-ca.crt",
                "--cert", f"{pki}/client-chain.crt", "--key", f"{pki}/client.key",
                "--resolve", f"localhost:{port}:127.0.0.1", f"https://localhost:{port}/"]
        if tls == "--tlsv1.2":
            args[3:3] = ["--tls-max", "1.2"]
        out = subprocess.run(args, capture_output=True, text=True, timeout=20)
        assert out.returncode == 0 and out.stdout == "hello", out.stderr
    lines = d.wait_access(2)
    assert all("path=dpdk" in l for l in lines[-2:]), lines


SIZED = CONFIG.replace("  workers: 2\n", "  workers: 2\n  dpdk_memory_mb: 96\n  dpdk_queue_depth: 512\n")


def start_sized(start_config, backend, **env):
    """The engine with dpdk_memory_mb / dpdk_queue_depth set (and env for the
    daemon): (Daemon, port) once ready; skips when the build has no DPDK."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        d, port, _ = start_config(SIZED, ready=False, backend=backend, suites=":".join(SUITES13))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    deadline = time.time() + 20
    while time.time() < deadline and " ready " not in d.text() and d.proc.poll() is None:
        time.sleep(0.05)
    if d.proc.poll() is not None and "built without DPDK" in d.text():
        pytest.skip("this build has DPDK off (-Ddpdk=disabled)")
    assert " ready " in d.text(), d.text()[-3000:]
    return d, port


def test_memory_and_queue_depth_reach_eal(pki, start_config, echo_backend):
    """dpdk_memory_mb and dpdk_queue_depth are what EAL and the queue pairs get."""
    d, port = start_sized(start_config, echo_backend.addr)
    setup = [l for l in d.text().splitlines() if " dpdk_setup " in l]
    assert setup, d.text()[-3000:]
    assert "memory_mb=96 " in setup[0] and "queue_depth=512 " in setup[0], setup[0]
    # crypto_aesni_mb is a software PMD: heap buffers, IOVA as VA.
    assert "buffers=heap" in setup[0], setup[0]
    ok, _ = tlsclient.echo_transfer(tlsclient.context(pki), port, 4 * MIB)
    assert ok


@pytest.mark.parametrize("value,message", [
    ("dpdk_memory_mb: 16", "dpdk_memory_mb: must be from 64 to 65536"),
    ("dpdk_queue_depth: 3000", "dpdk_queue_depth: must be a power of two"),
    ("dpdk_queue_depth: 1048576", "dpdk_queue_depth: must be from 64 to 32768"),
])
def test_bad_memory_or_depth_refused(pki, tmp_path, value, message):
    path = tmp_path / "bad.yaml"
    path.write_text(CONFIG.format(port=1, pki=pki, backend="127.0.0.1:1", suites="x")
                    .replace("  workers: 2\n", f"  workers: 2\n  {value}\n"))
    r = subprocess.run([BIN, "--config", str(path), "--check"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0
    assert f"{path}:5:" in r.stderr and message in r.stderr, r.stderr


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3],
                         ids=["tls12", "tls13"])
def test_dma_safe_buffer_path_moves_the_same_bytes(pki, start_config, echo_backend, version):
    """The hardware PMDs' buffer path (mempool objects with their own IOVA),
    forced on the software PMD: every byte comes back, record sizes from 1 B
    to several 16 KiB records, 16 MiB each way."""
    d, port = start_sized(start_config, echo_backend.addr, KTLSGATE_TEST_DPDK_DMA_BUFFERS="1")
    setup = [l for l in d.text().splitlines() if " dpdk_setup " in l][0]
    assert "buffers=dma" in setup and "buffers_per_worker=" in setup, setup
    ok, _ = tlsclient.echo_transfer(tlsclient.context(pki, version=version), port, 16 * MIB)
    assert ok
    s = tlsclient.connect(tlsclient.context(pki, version=version), port)
    s.settimeout(20)
    echo_sizes(s, (1, 16384, 16385, 3 * 16384 + 7))
    s.unwrap()
    s.close()
    lines = d.wait_access(2)
    assert all("path=dpdk" in l for l in lines[-2:]), lines
