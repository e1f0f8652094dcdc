"""The control socket with the real daemon: inspection, transactional
certificate/CA/CRL changes, reloads that change nothing when they fail,
revocation that cuts live connections, kills, metrics, and bad requests."""
import hashlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

import tlsclient
from conftest import control, resumption_args

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pki"))
import gen_pki  # noqa: E402

V13 = ssl.TLSVersion.TLSv1_3


def load(pki, name, key=False):
    with open(f"{pki}/{name}", "rb") as f:
        data = f.read()
    return serialization.load_pem_private_key(data, None) if key else x509.load_pem_x509_certificate(data)


def pem(*certs):
    return b"".join(c.public_bytes(Encoding.PEM) for c in certs).decode()


def key_pem(k):
    return k.private_bytes(Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption()).decode()


def new_server_identity(pki, cn="localhost"):
    inter, inter_key = load(pki, "intermediate-ca.crt"), load(pki, "intermediate-ca.key", key=True)
    k = gen_pki.ec_key()
    c = gen_pki.build(gen_pki.name(cn), k, inter, inter_key, eku=[ExtendedKeyUsageOID.SERVER_AUTH],
                      sans=(x509.DNSName("localhost"),))
    return c, k, inter


def crl_bundle(pki, revoke=()):
    """root.crl + intermediate.crl (revoking the given certs) + revoked-intermediate.crl."""
    root, root_key = load(pki, "root-ca.crt"), load(pki, "root-ca.key", key=True)
    inter, inter_key = load(pki, "intermediate-ca.crt"), load(pki, "intermediate-ca.key", key=True)
    out = gen_pki.Out(os.path.join(pki, "tmp-crl"))
    with open(f"{pki}/revoked-intermediate-ca.crt", "rb") as f:
        bad_inter = x509.load_pem_x509_certificate(f.read())
    data = out.crl("root.crl", root, root_key, revoked=(bad_inter.serial_number,))
    data += out.crl("inter.crl", inter, inter_key,
                    revoked=[load(pki, "client-revoked.crt").serial_number] +
                    [c.serial_number for c in revoke])
    with open(f"{pki}/crl-bundle.pem", "rb") as f:
        third = f.read().split(b"-----END X509 CRL-----\n")[2] + b"-----END X509 CRL-----\n"
    return (data + third).decode()


def peer_serial(info):
    return format(x509.load_der_x509_certificate(info["peer_cert"]).serial_number, "X")


def test_show_commands(pki, echo_backend, start_daemon):
    d, port = start_daemon(echo_backend.addr, "--crl", f"{pki}/crl-bundle.pem")
    info = d.ctl("show info")
    assert info["ok"] and info["version"] and info["generation"] == 1 and info["pid"] == d.proc.pid
    assert [w["id"] for w in info["workers"]] == [0, 1]
    assert info["listeners"][0]["listen"] == [f"127.0.0.1:{port}"]
    assert "kTLS" not in info["ktls"]["description"] and info["ktls"]["available"] in (True, False)
    certs = d.ctl("show certs")
    server = [c for c in certs["certs"] if c["kind"] == "server"][0]
    assert server["subject"] == "CN=localhost,O=ktlsgate demo" and "DNS:localhost" in server["sans"]
    assert 360 <= server["days_left"] <= 366 and not server["warn"]
    assert [c["subject"] for c in certs["certs"] if c["kind"] == "client_ca"] == \
        ["CN=ktlsgate demo root CA,O=ktlsgate demo"]
    assert len(certs["crls"]) == 3 and all(not c["stale"] for c in certs["crls"])
    assert sorted(c["revoked"] for c in certs["crls"]) == [0, 1, 1]

    s = tlsclient.connect(tlsclient.context(pki, version=V13), port)
    s.sendall(b"hello")
    assert s.recv(5) == b"hello"
    conns = d.ctl("show conns")["conns"]
    assert len(conns) == 1
    c = conns[0]
    assert c["subject"] == "CN=client.demo,O=ktlsgate demo" and c["spiffe"] == "spiffe://demo.test/client"
    assert c["state"] == "relay" and c["path"] in ("user", "ktls", "dpdk") and c["bytes_in"] == 5
    assert c["version"] == "TLSv1.3" and c["sni"] == "localhost"
    stats = d.ctl("show stats")
    assert stats["total"]["conns_active"] == 1 and stats["total"]["handshakes_ok"] == 1
    assert 0 < stats["total"]["handshake_latency_us"]["p50"] <= stats["total"]["handshake_latency_us"]["p99"]
    assert len(stats["workers"]) == 2
    s.close()
    gen = d.ctl("show generation")
    assert gen["generation"] == 1 and gen["source"] == "command line" and gen["runtime_changes"] == 0


