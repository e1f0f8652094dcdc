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


# ---- per-backend tls blocks, failover, per-backend sessions, refusal counters ----

MULTI = """global:
  workers: 1
  timeouts: {{ handshake: 2s }}
listeners:
  - listen: "127.0.0.1:{port}"
    identities: [{{ cert: {pki}/server-ecdsa-chain.crt, key: {pki}/server-ecdsa.key }}]
    client_ca: {pki}/client-ca.pem
    backends:
{backends}{backend_tls}"""


def tls_lines(upki, client="kg-client", ca="up-root", name="api.internal", extra=()):
    """A tls block's keys: ktlsgate's client certificate, the CA, the name."""
    return [f"client_cert: {upki}/{client}.crt", f"client_key: {upki}/{client}.key",
            f"ca: {upki}/{ca}.crt", f"verify_name: {name}", *extra]


def entry(addr, tls=None):
    """One backends item: tls None inherits backend_tls, False is plain."""
    text = f'      - address: "{addr}"\n'
    if tls is False:
        return text + "        tls: false\n"
    if tls:
        text += "        tls:\n" + "".join(f"          {line}\n" for line in tls)
    return text


def listener_tls(upki, **kw):
    return "    backend_tls:\n" + "".join(f"      {line}\n" for line in tls_lines(upki, **kw))


def start_multi(start_config, backends, backend_tls=""):
    d, port, _ = start_config(MULTI, backends="".join(backends), backend_tls=backend_tls)
    return d, port


def backend_of(line):
    return line.split(" backend=")[1].split()[0]


def cn(peer):
    return dict(x[0] for x in peer["subject"])["commonName"]


def upstream_counts(d):
    """show stats' upstream refusals and the metrics' per-reason counters."""
    up = d.ctl("show stats")["total"]["upstream"]
    metrics = {}
    for line in d.ctl("metrics")["text"].splitlines():
        if line.startswith("ktlsgate_upstream_refused_total{reason="):
            reason, n = line[len('ktlsgate_upstream_refused_total{reason="'):].split('"} ')
            metrics[reason] = int(n)
    return up, metrics


def assert_refusals(d, **want):
    """Exactly these reasons counted, in show stats and in the metrics."""
    up, metrics = upstream_counts(d)
    got = {k: v for k, v in up["refusals"].items() if v}
    assert got == want, up
    assert {k: v for k, v in metrics.items() if v} == want, metrics
    assert set(metrics) == set(up["refusals"]), metrics  # one label per reason, zero or not
    assert up["refused"] == sum(want.values()), up


def test_two_backends_each_verified_with_its_own_pki(pki, upki, upstream, start_config):
    """The api backend's block names its client identity as PKCS#12, the db
    backend's as PEM: each block is a whole backend_tls."""
    api = upstream()
    db = upstream(cert="db", ca="db-root")
    p12 = [f"pkcs12: {upki}/kg-client.p12", f"passphrase_file: {upki}/kg-pass.txt",
           f"ca: {upki}/up-root.crt", "verify_name: api.internal"]
    d, port = start_multi(start_config, [
        entry(api.addr, p12),
        entry(db.addr, tls_lines(upki, "kg-db-client", "db-root", "db.internal"))])
    for _ in range(4):
        assert tlsclient.echo_transfer(tlsclient.context(pki), port, 1000)[0]
    lines = d.wait_access(4)
    assert all("result=ok" in l and "upstream_tls=TLSv1.3" in l for l in lines), lines
    assert sorted(backend_of(l) for l in lines) == sorted([api.addr, db.addr] * 2), lines
    # Each backend saw the client certificate of its own PKI.
    assert [cn(p) for p in api.peers] == ["ktlsgate.gateway"] * 2
    assert [cn(p) for p in db.peers] == ["ktlsgate.db-client"] * 2
    assert_refusals(d)


