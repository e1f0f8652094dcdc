"""mTLS towards the backends (backend_tls): a Python ssl upstream with its own
PKI that requires a client certificate. Re-encryption (mTLS in, mTLS out),
egress (plain TCP in, mTLS out), the upstream refusals, resumption towards
the upstream and PROXY v2 inside the upstream's TLS stream."""
import hashlib
import os
import socket
import ssl
import subprocess
import sys
import threading

import pytest

import tlsclient
from conftest import BIN, Backend, ROOT, free_port

sys.path.insert(0, os.path.join(ROOT, "tests", "pki"))
import upstream_pki  # noqa: E402

MIB = 1 << 20


@pytest.fixture(scope="module")
def upki(tmp_path_factory):
    """The backends' own PKIs (tests/pki/upstream_pki.py)."""
    return upstream_pki.make(str(tmp_path_factory.mktemp("upki")))


class Upstream(Backend):
    """A TLS server that requires a client certificate from upki's root (or
    ca); ctx: share another Upstream's context (and so its ticket keys)."""

    def __init__(self, upki, inner, cert="api", version=None, ca="up-root", ctx=None):
        self.ctx = ctx or upstream_pki.server_context(upki, cert, ca, version)
        self.inner = inner
        self.resumed = []
        self.errors = []
        self.peers = []
        super().__init__(Upstream.serve)

    @staticmethod
    def serve(self, c):
        try:
            s = self.ctx.wrap_socket(c, server_side=True)
        except (ssl.SSLError, OSError) as e:
            self.errors.append(str(e))
            return
        self.resumed.append(s.session_reused)
        self.peers.append(s.getpeercert())
        self.ciphers = getattr(self, "ciphers", []) + [(s.version(), s.cipher()[0])]
        self.inner(self, s)


def tls_echo(up, s):
    while True:
        try:
            d = s.recv(1 << 16)
        except ssl.SSLError:
            return
        if not d:
            break
        s.sendall(d)
    try:
        s.unwrap().shutdown(socket.SHUT_WR)
    except (ssl.SSLError, OSError):
        pass


def tls_sink(up, s):
    h, n = hashlib.sha256(), 0
    while True:
        d = s.recv(1 << 16)
        if not d:
            break
        h.update(d)
        n += len(d)
    up.received.append(n)
    s.sendall(h.hexdigest().encode())
    try:
        s.unwrap()
    except (ssl.SSLError, OSError):
        pass


def tls_http(up, s):
    data = b""
    while b"\r\n\r\n" not in data:
        d = s.recv(4096)
        if not d:
            return
        data += d
    up.received.append(data)
    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: close\r\n\r\nhello egress")
    try:
        s.unwrap()
    except (ssl.SSLError, OSError):
        pass


def tls_pp2(up, s):
    """Reads the PROXY v2 header from inside the TLS stream, then echoes."""
    hdr = b""
    while len(hdr) < 16:
        hdr += s.recv(16 - len(hdr))
    n = int.from_bytes(hdr[14:16], "big")
    rest = b""
    while len(rest) < n:
        rest += s.recv(n - len(rest))
    up.received.append(hdr + rest)
    tls_echo(up, s)


@pytest.fixture
def upstream(upki):
    started = []

    def make(inner=tls_echo, **kw):
        u = Upstream(upki, inner, **kw)
        started.append(u)
        return u
    yield make
    for u in started:
        u.close()


BACKEND_TLS = """
    backend_tls:
      {client}
      ca: {upki}/up-root.crt
      verify_name: {name}
"""
CLIENT = "client_cert: {upki}/kg-client.crt\n      client_key: {upki}/kg-client.key"

GATEWAY = """global:
  workers: 1
listeners:
  - listen: "127.0.0.1:{port}"
    identities: [{{ cert: {pki}/server-ecdsa-chain.crt, key: {pki}/server-ecdsa.key }}]
    client_ca: {pki}/client-ca.pem
    backends: "{backend}"
    proxy_protocol: {pp2}
""" + BACKEND_TLS

EGRESS = """global:
  workers: 1
listeners:
  - listen: "127.0.0.1:{port}"
    listen_tls: false
    backends: "{backend}"
""" + BACKEND_TLS


def gateway(start_config, upki, up, client=True, name="api.internal", pp2="false"):
    d, port, _ = start_config(GATEWAY, upki=upki, backend=up.addr, name=name, pp2=pp2,
                              client=CLIENT.format(upki=upki) if client else "")
    return d, port