def test_bad_requests(pki, echo_backend, start_daemon):
    d, port = start_daemon(echo_backend.addr)

    def raw(data, read=True):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(d.ctl_path)
            s.sendall(data)
            out = b""
            while read and not out.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
            return out

    assert json.loads(raw(b"not json\n"))["error"].startswith("bad JSON")
    assert json.loads(raw(b"[1,2]\n"))["error"].startswith("a request must be a JSON object")
    assert json.loads(raw(b'{"nocmd":1}\n'))["error"] == 'missing "cmd"'
    assert "unknown command" in json.loads(raw(b'{"cmd":"format disk"}\n'))["error"]
    # The reply quotes 64 bytes of the name: cutting an "é" in half must
    # still give a reply (found by tests/fuzz/fuzz_ctl.c).
    cut = json.loads(raw(json.dumps({"cmd": "x" + "\u00e9" * 40}).encode() + b"\n"))["error"]
    assert cut.startswith("unknown command 'x" + "\u00e9" * 31 + "?'"), cut
    # A NUL byte in the line is bad JSON, not a command cut short at the NUL.
    assert json.loads(raw(b'{"cmd":"show info"}\x00x\n'))["error"].startswith("bad JSON")
    assert "missing \"name\"" in json.loads(raw(b'{"cmd":"cert begin"}\n'))["error"]
    assert "give \"id\"" in json.loads(raw(b'{"cmd":"conn kill"}\n'))["error"]
    assert "positive integer" in json.loads(raw(b'{"cmd":"conn kill","id":"x"}\n'))["error"]
    big = b'{"cmd":"show info","pad":"' + b"x" * (1 << 20) + b'"}'
    assert "over" in json.loads(raw(big))["error"]
    # Two requests in one write, and a request split across writes.
    two = raw(b'{"cmd":"show generation"}\n{"cmd":"show generation"}\n')
    assert two.count(b'"generation":1') >= 1
    # A silent client does not block others.
    silent = socket.socket(socket.AF_UNIX)
    silent.connect(d.ctl_path)
    silent.sendall(b'{"cmd":')
    assert d.ctl("show info")["ok"]
    silent.close()
    # Concurrent clients.
    results = []

    def hammer():
        for _ in range(20):
            results.append(control(d.ctl_path, {"cmd": "show stats"})["ok"])

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 160
    assert d.proc.poll() is None
    assert tlsclient.echo_transfer(tlsclient.context(pki), port, 100)[0]


def test_permission_denied_peer(pki, echo_backend, start_daemon):
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    d, port = start_daemon(echo_backend.addr)
    os.chmod(os.path.dirname(d.ctl_path), 0o755)
    os.chmod(d.ctl_path, 0o666)  # even with the file open to all, SO_PEERCRED decides
    # The daemon refuses at accept: its reply and close can beat our request,
    # whose write then fails with EPIPE while the reply is already ours to read.
    code = (f"import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect({d.ctl_path!r})\n"
            "try: s.sendall(b'{\"cmd\":\"show info\"}\\n')\n"
            "except BrokenPipeError: pass\n"
            "sys.stdout.write(s.recv(4096).decode())")
    out = subprocess.run(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
                          "/usr/bin/python3", "-c", code], capture_output=True, text=True, timeout=20)
    assert out.stdout, out.stderr
    reply = json.loads(out.stdout)
    assert not reply["ok"] and reply["error"].startswith("permission denied: uid 65534")
    assert "control_denied" in d.text()