def test_swapped_backend_cas_refuse_with_the_reason(pki, upki, upstream, start_config):
    """Each backend's certificate checked against the other's CA: both
    attempts fail as unknown_ca, logged per backend, and the client is told."""
    api = upstream()
    db = upstream(cert="db", ca="db-root")
    d, port = start_multi(start_config, [
        entry(api.addr, tls_lines(upki, ca="db-root")),
        entry(db.addr, tls_lines(upki, "kg-db-client", "up-root", "db.internal"))])
    assert refused_client(pki, port) == b""
    line = access(d)
    assert "result=upstream_unknown_ca" in line, line
    for up in (api, db):
        assert d.wait_log(rf"upstream_refused backend={up.addr} reason=upstream_unknown_ca "
                          r'detail="backend certificate: ')
    assert_refusals(d, unknown_ca=2)
    assert api.peers == [] and db.peers == []  # no relayed byte reached either


def test_failover_uses_the_next_backends_own_tls(pki, upki, upstream, start_config):
    """The first backend (inheriting backend_tls) names the wrong host; the
    second has a tls block of its own (another PKI): the client is served
    by the second, verified with the second's CA and client certificate."""
    wrong = upstream(cert="wrong-name")
    db = upstream(cert="db", ca="db-root")
    d, port = start_multi(start_config, [
        entry(wrong.addr),
        entry(db.addr, tls_lines(upki, "kg-db-client", "db-root", "db.internal"))],
        listener_tls(upki))
    for _ in range(2):  # round robin: the first starts at the wrong one, the second not
        ok, _ = tlsclient.echo_transfer(tlsclient.context(pki), port, 100000)
        assert ok
    lines = d.wait_access(2)
    assert all("result=ok" in l and backend_of(l) == db.addr for l in lines), lines
    assert "backend certificate does not name" not in lines[0]  # the failed attempt's detail is its own line
    refusal = d.wait_log(r"upstream_refused .*").group(0)
    assert f"backend={wrong.addr}" in refusal and "reason=upstream_name_mismatch" in refusal
    assert [cn(p) for p in db.peers] == ["ktlsgate.db-client"] * 2
    assert_refusals(d, name_mismatch=1)
    assert d.ctl("show stats")["total"]["upstream"]["handshakes"] == 2


def test_failover_after_a_backend_handshake_timeout(pki, upki, upstream, start_config):
    """A backend that never answers the ClientHello costs timeouts.handshake,
    then the next backend serves the client."""
    silent = Backend(lambda b, c: c.recv(1 << 16) and threading.Event().wait(5))
    try:
        good = upstream()
        d, port = start_multi(start_config, [entry(silent.addr), entry(good.addr)],
                              listener_tls(upki))
        assert tlsclient.echo_transfer(tlsclient.context(pki), port, 1000)[0]
        line = access(d)
        assert "result=ok" in line and backend_of(line) == good.addr, line
        assert_refusals(d, handshake_timeout=1)
    finally:
        silent.close()


def test_tls_false_backend_is_plain_beside_a_tls_one(pki, upki, upstream, echo_backend,
                                                     start_config):
    up = upstream()
    d, port = start_multi(start_config, [entry(echo_backend.addr, False), entry(up.addr)],
                          listener_tls(upki))
    for _ in range(2):
        assert tlsclient.echo_transfer(tlsclient.context(pki), port, 1000)[0]
    lines = d.wait_access(2)
    by = {backend_of(l): l for l in lines}
    assert "upstream_tls=TLSv1.3" in by[up.addr], lines
    assert "upstream_tls=TLSv" not in by[echo_backend.addr], lines
    started = d.wait_log(r" start .*").group(0)
    assert f"backends={echo_backend.addr},{up.addr}(tls)" in started, started
    # show conns names each live connection's backend and its TLS version.
    held = [tlsclient.connect(tlsclient.context(pki), port) for _ in range(2)]
    try:
        for s in held:
            s.sendall(b"ping")
            assert s.recv(4) == b"ping"
        conns = {c["backend"]: c["upstream_tls"] for c in d.ctl("show conns")["conns"]}
        assert conns == {echo_backend.addr: None, up.addr: "TLSv1.3"}, conns
    finally:
        for s in held:
            s.close()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3],
                         ids=["up-tls12", "up-tls13"])