def access(d, n=1):
    return d.wait_access(n)[n - 1]


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3],
                         ids=["up-tls12", "up-tls13"])
def test_mtls_in_mtls_out_64_mib_each_way(pki, upki, upstream, start_config, version):
    up = upstream(version=version)
    d, port = gateway(start_config, upki, up)
    ok, _ = tlsclient.echo_transfer(tlsclient.context(pki), port, 64 * MIB)
    assert ok
    line = access(d)
    assert "result=ok" in line
    assert f"bytes_in={64 * MIB}" in line and f"bytes_out={64 * MIB}" in line
    want = "TLSv1.2" if version == ssl.TLSVersion.TLSv1_2 else "TLSv1.3"
    assert f"upstream_tls={want}" in line
    # The upstream saw ktlsgate's client certificate.
    assert up.errors == []
    subject = dict(x[0] for x in up.peers[0]["subject"])
    assert subject["commonName"] == "ktlsgate.gateway"


def test_half_close_through_both_tls_sessions(pki, upki, upstream, start_config):
    up = upstream(tls_sink)
    d, port = gateway(start_config, upki, up)
    payload = os.urandom(3 * MIB + 17)
    reply = tlsclient.half_close_exchange(tlsclient.context(pki), port, payload)
    assert reply == hashlib.sha256(payload).hexdigest().encode()
    assert up.received == [len(payload)]
    assert "result=ok" in access(d)


def refused_client(pki, port):
    """The client's handshake with ktlsgate succeeds; then ktlsgate closes it
    (close_notify) instead of relaying: a read returns EOF."""
    s = tlsclient.connect(tlsclient.context(pki), port)
    s.sendall(b"hello")
    try:
        return s.recv(100)
    except (ssl.SSLError, OSError) as e:
        return repr(e)
    finally:
        s.close()


@pytest.mark.parametrize("cert,name,reason,detail", [
    ("wrong-name", "api.internal", "upstream_name_mismatch",
     "backend certificate does not name api.internal"),
    ("api", "db.internal", "upstream_name_mismatch", "does not name db.internal"),
    ("unknown-ca", "api.internal", "upstream_unknown_ca", "unable to get local issuer"),
    ("expired", "api.internal", "upstream_certificate_expired", "certificate has expired"),
])
def test_upstream_certificate_refused(pki, upki, upstream, start_config, cert, name, reason,
                                      detail):
    up = upstream(cert=cert)
    d, port = gateway(start_config, upki, up, name=name)
    assert refused_client(pki, port) == b""
    line = access(d)
    assert f"result={reason}" in line, line
    assert detail in line, line
    refusal = d.wait_log(r"upstream_refused .*")
    assert f"reason={reason}" in refusal.group(0)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3],
                         ids=["up-tls12", "up-tls13"])
def test_upstream_wants_a_certificate_we_lack(pki, upki, upstream, start_config, version):
    up = upstream(version=version)
    d, port = gateway(start_config, upki, up, client=False)
    assert refused_client(pki, port) == b""
    line = access(d)
    assert "result=upstream_no_client_cert" in line, line
    assert "backend_tls has none" in line
    assert "reason=upstream_no_client_cert" in d.wait_log(r"upstream_refused .*").group(0)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3],
                         ids=["up-tls12", "up-tls13"])
def test_resumption_towards_the_upstream(pki, upki, upstream, start_config, version):
    up = upstream(version=version)
    d, port = gateway(start_config, upki, up)
    for _ in range(4):
        ok, _ = tlsclient.echo_transfer(tlsclient.context(pki), port, 1000)
        assert ok
    lines = d.wait_access(4)
    assert [("upstream_resumed=1" in l) for l in lines] == [False, True, True, True], lines
    assert up.resumed == [False, True, True, True]
    stats = d.ctl("show stats")
    upstream = stats["total"]["upstream"]
    assert (upstream["handshakes"], upstream["resumed"], upstream["refused"]) == (4, 3, 0), stats
    assert not any(upstream["refusals"].values()), upstream


