"""Issue 4 through the YAML file: who may pass (allow/deny rules on every
certificate field), the exact alert and log line for each refusal, per-SNI
sites with their own server certificates and client CAs, CRL modes, client
auth modes, and the PROXY v2 header the backend receives."""
import hashlib
import ssl
import struct

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

import tlsclient
from conftest import Backend, resumption_yaml

V13 = ssl.TLSVersion.TLSv1_3
V12 = ssl.TLSVersion.TLSv1_2

BASE = """
global:
  workers: 2
listeners:
  - name: main
    listen: "127.0.0.1:{port}"
    identities:
      - {{ cert: "{pki}/server-ecdsa-chain.crt", key: "{pki}/server-ecdsa.key" }}
    client_ca: "{pki}/client-ca.pem"
    backends: "{backend}"
"""


def cert_facts(pki, name):
    with open(f"{pki}/{name}.crt", "rb") as f:
        c = x509.load_pem_x509_certificate(f.read())
    return {"serial": format(c.serial_number, "X"),
            "fingerprint": hashlib.sha256(c.public_bytes(Encoding.DER)).hexdigest()}


def with_rules(rules):
    return BASE + "".join("    " + line + "\n" for line in rules.strip().splitlines())


# (rules, client cert, passes?, rule named in the refusal)
RULES = [
    ("allow:\n  - cn: client.demo", "client", True, None),
    ("allow:\n  - cn: client.demo", "client-payments", False, "no allow rule matched"),
    ("allow:\n  - name: payments\n    uri: \"spiffe://demo.test/payments/*\"", "client-payments", True, None),
    ("allow:\n  - name: payments\n    uri: \"spiffe://demo.test/payments/*\"", "client", False, "no allow rule matched"),
    ("allow:\n  - uri: spiffe://demo.test/client", "client", True, None),
    ("allow:\n  - dns: client.demo", "client", True, None),
    ("allow:\n  - dns: \"*.wild.demo\"", "client-wild", True, None),
    ("allow:\n  - dns: \"*.demo\"", "client-wild", False, "no allow rule matched"),
    ("allow:\n  - email: ops@example.com", "client-mail", True, None),
    ("allow:\n  - subject_regex: \"^CN=client\\\\.demo,\"", "client", True, None),
    ("allow:\n  - subject_regex: \"^CN=client\\\\.demo,\"", "client-wild", False, "no allow rule matched"),
    ("allow:\n  - subject: \"CN=client.demo,O=ktlsgate demo\"", "client", True, None),
    ("allow:\n  - issuer: \"CN=ktlsgate demo intermediate CA,O=ktlsgate demo\"", "client", True, None),
    ("allow:\n  - issuer: \"CN=ktlsgate demo intermediate CA,O=ktlsgate demo\"", "client-root", False,
     "no allow rule matched"),
    ("allow:\n  - cn: [nobody, client.demo]\n    issuer: \"CN=nobody\"", "client", False,
     "no allow rule matched"),
    ("deny:\n  - name: stolen\n    serial: \"{client_serial}\"", "client", False, "stolen"),
    ("deny:\n  - name: stolen\n    serial: \"{client_serial}\"", "client-wild", True, None),
    ("deny:\n  - fingerprint: \"{client_fp}\"", "client", False, "deny[0]"),
    ("allow:\n  - fingerprint: \"{client_fp}\"", "client", True, None),
    ("allow:\n  - cn: client.demo\ndeny:\n  - cn: client.demo", "client", False, "deny[0]"),
]


@pytest.mark.parametrize("rules,cert,passes,rule", RULES,
                         ids=[f"{i}-{r[1]}-{'pass' if r[2] else 'refuse'}" for i, r in enumerate(RULES)])