def test_rotate_server_cert_during_a_256mib_transfer(pki, sink_backend, start_daemon):
    """The transfer that began on the old certificate finishes byte-exact; a
    handshake after the commit sees the new one."""
    cert_file = f"{pki}/server-ecdsa-chain.crt"
    d, port = start_daemon(sink_backend.addr)
    payload = os.urandom(256 << 20)
    result = {}
    t = threading.Thread(target=lambda: result.update(
        echo=tlsclient.half_close_exchange(tlsclient.context(pki, version=V13), port, payload,
                                           timeout=300)))
    t.start()
    deadline = time.time() + 30
    while time.time() < deadline and not any(c["bytes_in"] for c in d.ctl("show conns")["conns"]):
        time.sleep(0.05)
    new_cert, new_key, inter = new_server_identity(pki, cn="rotated.localhost")
    assert d.ctl("cert begin", name=cert_file)["ok"]
    assert d.ctl("cert set", name=cert_file, pem=pem(new_cert, inter) + key_pem(new_key))["ok"]
    r = d.ctl("cert commit", name=cert_file)
    assert r["ok"] and r["generation"] == 2, r
    mid = [c for c in d.ctl("show conns")["conns"] if c["state"] == "relay"]
    assert mid and 0 < mid[0]["bytes_in"] < len(payload), "the commit landed mid-transfer"
    s2 = tlsclient.connect(tlsclient.context(pki), port)
    subject = x509.load_der_x509_certificate(s2.getpeercert(binary_form=True)).subject
    assert subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "rotated.localhost"
    s2.close()
    t.join(300)
    assert result["echo"] == hashlib.sha256(payload).hexdigest().encode(), "byte-exact"
    assert len(payload) in sink_backend.received
    assert d.ctl("show generation")["runtime_changes"] == 2  # the cert and its key


def test_broken_changes_are_refused_and_change_nothing(pki, echo_backend, start_daemon, tmp_path):
    cert_file = f"{pki}/server-ecdsa-chain.crt"
    d, port = start_daemon(echo_backend.addr, "--crl", f"{pki}/crl-bundle.pem")
    new_cert, new_key, inter = new_server_identity(pki)
    wrong_key = gen_pki.ec_key()
    assert d.ctl("cert begin", name=cert_file)["ok"]
    assert "already open" in d.ctl("cert begin", name=cert_file)["error"]
    assert d.ctl("cert set", name=cert_file, pem=pem(new_cert, inter) + key_pem(wrong_key))["ok"]
    r = d.ctl("cert commit", name=cert_file)
    assert not r["ok"] and "key does not match certificate" in r["error"], r
    assert "no certificate" in d.ctl("cert set", name=cert_file, pem="garbage")["error"]
    assert d.ctl("cert set", name=cert_file, pem=pem(inter, new_cert) + key_pem(new_key))["ok"]
    r = d.ctl("cert commit", name=cert_file)
    assert not r["ok"] and ("did not issue" in r["error"] or "key does not match" in r["error"]), r
    assert d.ctl("cert abort", name=cert_file)["ok"]
    assert "no open transaction" in d.ctl("cert commit", name=cert_file)["error"]
    # A CRL signed by the wrong key for its issuer name.
    root = load(pki, "root-ca.crt")
    forged = gen_pki.Out(str(tmp_path)).crl("forged.crl", root, gen_pki.ec_key())
    crl_file = f"{pki}/crl-bundle.pem"
    assert d.ctl("crl begin", name=crl_file)["ok"]
    assert d.ctl("crl set", name=crl_file, pem=forged.decode())["ok"]
    r = d.ctl("crl commit", name=crl_file)
    assert not r["ok"] and "not signed by its CA" in r["error"], r
    assert d.ctl("crl abort", name=crl_file)["ok"]
    assert "names no such file" in d.ctl("ca begin", name="/etc/passwd")["error"]
    assert d.ctl("show generation")["generation"] == 1
    ok, info = tlsclient.echo_transfer(tlsclient.context(pki), port, 100)
    assert ok and peer_serial(info) == format(load(pki, "server-ecdsa.crt").serial_number, "X")