def test_sessions_are_kept_per_backend(pki, upki, upstream, start_config, version):
    """Two backends share one server context (the same ticket keys and
    session cache): a session offered across backends would be accepted, so
    a first handshake with either that resumes would show a crossing."""
    a = upstream(version=version)
    b = upstream(version=version, ctx=a.ctx)
    d, port = start_multi(start_config, [entry(a.addr), entry(b.addr)], listener_tls(upki))
    for _ in range(6):
        assert tlsclient.echo_transfer(tlsclient.context(pki), port, 1000)[0]
    assert a.resumed == [False, True, True] and b.resumed == [False, True, True]
    lines = d.wait_access(6)
    for up in (a, b):
        mine = [("upstream_resumed=1" in l) for l in lines if backend_of(l) == up.addr]
        assert mine == [False, True, True], lines
    up = d.ctl("show stats")["total"]["upstream"]
    assert (up["handshakes"], up["resumed"]) == (6, 4), up


def test_session_cache_size_per_backend(pki, upki, upstream, start_config):
    """session_cache: 0 in one backend's tls block turns resumption off for
    that backend only; the other keeps the default."""
    off = upstream()
    on = upstream()
    d, port = start_multi(start_config, [
        entry(off.addr, tls_lines(upki, extra=["session_cache: 0"])), entry(on.addr)],
        listener_tls(upki))
    for _ in range(6):
        assert tlsclient.echo_transfer(tlsclient.context(pki), port, 1000)[0]
    assert off.resumed == [False, False, False]
    assert on.resumed == [False, True, True]


def counted_case(name, upki, upstream):
    """(backend address, extra listener tls lines, expected reason, cleanup)."""
    if name == "connect_error":
        return f"127.0.0.1:{free_port()}", (), None
    if name == "handshake_failed":
        closer = Backend(lambda b, c: c.close())
        return closer.addr, (), closer.close
    if name == "handshake_timeout":
        silent = Backend(lambda b, c: c.recv(1 << 16) and threading.Event().wait(5))
        return silent.addr, (), silent.close
    if name == "client_cert_rejected":  # a TLS 1.2 backend that trusts another root
        return upstream(version=ssl.TLSVersion.TLSv1_2, ca="db-root").addr, (), None
    if name == "certificate_revoked":
        return upstream(cert="revoked").addr, (f"crl: {upki}/up-root.crl",), None
    if name == "no_client_cert":
        return upstream().addr, None, None
    certs = {"name_mismatch": "wrong-name", "unknown_ca": "unknown-ca",
             "certificate_expired": "expired"}
    return upstream(cert=certs[name]).addr, (), None


@pytest.mark.parametrize("reason", [
    "name_mismatch", "unknown_ca", "certificate_expired", "certificate_revoked",
    "no_client_cert", "client_cert_rejected", "handshake_failed", "handshake_timeout",
    "connect_error"])
def test_each_upstream_refusal_counted_under_its_reason(pki, upki, upstream, start_config,
                                                        reason):
    addr, extra, cleanup = counted_case(reason, upki, upstream)
    try:
        if extra is None:  # no client certificate at all
            tls = ["backend_tls:", f"  ca: {upki}/up-root.crt", "  verify_name: api.internal"]
            block = "".join(f"    {line}\n" for line in tls)
        else:
            block = listener_tls(upki, extra=extra)
        d, port = start_multi(start_config, [entry(addr)], block)
        assert refused_client(pki, port) == b""
        line = access(d)
        want = "backend_unavailable" if reason == "connect_error" else f"upstream_{reason}"
        assert f"result={want}" in line, line
        assert_refusals(d, **{reason: 1})
    finally:
        if cleanup:
            cleanup()


BAD_BACKENDS = """listeners:
  - listen: "127.0.0.1:8443"
    identities: [{{ cert: {pki}/server-ecdsa-chain.crt, key: {pki}/server-ecdsa.key }}]
    client_ca: {pki}/client-ca.pem
    backends:
      - "127.0.0.1:9"
{item}"""


