"""Who gets through, and how refused clients are told (alert) and logged."""
import hashlib
import os
import ssl
import subprocess
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import tlsclient
from conftest import resumption_args

V12, V13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3


GOOD = [(V12, "ecdsa", "ECDHE-ECDSA-AES128-GCM-SHA256"), (V12, "rsa", "ECDHE-RSA-AES128-GCM-SHA256"),
        (V13, "ecdsa", None)]  # TLS 1.3 + RSA: test_tls13_rsa_identity_via_s_client


@pytest.mark.parametrize("version,kind,ciphers", GOOD, ids=["tls12-ecdsa", "tls12-rsa", "tls13-ecdsa"])
def test_good_client_each_version_and_server_key(pki, echo_backend, start_daemon, version, kind,
                                                  ciphers):
    """Both identities on one listener: the client's algorithms pick the key."""
    d, port = start_daemon(echo_backend.addr, identities=("ecdsa", "rsa"))
    ctx = tlsclient.context(pki, version=version, ciphers=ciphers)
    ok, info = tlsclient.echo_transfer(ctx, port, 4096)
    assert ok
    assert info["version"] == ("TLSv1.2" if version == V12 else "TLSv1.3")
    key = x509.load_der_x509_certificate(info["peer_cert"]).public_key()
    assert isinstance(key, rsa.RSAPublicKey if kind == "rsa" else ec.EllipticCurvePublicKey)
    line = d.wait_access(1)[-1]
    assert "result=ok" in line and "subject=\"CN=client.demo,O=ktlsgate demo\"" in line


def test_tls13_rsa_identity_via_s_client(pki, echo_backend, start_daemon):
    d, port = start_daemon(echo_backend.addr, identities=("ecdsa", "rsa"))
    out = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3", "-sigalgs",
         "rsa_pss_rsae_sha256", "-client_sigalgs", "ECDSA+SHA256", "-cert", f"{pki}/client.crt", "-cert_chain",
         f"{pki}/intermediate-ca.crt", "-key", f"{pki}/client.key", "-CAfile",
         f"{pki}/root-ca.crt", "-servername", "localhost", "-verify_return_error"],
        input=b"ping\n", capture_output=True, timeout=20)
    text = out.stdout.decode(errors="replace")
    assert "Peer signature type: RSA-PSS" in text
    assert "Verify return code: 0 (ok)" in text


def test_client_chain_with_intermediate_and_direct_root_client(pki, echo_backend, start_daemon):
    d, port = start_daemon(echo_backend.addr)
    assert tlsclient.echo_transfer(tlsclient.context(pki), port, 1000)[0]
    assert tlsclient.echo_transfer(tlsclient.context(pki, cert="client-root", chain=False),
                                   port, 1000)[0]
    lines = d.wait_access(2)
    assert all("result=ok" in l for l in lines)


def test_leaf_without_its_intermediate_is_unknown_ca(pki, echo_backend, start_daemon):
    d, port = start_daemon(echo_backend.addr)
    err = tlsclient.refusal(tlsclient.context(pki, chain=False), port)
    assert "UNKNOWN_CA" in err.upper().replace(" ", "_")
    assert "result=unknown_ca" in d.wait_access(1)[-1]


REFUSALS = [
    # cert, TLS version, alert text in the client's error, access-log reason
    (None, V13, "CERTIFICATE_REQUIRED", "no_certificate"),
    (None, V12, "HANDSHAKE_FAILURE", "no_certificate"),
    ("client-other", V13, "UNKNOWN_CA", "unknown_ca"),
    ("client-other", V12, "UNKNOWN_CA", "unknown_ca"),
    ("client-expired", V13, "CERTIFICATE_EXPIRED", "certificate_expired"),
    ("client-expired", V12, "CERTIFICATE_EXPIRED", "certificate_expired"),
    ("client-notyet", V13, "CERTIFICATE_EXPIRED", "certificate_not_yet_valid"),
    ("client-notyet", V12, "CERTIFICATE_EXPIRED", "certificate_not_yet_valid"),
    ("client-serveronly", V13, "UNSUPPORTED_CERTIFICATE", "bad_purpose"),
]


@pytest.mark.parametrize("cert,version,alert,reason", REFUSALS,
                         ids=[f"{r[3]}-{r[1].name}" for r in REFUSALS])
def test_refusal_alert_and_log(pki, sink_backend, start_daemon, cert, version, alert, reason):
    d, port = start_daemon(sink_backend.addr)
    err = tlsclient.refusal(tlsclient.context(pki, cert=cert, version=version), port)
    assert alert in err.upper().replace(" ", "_"), err
    line = d.wait_access(1)[-1]
    assert f"result={reason}" in line
    if cert:  # the log names who was refused
        assert "subject=\"CN=" in line and "serial=" in line and "serial=-" not in line
    assert sink_backend.connections == 0  # nothing reached the backend