def test_crl_update_cuts_the_revoked_client_within_a_second(pki, echo_backend, start_daemon,
                                                            resumption):
    d, port = start_daemon(echo_backend.addr, "--crl", f"{pki}/crl-bundle.pem",
                           *resumption_args(resumption))
    victim_ctx = tlsclient.context(pki, version=V13)
    victim = tlsclient.connect(victim_ctx, port)
    bystander = tlsclient.connect(tlsclient.context(pki, cert="client-wild", version=V13), port)
    for s in (victim, bystander):
        s.sendall(b"ping")
        assert s.recv(4) == b"ping"
    session = victim.session
    crl_file = f"{pki}/crl-bundle.pem"
    assert d.ctl("crl begin", name=crl_file)["ok"]
    assert d.ctl("crl set", name=crl_file, pem=crl_bundle(pki, revoke=[load(pki, "client.crt")]))["ok"]
    t0 = time.time()
    assert d.ctl("crl commit", name=crl_file)["ok"]
    victim.settimeout(1.0)
    with pytest.raises((ConnectionResetError, ssl.SSLError, OSError)):
        victim.sendall(b"x")
        data = victim.recv(1)
        if data == b"":
            raise OSError("closed")
    assert time.time() - t0 < 1.5
    bystander.sendall(b"still here")
    assert bystander.recv(10) == b"still here"
    err = tlsclient.refusal(tlsclient.context(pki, version=V13), port)
    assert "CERTIFICATE_REVOKED" in err.upper().replace(" ", "_"), err
    # A ticket from before the revocation must not get the client back in.
    try:
        s = tlsclient.connect(victim_ctx, port, session=session)
        s.sendall(b"x")
        got = s.recv(1)
        assert got == b"", "a revoked client resumed its session"
    except (ssl.SSLError, OSError):
        pass
    assert "revoked_killed" in d.text() and "end=killed" in d.text()
    if resumption == "cache":
        assert d.ctl("show stats")["total"]["session_cache"]["refused"] >= 1
    bystander.close()


def test_conn_kill_by_id_serial_subject_spiffe(pki, echo_backend, start_daemon):
    d, port = start_daemon(echo_backend.addr)

    def open_one(cert="client"):
        s = tlsclient.connect(tlsclient.context(pki, cert=cert, version=V13), port)
        s.sendall(b"hi")
        assert s.recv(2) == b"hi"
        return s

    def dead(s):
        s.settimeout(2)
        try:
            s.sendall(b"x")
            return s.recv(1) == b""
        except (OSError, ssl.SSLError):
            return True

    serial = format(load(pki, "client.crt").serial_number, "X")
    for how in ({"serial": serial.lower()}, {"subject": "CN=client.demo,O=ktlsgate demo"},
                {"spiffe": "spiffe://demo.test/client"}):
        victim, other = open_one(), open_one("client-wild")
        r = d.ctl("conn kill", **how)
        assert r["ok"] and r["killed"] == 1, (how, r)
        assert dead(victim) and not dead(other)
        other.close()
    s = open_one()
    cid = [c["id"] for c in d.ctl("show conns")["conns"] if c["subject"].startswith("CN=client.demo")][0]
    assert d.ctl("conn kill", id=cid)["killed"] == 1 and dead(s)
    assert d.ctl("conn kill", id=999999)["killed"] == 0