def test_rule(pki, echo_backend, start_config, rules, cert, passes, rule):
    facts = cert_facts(pki, "client")
    text = with_rules(rules.replace("{client_serial}", facts["serial"])
                      .replace("{client_fp}", facts["fingerprint"]))
    d, port, _ = start_config(text, backend=echo_backend.addr)
    ctx = tlsclient.context(pki, cert=cert, chain=cert != "client-root")
    if passes:
        ok, _ = tlsclient.echo_transfer(ctx, port, 1000)
        assert ok
        assert "result=ok" in d.wait_access(1)[-1]
        return
    err = tlsclient.refusal(ctx, port)
    assert "ACCESS_DENIED" in err.upper().replace(" ", "_"), err
    line = d.wait_access(1)[-1]
    assert "result=access_denied" in line, line
    assert f'rule="{rule}"' in line or f"rule={rule} " in line, line
    assert "fingerprint=" in line and "serial=" in line, line
    assert echo_backend.connections == 0


def test_access_denied_over_tls12_too(pki, echo_backend, start_config):
    d, port, _ = start_config(with_rules("allow:\n  - cn: someone-else"), backend=echo_backend.addr)
    err = tlsclient.refusal(tlsclient.context(pki, version=V12), port)
    assert "ACCESS_DENIED" in err.upper().replace(" ", "_"), err
    assert "result=access_denied" in d.wait_access(1)[-1]


REFUSALS = [
    # cert, extra config, alert, log reason
    ("client-under-revoked", 'crl: "{pki}/crl-bundle.pem"', "CERTIFICATE_REVOKED", "certificate_revoked"),
    ("client-revoked", 'crl: "{pki}/crl-bundle.pem"', "CERTIFICATE_REVOKED", "certificate_revoked"),
    ("client-serveronly", "", "UNSUPPORTED_CERTIFICATE", "bad_purpose"),
    ("client-other", "", "UNKNOWN_CA", "unknown_ca"),
    ("client-expired", "", "CERTIFICATE_EXPIRED", "certificate_expired"),
    ("client-notyet", "", "CERTIFICATE_EXPIRED", "certificate_not_yet_valid"),
]


