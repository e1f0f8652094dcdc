"""Fixtures for the ktlsgate integration suite: a generated PKI, real backends
and the real daemon binary (KTLSGATE_BIN, default build/ktlsgate)."""
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
BIN = os.path.abspath(os.environ.get("KTLSGATE_BIN", os.path.join(ROOT, "build", "ktlsgate")))
SANITIZED = bool(os.environ.get("KTLSGATE_SANITIZED"))


def pytest_sessionstart(session):
    if not os.access(BIN, os.X_OK):
        pytest.exit(f"ktlsgate binary not found at {BIN} (build first or set KTLSGATE_BIN)",
                    returncode=1)


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    subprocess.run([sys.executable, os.path.join(ROOT, "tests", "pki", "gen_pki.py"), str(d)],
                   check=True, stdout=subprocess.DEVNULL)
    return str(d)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def free_port(family=socket.AF_INET):
    with socket.socket(family) as s:
        s.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        return s.getsockname()[1]


class Backend:
    """A threaded TCP (or unix) server; handler(conn) serves one connection."""

    def __init__(self, handler, unix_path=None):
        if unix_path:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.bind(unix_path)
            self.addr = f"unix:{unix_path}"
        else:
            self.sock = socket.socket()
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind(("127.0.0.1", 0))
            self.addr = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.sock.listen(512)
        self.handler = handler
        self.connections = 0
        self.received = []
        self.stopped = False
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            with c:
                self.handler(self, c)
        except OSError:
            pass

    def close(self):
        self.stopped = True
        self.sock.close()


def echo_handler(backend, c):
    while True:
        d = c.recv(1 << 16)
        if not d:
            c.shutdown(socket.SHUT_WR)
            return
        c.sendall(d)


def sha256_sink_handler(backend, c):
    """Reads until EOF, then answers with the hex sha256 of what it got."""
    h, n = hashlib.sha256(), 0
    while True:
        d = c.recv(1 << 16)
        if not d:
            break
        h.update(d)
        n += len(d)
    backend.received.append(n)
    c.sendall(h.hexdigest().encode())


def http_handler(backend, c):
    data = b""
    while b"\r\n\r\n" not in data:
        d = c.recv(4096)
        if not d:
            return
        data += d
    body = b"hello"
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n" + body)


@pytest.fixture
def echo_backend():
    b = Backend(echo_handler)
    yield b
    b.close()


@pytest.fixture
def sink_backend():
    b = Backend(sha256_sink_handler)
    yield b
    b.close()


@pytest.fixture
def http_backend():
    b = Backend(http_handler)
    yield b
    b.close()


def control(path, request, timeout=10):
    """One request on the control socket; the reply as a dict."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


class Daemon:
    def __init__(self, args, log_path, preexec_fn=None):
        # Every test daemon gets its own control socket (short path: sun_path
        # holds 108 bytes, test directories can be longer).
        self.ctl_path = os.path.join(tempfile.mkdtemp(prefix="kgctl"), "control.sock")
        if "--control-socket" not in args:
            args = args + ["--control-socket", self.ctl_path]
        self.args = args
        self.log_path = log_path
        self.log = open(log_path, "w")
        # preexec_fn: e.g. setrlimit before exec (fd exhaustion tests).
        self.proc = subprocess.Popen([BIN] + args, stdout=subprocess.PIPE, stderr=self.log,
                                     preexec_fn=preexec_fn)

    def ctl(self, cmd, **args):
        return control(self.ctl_path, {"cmd": cmd, **args})

    def wait_ready(self, timeout=10):
        self.wait_log(r'( ready |"event":"ready")', timeout)

    def text(self):
        with open(self.log_path) as f:
            return f.read()

    def log_lines(self):
        return self.text().splitlines()

    def access_lines(self):
        return [l for l in self.log_lines() if " access " in l or '"event":"access"' in l]

    def wait_log(self, pattern, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = re.search(pattern, self.text())
            if m:
                return m
            if self.proc.poll() is not None:
                raise AssertionError(f"ktlsgate exited ({self.proc.returncode}):\n{self.text()}")
            time.sleep(0.05)
        raise AssertionError(f"log never matched {pattern!r}:\n{self.text()[-4000:]}")

    def wait_access(self, count, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            lines = self.access_lines()
            if len(lines) >= count:
                return lines
            time.sleep(0.05)
        raise AssertionError(f"expected {count} access lines:\n{self.text()[-4000:]}")

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@pytest.fixture
def daemons():
    """Every daemon a test starts; stopped afterwards, sanitizer reports fail the test."""
    started = []
    yield started
    for d in started:
        rc = d.stop()
        # A sanitizer report makes the process exit non-zero: fail the test.
        if SANITIZED and rc not in (0, None, -signal.SIGKILL):
            raise AssertionError(f"ktlsgate exited {rc} under sanitizers:\n{d.text()[-6000:]}")
        assert "ERROR: AddressSanitizer" not in d.text(), d.text()[-6000:]
        assert "runtime error:" not in d.text(), d.text()[-6000:]


@pytest.fixture
def start_config(pki, tmp_path, daemons):
    """start_config(yaml_text, ready=True, **fields) -> (Daemon, port, path): the text
    is formatted with pki, port (a free one) and the given fields."""
    def start(text, ready=True, extra=(), **fields):
        port = fields.pop("port", None) or free_port()
        path = tmp_path / f"ktlsgate-{len(daemons)}.yaml"
        path.write_text(text.format(pki=pki, port=port, **fields))
        d = Daemon(["--config", str(path), *extra], str(tmp_path / f"ktlsgate-{len(daemons)}.log"))
        daemons.append(d)
        if ready:
            d.wait_ready()
        return d, port, str(path)
    return start


@pytest.fixture
def start_daemon(pki, tmp_path, daemons):
    """start_daemon(backend_addr, *extra, port=None) -> (Daemon, port)."""

    def start(backend, *extra, port=None, listen=None, identities=("ecdsa",), client_ca=None,
              ready=True, preexec_fn=None):
        port = port or free_port()
        args = ["--listen", listen or f"127.0.0.1:{port}"]
        for kind in identities:
            args += ["--cert", f"{pki}/server-{kind}-chain.crt", "--key", f"{pki}/server-{kind}.key"]
        args += ["--client-ca", client_ca or f"{pki}/client-ca.pem", "--workers", "2"]
        for b in ([backend] if isinstance(backend, str) else backend):
            args += ["--backend", b]
        args += list(extra)
        d = Daemon(args, str(tmp_path / f"ktlsgate-{len(daemons)}.log"), preexec_fn)
        daemons.append(d)
        if ready:
            d.wait_ready()
        return d, port

    return start