def test_policy_set_applies_to_new_connections(pki, echo_backend, start_daemon):
    d, port = start_daemon(echo_backend.addr)
    kept = tlsclient.connect(tlsclient.context(pki, version=V13), port)
    kept.sendall(b"a")
    assert kept.recv(1) == b"a"
    r = d.ctl("policy set", listener="default", deny=[{"name": "no-client-demo", "cn": "client.demo"}])
    assert r["ok"] and r["generation"] == 2, r
    err = tlsclient.refusal(tlsclient.context(pki), port)
    assert "ACCESS_DENIED" in err.upper().replace(" ", "_"), err
    assert 'rule=no-client-demo' in d.wait_access(1)[-1]
    assert tlsclient.echo_transfer(tlsclient.context(pki, cert="client-wild"), port, 10)[0]
    kept.sendall(b"b")
    assert kept.recv(1) == b"b", "established connections keep their generation"
    bad = d.ctl("policy set", listener="default", allow=[{"subject_regex": "("}])
    assert not bad["ok"] and "not a POSIX extended regex" in bad["error"]
    assert "unknown rule condition" in d.ctl("policy set", listener="default", allow=[{"colour": "x"}])["error"]
    assert d.ctl("show generation")["generation"] == 2
    # reload drops runtime changes: client.demo is welcome again.
    assert d.ctl("reload")["ok"]
    assert tlsclient.echo_transfer(tlsclient.context(pki), port, 10)[0]
    kept.close()


CONFIG = """
listeners:
  - name: main
    listen: "127.0.0.1:{port}"
    identities:
      - {{ cert: "{pki}/server-ecdsa-chain.crt", key: "{pki}/server-ecdsa.key" }}
    client_ca: "{pki}/client-ca.pem"
    backends: "{backend}"
"""


def test_reload_and_sighup_from_the_file(pki, echo_backend, start_config):
    d, port, path = start_config(CONFIG, backend=echo_backend.addr)
    assert tlsclient.echo_transfer(tlsclient.context(pki), port, 10)[0]
    with open(path, "a") as f:
        f.write("    deny: [{ cn: client.demo }]\n")
    os.kill(d.proc.pid, signal.SIGHUP)
    d.wait_log(r"generation 2 live")
    err = tlsclient.refusal(tlsclient.context(pki), port)
    assert "ACCESS_DENIED" in err.upper().replace(" ", "_"), err
    with open(path, "a") as f:
        f.write("    crl_check: sometimes\n")
    r = d.ctl("reload")
    assert not r["ok"] and "crl_check: expected chain or leaf" in r["error"] and f"{path}:" in r["error"]
    assert d.ctl("show generation")["generation"] == 2
    assert "reload_failed" in d.text()
    text = open(path).read().replace("crl_check: sometimes", "crl_check: leaf")
    text = text.replace(f"127.0.0.1:{port}", "127.0.0.1:1")
    with open(path, "w") as f:
        f.write(text)
    r = d.ctl("reload")
    assert not r["ok"] and "listen addresses changed" in r["error"]


def parse_prometheus(text):
    """Checks the exposition format line by line; returns {family: [(labels, value)]}."""
    families, types = {}, {}
    sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*)\})? '
                        r'(-?[0-9.eE+-]+|\+Inf|NaN)$')
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram"), line
            assert name not in types, f"TYPE twice: {name}"
            types[name] = kind
            continue
        m = sample.match(line)
        assert m, f"not a sample line: {line!r}"
        name = m.group(1)
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        family = name if name in types else base
        assert family in types, f"sample before its TYPE: {line}"
        families.setdefault(family, []).append((m.group(3) or "", float(m.group(4))))
    return families, types


def test_metrics_parse_and_count(pki, echo_backend, start_daemon):
    d, port = start_daemon(echo_backend.addr, "--crl", f"{pki}/crl-bundle.pem")
    assert tlsclient.echo_transfer(tlsclient.context(pki), port, 10)[0]
    tlsclient.refusal(tlsclient.context(pki, cert="client-other"), port)
    d.wait_access(2)
    families, types = parse_prometheus(d.ctl("metrics")["text"])
    assert types["ktlsgate_handshake_duration_seconds"] == "histogram"
    buckets = [v for l, v in families["ktlsgate_handshake_duration_seconds"] if "le=" in l]
    assert buckets == sorted(buckets) and buckets[-1] == 1
    refused = dict(families["ktlsgate_handshakes_refused_total"])
    assert refused['reason="unknown_ca"'] == 1
    assert dict(families["ktlsgate_handshakes_ok_total"])[""] == 1
    assert len(families["ktlsgate_crl_next_update_timestamp_seconds"]) == 3
    not_after = families["ktlsgate_certificate_not_after_timestamp_seconds"][0][1]
    assert abs(not_after - (time.time() + 365 * 86400)) < 3 * 86400
    assert "ktlsgate_kernel_tls_stat" in types