def test_proxy_v2_inside_the_upstream_tls(pki, upki, upstream, start_config):
    up = upstream(tls_pp2)
    d, port = gateway(start_config, upki, up, pp2="true")
    ok, _ = tlsclient.echo_transfer(tlsclient.context(pki), port, 100000)
    assert ok
    hdr = up.received[0]
    assert hdr.startswith(b"\r\n\r\n\x00\r\nQUIT\n\x21\x11")  # v2 PROXY, TCP over IPv4
    assert b"client.demo" in hdr  # the client certificate's CN rides in a TLV
    assert "result=ok" in access(d)


def test_egress_plain_in_mtls_out_with_curl(upki, upstream, start_config):
    up = upstream(tls_http)
    d, port, _ = start_config(EGRESS, upki=upki, backend=up.addr, name="api.internal",
                              client=CLIENT.format(upki=upki))
    out = subprocess.run(["curl", "-sS", "--max-time", "10", f"http://127.0.0.1:{port}/egress"],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "hello egress"
    assert up.received[0].startswith(b"GET /egress HTTP/1.1\r\n")
    line = access(d)
    assert "result=ok" in line and "upstream_tls=TLSv1.3" in line


def test_egress_64_mib_each_way(upki, upstream, start_config):
    up = upstream()
    d, port, _ = start_config(EGRESS, upki=upki, backend=up.addr, name="api.internal",
                              client=CLIENT.format(upki=upki))
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    total = 64 * MIB
    tx, rx = hashlib.sha256(), hashlib.sha256()
    got = []

    def reader():
        n = 0
        while True:
            b = s.recv(1 << 16)
            if not b:
                break
            rx.update(b)
            n += len(b)
        got.append(n)
    t = threading.Thread(target=reader)
    t.start()
    chunk = os.urandom(1 << 16)
    for _ in range(total // len(chunk)):
        s.sendall(chunk)
        tx.update(chunk)
    s.shutdown(socket.SHUT_WR)
    t.join(120)
    s.close()
    assert got == [total] and tx.digest() == rx.digest()
    line = access(d)
    assert f"bytes_in={total}" in line and f"bytes_out={total}" in line and "result=ok" in line


def test_egress_refusal_closes_the_plain_client(upki, upstream, start_config):
    up = upstream(cert="unknown-ca")
    d, port, _ = start_config(EGRESS, upki=upki, backend=up.addr, name="api.internal",
                              client=CLIENT.format(upki=upki))
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    assert s.recv(100) == b""  # FIN, nothing relayed
    s.close()
    assert "result=upstream_unknown_ca" in access(d)


def test_upstream_certificate_revoked_by_crl(pki, upki, upstream, start_config):
    up = upstream(cert="revoked")
    text = GATEWAY.replace("verify_name: {name}", "verify_name: {name}\n      crl: {upki}/up-root.crl")
    d, port, _ = start_config(text, upki=upki, backend=up.addr, name="api.internal", pp2="false",
                              client=CLIENT.format(upki=upki))
    assert refused_client(pki, port) == b""
    assert "result=upstream_certificate_revoked" in access(d)
    # The same CRL lets a good upstream certificate through.
    good = upstream()
    d, port, _ = start_config(text, upki=upki, backend=good.addr, name="api.internal",
                              pp2="false", client=CLIENT.format(upki=upki))
    assert tlsclient.echo_transfer(tlsclient.context(pki), port, 1000)[0]


def test_pkcs12_client_identity(pki, upki, upstream, start_config):
    up = upstream()
    client = "pkcs12: {upki}/kg-client.p12\n      passphrase_file: {upki}/kg-pass.txt"
    d, port, _ = start_config(GATEWAY, upki=upki, backend=up.addr, name="api.internal",
                              pp2="false", client=client.format(upki=upki))
    assert tlsclient.echo_transfer(tlsclient.context(pki), port, 1000)[0]
    assert dict(x[0] for x in up.peers[0]["subject"])["commonName"] == "ktlsgate.gateway"


def test_missing_client_cert_file_is_a_startup_error(pki, upki, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(GATEWAY.format(pki=pki, port=free_port(), upki=upki, backend="127.0.0.1:9",
                                   name="api.internal", pp2="false",
                                   client="client_cert: /nonexistent/kg.crt\n"
                                          "      client_key: /nonexistent/kg.key"))
    out = subprocess.run([BIN, "--check", "--config", str(path)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2
    assert (f"{path}:11:20: client_cert: /nonexistent/kg.crt: No such file or directory"
            in out.stderr), out.stderr


def test_upstream_handshake_timeout(pki, upki, start_config):
    """A backend that accepts and never answers the ClientHello."""
    silent = Backend(lambda b, c: c.recv(1 << 16) and threading.Event().wait(5))
    try:
        text = GATEWAY.replace("global:\n", "global:\n  timeouts: {{ handshake: 500ms }}\n")
        d, port, _ = start_config(text, upki=upki, backend=silent.addr, name="api.internal",
                                  pp2="false", client=CLIENT.format(upki=upki))
        assert refused_client(pki, port) == b""
        line = access(d)
        assert "result=upstream_handshake_timeout" in line, line
    finally:
        silent.close()


def test_reload_starts_a_new_session_cache(pki, upki, upstream, start_config):
    """Sessions never cross generations: after a reload (the trust may have
    changed) the first upstream handshake is a full one again."""
    up = upstream()
    d, port = gateway(start_config, upki, up)
    for _ in range(2):
        assert tlsclient.echo_transfer(tlsclient.context(pki), port, 1000)[0]
    assert d.ctl("reload")["ok"]
    for _ in range(2):
        assert tlsclient.echo_transfer(tlsclient.context(pki), port, 1000)[0]
    lines = d.wait_access(4)
    assert [("upstream_resumed=1" in l) for l in lines] == [False, True, False, True], lines


def test_egress_proxy_v2_inside_tls_has_addresses_only(upki, upstream, start_config):
    up = upstream(tls_pp2)
    text = EGRESS.replace('    listen_tls: false\n', '    listen_tls: false\n    proxy_protocol: true\n')
    d, port, _ = start_config(text, upki=upki, backend=up.addr, name="api.internal",
                              client=CLIENT.format(upki=upki))
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"ping")
    assert s.recv(4) == b"ping"
    s.close()
    hdr = up.received[0]
    assert hdr.startswith(b"\r\n\r\n\x00\r\nQUIT\n\x21\x11")
    assert len(hdr) == 16 + 12  # IPv4 addresses and ports, no TLS TLVs: the client spoke plain TCP
    assert "result=ok" in access(d)


@pytest.mark.parametrize("extra,want", [
    ("max_version: \"1.2\"\n      ciphers: ECDHE-ECDSA-CHACHA20-POLY1305",
     ("TLSv1.2", "ECDHE-ECDSA-CHACHA20-POLY1305")),
    ("ciphersuites: TLS_AES_256_GCM_SHA384", ("TLSv1.3", "TLS_AES_256_GCM_SHA384")),
], ids=["tls12-chacha", "tls13-aes256"])
def test_backend_tls_protocol_policy(pki, upki, upstream, start_config, extra, want):
    up = upstream()
    text = GATEWAY.replace("verify_name: {name}", "verify_name: {name}\n      " + extra)
    d, port, _ = start_config(text, upki=upki, backend=up.addr, name="api.internal",
                              pp2="false", client=CLIENT.format(upki=upki))
    assert tlsclient.echo_transfer(tlsclient.context(pki), port, 1000)[0]
    assert up.ciphers == [want]
    assert f"upstream_tls={want[0]}" in access(d)


@pytest.mark.parametrize("engine", ["auto", "dpdk"])
def test_backend_tls_never_takes_the_dpdk_engine(pki, upki, upstream, start_config, engine):
    """The DPDK record engine does no TLS towards a backend: auto takes the
    existing paths for backend_tls, an explicit dpdk falls back to OpenSSL."""
    up = upstream()
    text = GATEWAY.replace("global:\n", f"global:\n  record_engine: {engine}\n", 1)
    d, port, _ = start_config(text, ready=False, upki=upki, backend=up.addr, name="api.internal", pp2="false",
                              client=CLIENT.format(upki=upki))
    try:
        d.wait_ready()
    except Exception:
        if "built without DPDK" in d.text():
            pytest.skip("this build has DPDK off (-Ddpdk=disabled)")
        raise
    ok, _ = tlsclient.echo_transfer(tlsclient.context(pki), port, 1 * MIB)
    assert ok
    line = access(d)
    assert "result=ok" in line and "path=dpdk" not in line, line
    stats = d.ctl("show stats")
    assert stats["ok"], stats
    total = stats["total"]
    assert total["relay_dpdk"] == 0 and total["dpdk"]["connections"] == 0, total
    assert total["dpdk"]["fallbacks"] == (1 if engine == "dpdk" else 0), total["dpdk"]
    assert total["upstream"]["handshakes"] == 1, total["upstream"]