def test_revoked_with_crl(pki, sink_backend, start_daemon):
    d, port = start_daemon(sink_backend.addr, "--crl", f"{pki}/crl-bundle.pem")
    err = tlsclient.refusal(tlsclient.context(pki, cert="client-revoked"), port)
    assert "CERTIFICATE_REVOKED" in err.upper().replace(" ", "_"), err
    assert "result=certificate_revoked" in d.wait_access(1)[-1]
    reply = tlsclient.half_close_exchange(tlsclient.context(pki), port, b"not revoked")
    assert reply == hashlib.sha256(b"not revoked").hexdigest().encode()
    assert "result=ok" in d.wait_access(2)[-1]
    assert sink_backend.connections == 1


def test_crl_for_sent_intermediate_missing_refuses_chain(pki, sink_backend, start_daemon):
    """CRL checking covers the whole chain: the intermediate the client sends
    has no CRL loaded, so nothing under it passes."""
    d, port = start_daemon(sink_backend.addr, "--crl", f"{pki}/root.crl")
    err = tlsclient.refusal(tlsclient.context(pki), port)
    assert "result=crl_missing" in d.wait_access(1)[-1], err
    assert sink_backend.connections == 0


def test_tls11_client_refused(pki, echo_backend, start_daemon):
    d, port = start_daemon(echo_backend.addr)
    out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_1",
                          "-cipher", "DEFAULT:@SECLEVEL=0"],
                         input=b"", capture_output=True, timeout=20)
    assert out.returncode != 0
    assert "result=protocol_version" in d.wait_access(1)[-1]


@pytest.mark.parametrize("version", [V12, V13], ids=["tls12", "tls13"])
def test_session_resumption(pki, echo_backend, start_daemon, version, resumption):
    d, port = start_daemon(echo_backend.addr, *resumption_args(resumption))
    ctx = tlsclient.context(pki, version=version)
    ok1, info1 = tlsclient.echo_transfer(ctx, port, 100)
    ok2, info2 = tlsclient.echo_transfer(ctx, port, 100, session=info1["session"])
    assert ok1 and ok2 and info2["reused"]
    lines = d.wait_access(2)
    assert "resumed=1" in lines[-1] and "subject=\"CN=client.demo" in lines[-1]


def s_client_session(pki, port, *args, send=b"x\n", expect=b"x\n", cert="client"):
    """Runs openssl s_client, writes send, waits (bounded) until expect shows
    up in its output, then stops it. Returns stdout+stderr."""
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-ign_eof",
           "-cert", f"{pki}/{cert}.crt", "-key", f"{pki}/{cert}.key", "-CAfile",
           f"{pki}/root-ca.crt", *args]
    if cert == "client":
        cmd += ["-cert_chain", f"{pki}/intermediate-ca.crt"]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    p.stdin.write(send)
    p.stdin.flush()
    out, deadline = b"", time.time() + 15
    os.set_blocking(p.stdout.fileno(), False)
    while expect not in out and p.poll() is None and time.time() < deadline:
        chunk = p.stdout.read()
        out += chunk or b""
        time.sleep(0.05)
    p.kill()
    out += p.communicate()[0] or b""
    return out.decode(errors="replace")


def test_one_ticket_per_handshake(pki, echo_backend, start_daemon, resumption):
    d, port = start_daemon(echo_backend.addr, *resumption_args(resumption))
    text = s_client_session(pki, port, "-tls1_3", "-msg")
    assert "x" in text
    assert text.count("NewSessionTicket") == 1, text[-3000:]


def test_openssl_s_client_good_and_bad(pki, echo_backend, start_daemon):
    d, port = start_daemon(echo_backend.addr)
    good = s_client_session(pki, port, "-verify_return_error", send=b"hello through ktlsgate\n",
                            expect=b"hello through ktlsgate\n")
    assert "Verify return code: 0 (ok)" in good
    assert good.count("hello through ktlsgate") == 1  # echoed back (input is not shown)
    bad = s_client_session(pki, port, cert="client-other", expect=b"alert")
    assert "alert unknown ca" in bad


def test_curl_through_http_backend(pki, http_backend, start_daemon):
    d, port = start_daemon(http_backend.addr)
    base = ["curl", "-sS", "--max-time", "10", "--cacert", f"{pki}/root-ca.crt"]
    ok = subprocess.run(base + ["--cert", f"{pki}/client-chain.crt", "--key", f"{pki}/client.key",
                                "-w", "%{http_code}", f"https://localhost:{port}/"],
                        capture_output=True, timeout=20)
    assert ok.stdout == b"hello200"
    refused = subprocess.run(base + [f"https://localhost:{port}/"], capture_output=True, timeout=20)
    assert refused.returncode != 0
    assert b"certificate required" in refused.stderr