def test_drain_on_the_socket(pki, echo_backend, start_daemon):
    d, port = start_daemon(echo_backend.addr)
    s = tlsclient.connect(tlsclient.context(pki, version=V13), port)
    s.sendall(b"x")
    assert s.recv(1) == b"x"
    assert d.ctl("drain")["ok"]
    d.wait_log(r"draining connections")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        time.sleep(0.5)
        tlsclient.connect(tlsclient.context(pki), port)
    s.sendall(b"y")
    assert s.recv(1) == b"y", "live connections finish"
    s.close()
    assert d.proc.wait(20) == 0


def test_metrics_over_http(pki, echo_backend, start_daemon):
    import urllib.error
    import urllib.request
    from conftest import free_port
    mport = free_port()
    d, port = start_daemon(echo_backend.addr, "--metrics-listen", f"127.0.0.1:{mport}")
    assert tlsclient.echo_transfer(tlsclient.context(pki), port, 10)[0]
    d.wait_access(1)
    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        families, _ = parse_prometheus(r.read().decode())
    assert dict(families["ktlsgate_handshakes_ok_total"])[""] == 1
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{mport}/", timeout=10)
    assert e.value.code == 404


def test_metrics_listen_in_use_is_a_startup_error(pki, echo_backend):
    from conftest import BIN
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    r = subprocess.run([BIN, "--listen", "127.0.0.1:0", "--cert", f"{pki}/server-ecdsa-chain.crt",
                        "--key", f"{pki}/server-ecdsa.key", "--client-ca", f"{pki}/client-ca.pem",
                        "--backend", echo_backend.addr, "--control-socket", "/tmp/kg-unused.sock",
                        "--metrics-listen", f"127.0.0.1:{busy.getsockname()[1]}"],
                       capture_output=True, text=True, timeout=20)
    busy.close()
    assert r.returncode == 2 and "--metrics-listen 127.0.0.1:" in r.stderr and "cannot listen" in r.stderr, r.stderr


def test_kill_revoked_can_be_turned_off(pki, echo_backend, start_config):
    text = CONFIG.replace("listeners:", "global:\n  kill_revoked_on_crl_update: false\nlisteners:") + \
        '    crl: "{pki}/crl-bundle.pem"\n'
    d, port, _ = start_config(text, backend=echo_backend.addr)
    s = tlsclient.connect(tlsclient.context(pki, version=V13), port)
    s.sendall(b"a")
    assert s.recv(1) == b"a"
    name = f"{pki}/crl-bundle.pem"
    assert d.ctl("crl begin", name=name)["ok"]
    assert d.ctl("crl set", name=name, pem=crl_bundle(pki, revoke=[load(pki, "client.crt")]))["ok"]
    assert d.ctl("crl commit", name=name)["ok"]
    s.sendall(b"b")
    assert s.recv(1) == b"b", "kill_revoked_on_crl_update: false keeps live connections"
    err = tlsclient.refusal(tlsclient.context(pki, version=V13), port)
    assert "CERTIFICATE_REVOKED" in err.upper().replace(" ", "_"), err
    s.close()


def test_member_of_the_socket_group_is_let_in(pki, echo_backend, start_daemon):
    import grp
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    try:
        grp.getgrnam("ktlsgate")
    except KeyError:
        pytest.skip("no group ktlsgate on this machine (the package creates it)")
    d, port = start_daemon(echo_backend.addr)
    os.chmod(os.path.dirname(d.ctl_path), 0o755)
    code = (f"import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect({d.ctl_path!r}); "
            "s.sendall(b'{\"cmd\":\"show generation\"}\\n'); sys.stdout.write(s.recv(4096).decode())")
    out = subprocess.run(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--groups", "ktlsgate",
                          "/usr/bin/python3", "-c", code], capture_output=True, text=True, timeout=20)
    assert out.stdout, out.stderr
    assert json.loads(out.stdout)["ok"], "a supplementary member of the socket's group may talk"