@pytest.mark.parametrize("cert,extra,alert,reason", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusal(pki, sink_backend, start_config, cert, extra, alert, reason):
    d, port, _ = start_config(with_rules(extra.replace("{pki}", pki)), backend=sink_backend.addr)
    err = tlsclient.refusal(tlsclient.context(pki, cert=cert), port)
    assert alert in err.upper().replace(" ", "_"), err
    assert f"result={reason}" in d.wait_access(1)[-1]
    assert sink_backend.connections == 0


def test_eku_check_can_be_turned_off(pki, echo_backend, start_config):
    d, port, _ = start_config(with_rules("require_client_eku: false"), backend=echo_backend.addr)
    ok, _ = tlsclient.echo_transfer(tlsclient.context(pki, cert="client-serveronly"), port, 100)
    assert ok


def test_crl_leaf_mode_ignores_revoked_intermediate(pki, echo_backend, start_config):
    d, port, _ = start_config(with_rules(f'crl: "{pki}/crl-bundle.pem"\ncrl_check: leaf'),
                              backend=echo_backend.addr)
    ok, _ = tlsclient.echo_transfer(tlsclient.context(pki, cert="client-under-revoked"), port, 100)
    assert ok
    err = tlsclient.refusal(tlsclient.context(pki, cert="client-revoked"), port)
    assert "CERTIFICATE_REVOKED" in err.upper().replace(" ", "_"), err


def test_crl_missing_allow(pki, echo_backend, start_config):
    """Only the root's CRL: the intermediate the client sends has none."""
    d, port, _ = start_config(with_rules(f'crl: "{pki}/root.crl"\ncrl_missing: allow'),
                              backend=echo_backend.addr)
    ok, _ = tlsclient.echo_transfer(tlsclient.context(pki), port, 100)
    assert ok
    err = tlsclient.refusal(tlsclient.context(pki, cert="client-under-revoked"), port)
    assert "CERTIFICATE_REVOKED" in err.upper().replace(" ", "_"), err


def test_client_auth_optional(pki, echo_backend, start_config):
    d, port, _ = start_config(with_rules("client_auth: optional"), backend=echo_backend.addr)
    ok, _ = tlsclient.echo_transfer(tlsclient.context(pki, cert=None), port, 100)
    assert ok, "a client without a certificate passes"
    ok, _ = tlsclient.echo_transfer(tlsclient.context(pki), port, 100)
    assert ok
    err = tlsclient.refusal(tlsclient.context(pki, cert="client-other"), port)
    assert "UNKNOWN_CA" in err.upper().replace(" ", "_"), "a sent certificate must verify"


def test_client_auth_required_without_cert(pki, echo_backend, start_config):
    d, port, _ = start_config(BASE, backend=echo_backend.addr)
    err = tlsclient.refusal(tlsclient.context(pki, cert=None), port)
    assert "CERTIFICATE_REQUIRED" in err.upper().replace(" ", "_"), err
    assert "result=no_certificate" in d.wait_access(1)[-1]


def test_client_auth_none(pki, echo_backend, start_config):
    d, port, _ = start_config(with_rules("client_auth: none"), backend=echo_backend.addr)
    ok, _ = tlsclient.echo_transfer(tlsclient.context(pki, cert=None), port, 100)
    assert ok


SNI = """
global:
  workers: 2
listeners:
  - name: sni
    listen: "127.0.0.1:{port}"
    identities:
      - {{ cert: "{pki}/server-ecdsa-chain.crt", key: "{pki}/server-ecdsa.key", default: true }}
      - {{ cert: "{pki}/server-rsa-chain.crt", key: "{pki}/server-rsa.key" }}
      - cert: "{pki}/server-alpha-chain.crt"
        key: "{pki}/server-alpha.key"
        passphrase_file: "{pki}/server-pass.txt"
        sni: alpha.test
      - pkcs12: "{pki}/server-beta.p12"
        passphrase_file: "{pki}/server-pass.txt"
        sni: "*.beta.test"
    client_ca: "{pki}/client-ca.pem"
    backends: "{backend}"
    sites:
      - names: "*.beta.test"
        client_ca: "{pki}/other-ca.crt"
        backends: "{other_backend}"
"""


def peer_cn(info):
    cert = x509.load_der_x509_certificate(info["peer_cert"])
    return cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value


def test_per_sni_certificates_and_client_cas(pki, echo_backend, start_config):
    other = Backend(echo_backend.handler)
    try:
        d, port, _ = start_config(SNI, backend=echo_backend.addr, other_backend=other.addr)
        ok, info = tlsclient.echo_transfer(tlsclient.context(pki), port, 100, sni="alpha.test")
        assert ok and peer_cn(info) == "alpha.test"
        ok, info = tlsclient.echo_transfer(tlsclient.context(pki), port, 100, sni="localhost")
        assert ok and peer_cn(info) == "localhost"
        assert echo_backend.connections == 2 and other.connections == 0
        # *.beta.test trusts only the other CA, and routes to its own backend.
        ok, info = tlsclient.echo_transfer(tlsclient.context(pki, cert="client-other"), port, 100,
                                           sni="api.beta.test")
        assert ok and peer_cn(info) == "beta.test"
        assert other.connections == 1
        err = tlsclient.refusal(tlsclient.context(pki), port, sni="api.beta.test")
        assert "UNKNOWN_CA" in err.upper().replace(" ", "_"), err
        err = tlsclient.refusal(tlsclient.context(pki, cert="client-other"), port, sni="alpha.test")
        assert "UNKNOWN_CA" in err.upper().replace(" ", "_"), err
        lines = d.wait_access(5)
        beta = [l for l in lines if "sni=api.beta.test" in l and "result=ok" in l]
        assert beta and "site=*.beta.test" in beta[0], lines
    finally:
        other.close()


def test_sni_rsa_and_ecdsa_for_the_default_name(pki, echo_backend, start_config):
    d, port, _ = start_config(SNI, backend=echo_backend.addr, other_backend=echo_backend.addr)
    for ciphers in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256"):
        ctx = tlsclient.context(pki, version=V12, ciphers=ciphers)
        ok, info = tlsclient.echo_transfer(ctx, port, 100)
        assert ok and info["cipher"] == ciphers


@pytest.mark.parametrize("version", [V12, V13], ids=["tls12", "tls13"])
def test_session_does_not_cross_sites(pki, echo_backend, start_config, resumption, version):
    text = SNI.replace('client_ca: "{pki}/other-ca.crt"', 'client_ca: "{pki}/client-ca.pem"')
    text = text.replace("  workers: 2\n", "  workers: 2\n" + resumption_yaml(resumption))
    d, port, _ = start_config(text, backend=echo_backend.addr, other_backend=echo_backend.addr)
    ctx = tlsclient.context(pki, version=version)
    ctx.check_hostname = False
    ok, first = tlsclient.echo_transfer(ctx, port, 100, sni="alpha.test")
    assert ok
    ok, same = tlsclient.echo_transfer(ctx, port, 100, sni="alpha.test", session=first["session"])
    assert ok and same["reused"], "resumes on the same site"
    ok, other = tlsclient.echo_transfer(ctx, port, 100, sni="x.beta.test", session=first["session"])
    assert ok and not other["reused"], "a session from alpha.test must not resume on *.beta.test"
    if resumption == "cache":
        assert d.ctl("show stats")["total"]["session_cache"]["refused"] == 1


def parse_proxy_v2(data):
    """Strict PROXY v2 parser (haproxy proxy-protocol.txt §2.2): returns
    (header length, source (ip, port), dest (ip, port), {type: value})."""
    assert data[:12] == b"\r\n\r\n\x00\r\nQUIT\n", data[:16]
    assert data[12] == 0x21, "version 2, PROXY command"
    assert data[13] == 0x11, "TCP over IPv4"
    length = struct.unpack("!H", data[14:16])[0]
    body = data[16:16 + length]
    src = (".".join(map(str, body[0:4])), struct.unpack("!H", body[8:10])[0])
    dst = (".".join(map(str, body[4:8])), struct.unpack("!H", body[10:12])[0])
    tlvs, pos = {}, 12
    while pos < len(body):
        t, n = body[pos], struct.unpack("!H", body[pos + 1:pos + 3])[0]
        tlvs[t] = body[pos + 3:pos + 3 + n]
        pos += 3 + n
    assert pos == len(body)
    return 16 + length, src, dst, tlvs


def parse_ssl_tlv(value):
    client, verify = value[0], struct.unpack("!I", value[1:5])[0]
    subs, pos = {}, 5
    while pos < len(value):
        t, n = value[pos], struct.unpack("!H", value[pos + 1:pos + 3])[0]
        subs[t] = value[pos + 3:pos + 3 + n].decode()
        pos += 3 + n
    return client, verify, subs


def test_proxy_v2_header_with_tls_tlvs(pki, start_config):
    seen = []

    def capture(backend, c):
        data = b""
        while b"ping" not in data:
            d = c.recv(4096)
            if not d:
                break
            data += d
        seen.append(data)
        c.sendall(b"pong")

    backend = Backend(capture)
    try:
        d, port, _ = start_config(with_rules("proxy_protocol: true"), backend=backend.addr)
        s = tlsclient.connect(tlsclient.context(pki, version=V13), port)
        s.sendall(b"ping")
        assert s.recv(4) == b"pong"
        client_addr = s.getsockname()
        s.close()
    finally:
        backend.close()
    hlen, src, dst, tlvs = parse_proxy_v2(seen[0])
    assert seen[0][hlen:] == b"ping", "the client's bytes follow the header exactly"
    assert src == (client_addr[0], client_addr[1]) and dst == ("127.0.0.1", port)
    assert tlvs[0x02] == b"localhost", "authority = SNI"
    client, verify, subs = parse_ssl_tlv(tlvs[0x20])
    assert client == 0x01 | 0x02 and verify == 0
    assert subs[0x21] == "TLSv1.3"
    assert subs[0x22] == "client.demo"
    assert subs[0x23] == "TLS_AES_256_GCM_SHA384" or subs[0x23].startswith("TLS_")
    assert subs[0x24] == "ecdsa-with-SHA256"
    assert subs[0x25] == "EC256"
    assert tlvs[0xE0] == b"spiffe://demo.test/client"
    with open(f"{pki}/client.crt", "rb") as f:
        der = x509.load_pem_x509_certificate(f.read()).public_bytes(Encoding.DER)
    assert tlvs[0xE1] == hashlib.sha256(der).digest()


def test_config_check_ok_and_file_errors_name_the_yaml_position(pki, tmp_path):
    import subprocess
    from conftest import BIN
    good = tmp_path / "good.yaml"
    good.write_text(SNI.format(pki=pki, port=1, backend="127.0.0.1:1", other_backend="127.0.0.1:2"))
    r = subprocess.run([BIN, "--config", str(good), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(SNI.replace("server-alpha.key", "nope.key")
                   .format(pki=pki, port=1, backend="127.0.0.1:1", other_backend="127.0.0.1:2"))
    r = subprocess.run([BIN, "--config", str(bad), "--check"], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == (f"ktlsgate: {bad}:11:14: key: {pki}/nope.key: "
                                "No such file or directory"), r.stderr
    wrongpass = tmp_path / "wrongpass.yaml"
    (tmp_path / "pass").write_text("wrong\n")
    wrongpass.write_text(SNI.replace("{pki}/server-pass.txt", str(tmp_path / "pass"))
                         .format(pki=pki, port=1, backend="127.0.0.1:1", other_backend="127.0.0.1:2"))
    r = subprocess.run([BIN, "--config", str(wrongpass), "--check"], capture_output=True, text=True)
    assert r.returncode == 2 and "wrong passphrase" in r.stderr, r.stderr
    nopass = tmp_path / "nopass.yaml"
    nopass.write_text(SNI.replace('        passphrase_file: "{pki}/server-pass.txt"\n        sni: alpha.test',
                                  '        sni: alpha.test')
                      .format(pki=pki, port=1, backend="127.0.0.1:1", other_backend="127.0.0.1:2"))
    r = subprocess.run([BIN, "--config", str(nopass), "--check"], capture_output=True, text=True)
    assert r.returncode == 2 and "key is encrypted: give passphrase_file" in r.stderr, r.stderr
    p12 = tmp_path / "p12.yaml"
    p12.write_text(SNI.replace('passphrase_file: "{pki}/server-pass.txt"\n        sni: "*.beta.test"',
                               f'passphrase_file: "{tmp_path}/pass"\n        sni: "*.beta.test"')
                   .format(pki=pki, port=1, backend="127.0.0.1:1", other_backend="127.0.0.1:2"))
    r = subprocess.run([BIN, "--config", str(p12), "--check"], capture_output=True, text=True)
    assert r.returncode == 2 and "server-beta.p12: cannot open: wrong passphrase" in r.stderr, r.stderr


CLI = [
    # flags, client cert, passes?, rule named in the refusal
    (["--allow-cn", "client.demo"], "client", True, None),
    (["--allow-cn", "client.demo"], "client-wild", False, "no allow rule matched"),
    (["--allow-cn", "nobody", "--allow-dns", "*.wild.demo"], "client-wild", True, None),
    (["--allow-uri", "spiffe://demo.test/payments/*"], "client-payments", True, None),
    (["--allow-uri", "spiffe://demo.test/payments/*"], "client", False, "no allow rule matched"),
    (["--allow-subject", "^CN=client\\.demo,O=ktlsgate demo$"], "client", True, None),
    (["--allow-subject", "^CN=client\\.demo,O=ktlsgate demo$"], "client-mail", False,
     "no allow rule matched"),
    (["--allow-cn", "client.demo", "--deny-serial", "{client_serial}"], "client", False,
     "--deny-serial {client_serial}"),
]


@pytest.mark.parametrize("flags,cert,passes,rule", CLI, ids=[f"{i}-{c[1]}" for i, c in enumerate(CLI)])
def test_command_line_rules(pki, echo_backend, start_daemon, flags, cert, passes, rule):
    serial = cert_facts(pki, "client")["serial"]
    flags = [f.replace("{client_serial}", serial) for f in flags]
    d, port = start_daemon(echo_backend.addr, *flags)
    ctx = tlsclient.context(pki, cert=cert)
    if passes:
        assert tlsclient.echo_transfer(ctx, port, 100)[0]
        return
    err = tlsclient.refusal(ctx, port)
    assert "ACCESS_DENIED" in err.upper().replace(" ", "_"), err
    line = d.wait_access(1)[-1]
    assert "result=access_denied" in line and f'rule="{rule.replace("{client_serial}", serial)}"' in line, line
    assert echo_backend.connections == 0


@pytest.mark.parametrize("flag,value,message", [
    ("--allow-subject", "(", "--allow-subject: not a POSIX extended regex"),
    ("--deny-serial", "zz", "--deny-serial: not a serial number"),
    ("--allow-dns", "a.*.b", "--allow-dns: wildcard only as a leading"),
])
def test_command_line_rule_errors(pki, flag, value, message):
    import subprocess
    from conftest import BIN
    r = subprocess.run([BIN, "--listen", "127.0.0.1:1", "--cert", f"{pki}/server-ecdsa-chain.crt",
                        "--key", f"{pki}/server-ecdsa.key", "--client-ca", f"{pki}/client-ca.pem",
                        "--backend", "127.0.0.1:2", flag, value, "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith(f"ktlsgate: {message}"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


PAIR = """
listeners:
  - listen: "127.0.0.1:{port}"
    identities:
      - cert: "{pki}/server-alpha-chain.crt"
        key: "{pki}/server-alpha.key"
        passphrase_file: "{pki}/server-pass.txt"
        default: true
      - {{ cert: "{pki}/server-ecdsa-chain.crt", key: "{pki}/server-ecdsa.key", sni: localhost }}
      - {{ cert: "{pki}/server-rsa-chain.crt", key: "{pki}/server-rsa.key", sni: localhost }}
    client_ca: "{pki}/client-ca.pem"
    backends: "{backend}"
"""


def test_ecdsa_and_rsa_identities_for_one_name(pki, echo_backend, start_config):
    d, port, _ = start_config(PAIR, backend=echo_backend.addr)
    for ciphers in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256"):
        ok, info = tlsclient.echo_transfer(tlsclient.context(pki, version=V12, ciphers=ciphers),
                                           port, 100, sni="localhost")
        assert ok and info["cipher"] == ciphers and peer_cn(info) == "localhost"
    ctx = tlsclient.context(pki)
    ctx.check_hostname = False
    ok, info = tlsclient.echo_transfer(ctx, port, 100, sni="other.name")
    assert ok and peer_cn(info) == "alpha.test", "an unknown name gets the default identity"


def test_two_identities_of_one_key_type_for_one_name(pki, tmp_path):
    import subprocess
    from conftest import BIN
    path = tmp_path / "c.yaml"
    path.write_text(PAIR.replace("server-rsa", "server-ecdsa").format(pki=pki, port=1, backend="127.0.0.1:2"))
    r = subprocess.run([BIN, "--config", str(path), "--check"], capture_output=True, text=True)
    assert r.returncode == 2 and "a second ECDSA identity for the same names" in r.stderr, r.stderr
    assert f"{path}:10:" in r.stderr, r.stderr


def test_refusals_are_counted_per_reason(pki, echo_backend, start_config):
    d, port, _ = start_config(with_rules("allow:\n  - cn: client.demo"), backend=echo_backend.addr)
    assert tlsclient.echo_transfer(tlsclient.context(pki), port, 10)[0]
    tlsclient.refusal(tlsclient.context(pki, cert="client-wild"), port)
    tlsclient.refusal(tlsclient.context(pki, cert="client-wild"), port)
    tlsclient.refusal(tlsclient.context(pki, cert="client-other"), port)
    d.wait_access(4)
    d.stop()
    totals = [l for l in d.log_lines() if " totals " in l][-1]
    for field in ("connections=4", "handshakes_ok=1", "refused=3", "refused_access_denied=2",
                  "refused_unknown_ca=1"):
        assert field in totals.split(), totals


def test_listener_tls_versions_suites_and_groups(pki, echo_backend, start_config):
    text = with_rules('tls: {{ min_version: "1.3", ciphersuites: "TLS_CHACHA20_POLY1305_SHA256", '
                      'groups: "P-384" }}')
    d, port, _ = start_config(text, backend=echo_backend.addr)
    ok, info = tlsclient.echo_transfer(tlsclient.context(pki), port, 100)
    assert ok and info["version"] == "TLSv1.3" and info["cipher"] == "TLS_CHACHA20_POLY1305_SHA256"
    err = tlsclient.refusal(tlsclient.context(pki, version=V12), port)
    assert "PROTOCOL_VERSION" in err.upper().replace(" ", "_"), err
    assert "result=protocol_version" in d.wait_access(2)[-1]


def test_listener_tls12_cipher_list(pki, echo_backend, start_config):
    text = with_rules('tls: {{ max_version: "1.2", ciphers: "ECDHE-ECDSA-AES256-GCM-SHA384" }}')
    d, port, _ = start_config(text, backend=echo_backend.addr)
    ok, info = tlsclient.echo_transfer(tlsclient.context(pki), port, 100)
    assert ok and info["version"] == "TLSv1.2" and info["cipher"] == "ECDHE-ECDSA-AES256-GCM-SHA384"
    err = tlsclient.refusal(tlsclient.context(pki, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256"), port)
    assert "HANDSHAKE_FAILURE" in err.upper().replace(" ", "_"), err
    # Two workers: the accepted connection's line may come after the refusal's.
    assert any("result=no_shared_cipher" in l for l in d.wait_access(2))


def deep_client(pki, tmp_path):
    """leaf -> CA 2 -> CA 1 -> root: two CAs between the leaf and the anchor."""
    import os
    import sys
    from cryptography import x509 as cx509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pki"))
    import gen_pki
    with open(f"{pki}/root-ca.crt", "rb") as f:
        root = cx509.load_pem_x509_certificate(f.read())
    with open(f"{pki}/root-ca.key", "rb") as f:
        root_key = serialization.load_pem_private_key(f.read(), None)
    ca1_key, ca2_key, leaf_key = gen_pki.ec_key(), gen_pki.ec_key(), gen_pki.ec_key()
    ca1 = gen_pki.build(gen_pki.name("CA 1"), ca1_key, root, root_key, ca=True)
    ca2 = gen_pki.build(gen_pki.name("CA 2"), ca2_key, ca1, ca1_key, ca=True)
    leaf = gen_pki.build(gen_pki.name("deep.demo"), leaf_key, ca2, ca2_key,
                         eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    out = gen_pki.Out(str(tmp_path))
    out.cert("deep-chain.crt", leaf, ca2, ca1)
    out.key("deep.key", leaf_key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(f"{pki}/root-ca.crt")
    ctx.load_cert_chain(str(tmp_path / "deep-chain.crt"), str(tmp_path / "deep.key"))
    return ctx


@pytest.mark.parametrize("depth,passes", [(1, False), (2, True)])
def test_verify_depth_counts_intermediates(pki, echo_backend, start_config, tmp_path, depth, passes):
    """OpenSSL's (and nginx's) meaning: how many CAs may stand between the
    client's certificate and the trusted one."""
    d, port, _ = start_config(with_rules(f"verify_depth: {depth}"), backend=echo_backend.addr)
    assert tlsclient.echo_transfer(tlsclient.context(pki), port, 10)[0], "one intermediate"
    ctx = deep_client(pki, tmp_path)
    if passes:
        assert tlsclient.echo_transfer(ctx, port, 10)[0]
    else:
        tlsclient.refusal(ctx, port)
        assert "result=chain_too_long" in d.wait_access(2)[-1]


def test_bad_signature(pki, echo_backend, start_config, tmp_path):
    with open(f"{pki}/client.crt", "rb") as f:
        der = bytearray(x509.load_pem_x509_certificate(f.read()).public_bytes(Encoding.DER))
    der[-5] ^= 0x01  # inside the ECDSA signature
    import base64
    pem = (b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(bytes(der)) +
           b"-----END CERTIFICATE-----\n")
    with open(f"{pki}/intermediate-ca.crt", "rb") as f:
        (tmp_path / "bad-chain.crt").write_bytes(pem + f.read())
    d, port, _ = start_config(BASE, backend=echo_backend.addr)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(f"{pki}/root-ca.crt")
    ctx.load_cert_chain(str(tmp_path / "bad-chain.crt"), f"{pki}/client.key")
    err = tlsclient.refusal(ctx, port)
    e = err.upper().replace(" ", "_")
    assert "DECRYPT_ERROR" in e or "BAD_CERTIFICATE" in e, err
    assert "result=bad_signature" in d.wait_access(1)[-1]
    assert echo_backend.connections == 0
