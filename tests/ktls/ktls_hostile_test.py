#!/usr/bin/python3
"""Hostile clients and faulty backends on the kernel-TLS splice path (issue 9).
Runs inside the user-mode-linux guest (tests/ktls/run-uml.sh), where the kernel
has kTLS; on a kernel without it exits 77 (skipped). Exit 0 = every check
passed, 1 = a check failed.

One daemon (--idle-timeout 3), one backend whose behaviour the client picks
with its first line: "echo", "stream" (sends forever), "noread" (never reads),
"reset" (sends 1000 bytes, then RST). Every faulty connection must be relayed
by kTLS (path=ktls), end with the right reason, cost bounded memory, and leave
no descriptor behind (/proc/PID/fd counted before and after); afterwards a
good client still completes a byte-exact transfer. Then a second daemon with
an 8-entry completion queue (KTLSGATE_TEST_CQ_ENTRIES) relays 24 concurrent
transfers over kTLS: the queue overflows, nothing is lost."""
import hashlib
import os
import re
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # the guest sees the host's tree read-only
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ktls_daemon_test as kd  # noqa: E402  (PKI, transfer, check helpers)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from procfs import rss_kib, settled_nfds  # noqa: E402

V13, V12 = ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2
ROUNDS = int(os.environ.get("KTLS_HOSTILE_ROUNDS", "5"))
IDLE_S = 3


class ModeBackend(kd.EchoBackend):
    """The first line the client sends picks what the backend does."""

    @staticmethod
    def serve(c):
        try:
            line = b""
            while not line.endswith(b"\n"):
                d = c.recv(1)
                if not d:
                    return
                line += d
            mode = line.strip()
            if mode == b"echo":
                while True:
                    d = c.recv(1 << 16)
                    if not d:
                        c.shutdown(socket.SHUT_WR)
                        break
                    c.sendall(d)
            elif mode == b"stream":
                block = os.urandom(1 << 16)
                while True:
                    c.sendall(block)
            elif mode == b"noread":
                time.sleep(IDLE_S * 4)
            elif mode == b"reset":
                c.sendall(b"r" * 1000)
                time.sleep(0.3)
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        finally:
            c.close()


def connect(pki, port, version=V13):
    ctx = kd.client_ctx(pki, version, None)
    ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF  # Debian's Python sets it by default
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    # A TCP close without close_notify must raise, not read as a clean b"".
    return ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)