def position(text, marker):
    """LINE:COL of marker's first character in text (1-based, as ktlsgate says)."""
    for n, line in enumerate(text.splitlines(), 1):
        if marker in line:
            return f"{n}:{line.index(marker) + 1}"
    raise AssertionError(f"{marker!r} not in the text")


ADDR = '      - address: "127.0.0.1:10"\n'


@pytest.mark.parametrize("item,marker,message", [
    (ADDR + "        tls:\n          verify_name: api.internal\n", "verify_name: api",
     "ca: required: the CA the backend's certificate must chain to"),
    (ADDR + "        tls: {{ ca: {upki}/up-root.crt }}\n", "{{ ca:", "verify_name: required"),
    (ADDR + "        tls: true\n", "true",
     "tls: expected a mapping (this backend's TLS settings) or false, got a boolean"),
    (ADDR + "        tls: {{ ca: {upki}/up-root.crt, verify_nam: x }}\n", "verify_nam:",
     "verify_nam: unknown key, did you mean 'verify_name'?"),
    ("      - tls: false\n", "tls: false", "address: required: where the backend listens"),
    ('      - address: "nowhere"\n', '"nowhere"', "address: 'nowhere':"),
    (ADDR + "        tls: {{ ca: {upki}/up-root.crt, verify_name: a, session_cache: 5000 }}\n",
     "5000", "session_cache: must be from 0 to 4096"),
    (ADDR + "        tls: {{ ca: {upki}/up-root.crt, verify_name: a, "
     "client_key: {upki}/kg-client.key }}\n", "{upki}/kg-client.key",
     "client_key: given without client_cert"),
    (ADDR + "        tls: {{ ca: /nonexistent/ca.pem, verify_name: a }}\n", "/nonexistent",
     "ca: /nonexistent/ca.pem: No such file or directory"),
    (ADDR + "        port: 3\n", "port: 3", "port: unknown key"),
], ids=["no-ca", "no-verify-name", "tls-true", "typo", "no-address", "bad-address",
        "session-cache-range", "key-without-cert", "missing-ca-file", "unknown-key"])
def test_bad_per_backend_tls_is_a_config_error(pki, upki, tmp_path, item, marker, message):
    path = tmp_path / "bad.yaml"
    text = BAD_BACKENDS.format(pki=pki, item=item.format(upki=upki))
    path.write_text(text)
    out = subprocess.run([BIN, "--check", "--config", str(path)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2, out.stderr
    assert f"{path}:{position(text, marker.format(upki=upki))}: {message}" in out.stderr, \
        out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


@pytest.mark.parametrize("backends,message", [
    ('      - address: "{up}"\n        tls: false\n',
     ":6:14: tls: must not be false with listen_tls: false"),
    ('      - "{up}"\n', ":2:5: backend_tls: required with listen_tls: false"),
])
def test_plain_listener_needs_tls_on_every_backend(upki, tmp_path, backends, message):
    text = ('listeners:\n  - listen: "127.0.0.1:8080"\n    listen_tls: false\n    backends:\n'
            + backends.format(up="127.0.0.1:9")
            + '      - address: "127.0.0.1:10"\n        tls: {{ ca: {upki}/up-root.crt, '
              'verify_name: api.internal }}\n')
    path = tmp_path / "bad.yaml"
    path.write_text(text.format(upki=upki))
    out = subprocess.run([BIN, "--check", "--config", str(path)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2 and message in out.stderr, out.stderr


def test_plain_listener_with_tls_on_every_backend(upki, upstream, start_config):
    up = upstream(tls_http)
    text = ('global:\n  workers: 1\nlisteners:\n  - listen: "127.0.0.1:{port}"\n'
            '    listen_tls: false\n    backends:\n{backends}')
    d, port, _ = start_config(text, backends=entry(up.addr, tls_lines(upki)))
    out = subprocess.run(["curl", "-sS", "--max-time", "10", f"http://127.0.0.1:{port}/x"],
                         capture_output=True, text=True, timeout=20)
    assert out.stdout == "hello egress", out.stderr
    assert "result=ok" in access(d) and "upstream_tls=TLSv1.3" in access(d)