def rst_close(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


# --- the faults -------------------------------------------------------------------------------

def relaying(pki, port, mode):
    """A connection whose relay runs on kTLS (the echo of a first byte proves
    the handoff is done): a reset before it would test the handshake."""
    s = connect(pki, port)
    s.sendall(mode + b"\n" + (b"!" if mode == b"echo" else b""))
    if mode == b"echo":
        assert s.recv(1) == b"!"
    return s


def reset_mid_upload(pki, port):
    s = relaying(pki, port, b"echo")
    s.settimeout(5)
    sent, block = 0, os.urandom(1 << 14)
    while sent < 256 << 10:
        sent += s.send(block)
    rst_close(s)


def reset_mid_download(pki, port):
    s = relaying(pki, port, b"stream")
    got = 0
    while got < 256 << 10:
        got += len(s.recv(1 << 16))
    rst_close(s)


def reset_after_close_notify(pki, port, version):
    s = connect(pki, port, version)
    s.sendall(b"echo\nhello")
    got = b""
    while len(got) < 5:
        got += s.recv(16)
    raw = s.unwrap()  # our close_notify; the daemon answers with its own after the backend's FIN
    rst_close(raw)


FAULTS = [  # (name, function, access-log end expected)
    ("client RST mid-upload", reset_mid_upload, ("client_reset",)),
    ("client RST mid-download", reset_mid_download, ("client_reset",)),
    ("client RST after close_notify (TLS 1.3)",
     lambda pki, port: reset_after_close_notify(pki, port, V13), ("client_eof",)),
    ("client RST after close_notify (TLS 1.2)",
     lambda pki, port: reset_after_close_notify(pki, port, V12), ("client_eof",)),
]


def check_resets(pki, port, log_path):
    for name, fn, ends in FAULTS:
        before = len(kd.access_lines(log_path))
        errors = []
        for _ in range(ROUNDS):
            try:
                fn(pki, port)
            except (OSError, ssl.SSLError) as e:
                errors.append(repr(e))
        lines = kd.wait_access(log_path, before + ROUNDS, timeout=30)[before:]
        ok = len(lines) == ROUNDS and all(
            "path=ktls" in l and "result=ok" in l and re.search(r"end=(%s)\b" % "|".join(ends), l)
            for l in lines)
        kd.check(ok and not errors, f"{name} x{ROUNDS}: path=ktls, end={'/'.join(ends)}"
                 + ("" if ok and not errors else f": {errors[:2]} {[l[-200:] for l in lines[:2]]}"))


def check_client_never_reads(pki, port, log_path, pid):
    """The backend streams, the client reads nothing: the pipes and socket
    buffers hold what they hold, then the idle timeout ends it."""
    before = len(kd.access_lines(log_path))
    rss0 = rss_kib(pid)
    s = connect(pki, port)
    s.sendall(b"stream\n")
    t0 = time.time()
    lines = kd.wait_access(log_path, before + 1, timeout=IDLE_S + 30)[before:]
    took = time.time() - t0
    grown = rss_kib(pid) - rss0
    line = lines[0] if lines else ""
    m = re.search(r"bytes_out=(\d+)", line)
    out = int(m.group(1)) if m else -1
    kd.check("path=ktls" in line and "end=idle_timeout" in line and 0 <= out < 32 << 20
             and grown < 8 << 10 and took >= IDLE_S - 0.5,
             f"client that never reads: idle timeout after {took:.1f} s, bytes_out={out}, "
             f"VmRSS +{grown} KiB, path=ktls ({line[-160:].strip()})")
    s.close()


def check_backend_never_reads(pki, port, log_path, pid):
    before = len(kd.access_lines(log_path))
    rss0 = rss_kib(pid)
    s = connect(pki, port)
    s.sendall(b"noread\n")
    s.settimeout(1)
    sent, block = 0, os.urandom(1 << 14)
    try:
        while sent < 64 << 20:
            sent += s.send(block)
    except (socket.timeout, ssl.SSLError, OSError):
        pass
    lines = kd.wait_access(log_path, before + 1, timeout=IDLE_S + 30)[before:]
    grown = rss_kib(pid) - rss0
    line = lines[0] if lines else ""
    kd.check("path=ktls" in line and "end=idle_timeout" in line and sent < 32 << 20
             and grown < 8 << 10,
             f"backend that never reads: client stopped after {sent >> 10} KiB, idle timeout, "
             f"VmRSS +{grown} KiB, path=ktls ({line[-160:].strip()})")
    s.close()


def check_backend_reset(pki, port, log_path):
    before = len(kd.access_lines(log_path))
    ok, hows = 0, []
    for _ in range(ROUNDS):
        s = connect(pki, port)
        s.sendall(b"reset\n")
        got, how = b"", ""
        try:
            while True:
                d = s.recv(1 << 16)
                if not d:
                    how = "close_notify"
                    break
                got += d
        except (OSError, ssl.SSLError) as e:
            how = "eof without close_notify" if "UNEXPECTED_EOF" in repr(e) else repr(e)
        s.close()
        ok += got == b"r" * 1000 and how == "eof without close_notify"
        hows.append(f"{len(got)} bytes, {how}")
    lines = kd.wait_access(log_path, before + ROUNDS, timeout=30)[before:]
    good = [l for l in lines if "path=ktls" in l and "end=backend_reset" in l
            and "bytes_out=1000" in l]
    kd.check(ok == ROUNDS and len(good) == ROUNDS,
             f"backend reset x{ROUNDS}: the client gets the 1000 bytes, then a TCP close without "
             f"close_notify; end=backend_reset path=ktls ({ok} clients, {len(good)} lines; {hows[:2]})")


def check_still_serves(pki, port, log_path):
    before = len(kd.access_lines(log_path))
    ctx = kd.client_ctx(pki, V13, None)
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    data = os.urandom(8 << 20)
    s.sendall(b"echo\n")
    t = threading.Thread(target=s.sendall, args=(data,))
    t.start()
    got = hashlib.sha256()
    n = 0
    while n < len(data):
        d = s.recv(1 << 16)
        if not d:
            break
        got.update(d)
        n += len(d)
    t.join()
    s.close()
    line = (kd.wait_access(log_path, before + 1, timeout=30)[before:] or [""])[0]
    kd.check(n == len(data) and got.digest() == hashlib.sha256(data).digest() and "path=ktls" in line,
             "afterwards a good client transfers 8 MiB byte-exact over kTLS")


def start_daemon(pki, backend_port, log_path, sock_path, env=None):
    port = kd.free_port()
    proc = subprocess.Popen([kd.BIN, "--listen", f"127.0.0.1:{port}",
                             "--cert", f"{pki}/server-chain.crt", "--key", f"{pki}/server.key",
                             "--client-ca", f"{pki}/root.crt",
                             "--backend", f"127.0.0.1:{backend_port}", "--workers", "1",
                             "--handshake-timeout", "60", "--idle-timeout", str(IDLE_S),
                             "--control-socket", sock_path],
                            stderr=open(log_path, "w"), env=env)
    return proc, port


def stop(proc):
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def check_clean_exit(proc, log_path, what):
    """SIGTERM drains and exits 0; a sanitizer build (KTLSGATE_BIN may be
    build-asan's) reports into the log and exits non-zero."""
    stop(proc)
    text = open(log_path).read()
    bad = re.search(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:", text)
    kd.check(proc.returncode == 0 and not bad,
             f"{what} exits 0 on SIGTERM, no sanitizer report (rc={proc.returncode}"
             + (f", {bad.group(0)}" if bad else "") + ")")


def check_cq_overflow(pki, work):
    """The splice relay with an 8-entry completion queue: 24 concurrent 1 MiB
    echo transfers overflow it (cq_overflow logged, dropped=0), and every one
    is byte-exact over kTLS."""
    backend = kd.EchoBackend()
    log_path = f"{work}/ktlsgate-cq.log"
    proc, port = start_daemon(pki, backend.port, log_path, f"{work}/cq.sock",
                              env=dict(os.environ, KTLSGATE_TEST_CQ_ENTRIES="8"))
    try:
        if not kd.check(kd.wait_ready(log_path), "daemon with an 8-entry CQ started"):
            return
        ctx = kd.client_ctx(pki, V13, None)
        results = [False] * 24
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(
            i, kd.transfer(ctx, port, 1 << 20)[0])) for i in range(len(results))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        lines = kd.wait_access(log_path, len(results), timeout=60)
        ktls = sum("path=ktls" in l and "result=ok" in l for l in lines)
        overflow = re.findall(r"cq_overflow worker=0 cq_entries=8 rounds=\d+ rounds_total=\d+ "
                              r"dropped=(\d+)", open(log_path).read())
        kd.check(all(results) and ktls == len(results) and overflow and set(overflow) == {"0"},
                 f"8-entry CQ: {results.count(True)}/{len(results)} transfers byte-exact, "
                 f"{ktls} path=ktls, cq_overflow logged {len(overflow)} times, dropped=0")
    finally:
        check_clean_exit(proc, log_path, "the 8-entry CQ daemon")


def main():
    dirs = kd.guest_workdir("ktlsgate-hostile-", kd.make_pki)
    if dirs is None:
        return 77
    work, pki = dirs
    backend = ModeBackend()
    log_path = f"{work}/ktlsgate.log"
    daemon, port = start_daemon(pki, backend.port, log_path, f"{work}/control.sock")
    try:
        if not kd.check(kd.wait_ready(log_path), "daemon started"):
            return 1
        kd.check("kTLS: available" in open(log_path).read(), "start-up log says kTLS is available")
        pid = daemon.pid
        base = settled_nfds(pid)
        check_resets(pki, port, log_path)
        check_client_never_reads(pki, port, log_path, pid)
        check_backend_never_reads(pki, port, log_path, pid)
        check_backend_reset(pki, port, log_path)
        after = settled_nfds(pid)
        kd.check(after == base, f"no descriptor leaked: {base} fds before, {after} after")
        check_still_serves(pki, port, log_path)
        kd.check(daemon.poll() is None, "the daemon is still running")
        check_clean_exit(daemon, log_path, "the daemon")
        check_cq_overflow(pki, work)
        return kd.summary()
    finally:
        stop(daemon)
        print(open(log_path).read()[-int(os.environ.get("KTLS_LOG_TAIL", "3000")):])


if __name__ == "__main__":
    sys.exit(main())
