"""Bad input never starts a half-working daemon: one line naming the flag or
file and the reason, exit status 2."""
import os
import shutil
import socket
import subprocess

import pytest

from conftest import BIN, free_port


def run(*args, timeout=20):
    return subprocess.run([BIN, *args], capture_output=True, timeout=timeout, text=True)


@pytest.fixture
def base(pki):
    def make(**over):
        opts = {"--listen": f"127.0.0.1:{free_port()}",
                "--cert": f"{pki}/server-ecdsa-chain.crt", "--key": f"{pki}/server-ecdsa.key",
                "--client-ca": f"{pki}/client-ca.pem", "--backend": "127.0.0.1:9"}
        opts.update(over)
        args = []
        for k, v in opts.items():
            if v is not None:
                args += [k, v]
        return args
    return make


def assert_one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("ktlsgate: "), lines[0]
    for n in needles:
        assert n in lines[0], lines[0]


def test_check_ok(base):
    r = run(*base(), "--check")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ktlsgate: check ok"


def test_check_with_crl_ok(base, pki):
    assert run(*base(), "--crl", f"{pki}/crl-bundle.pem", "--check").returncode == 0


def test_key_does_not_match(base, pki):
    r = run(*base(**{"--key": f"{pki}/wrong-key.key"}), "--check")
    assert_one_line_error(r, f"--key {pki}/wrong-key.key: key does not match certificate",
                          "server-ecdsa-chain.crt")


def test_expired_server_certificate(base, pki):
    r = run(*base(**{"--cert": f"{pki}/expired-server.crt", "--key": f"{pki}/expired-server.key"}))
    assert_one_line_error(r, "expired-server.crt: certificate expired (notAfter=")


def test_missing_file(base, pki):
    r = run(*base(**{"--cert": f"{pki}/nope.crt"}), "--check")
    assert_one_line_error(r, f"--cert {pki}/nope.crt", "No such file or directory")


def test_garbage_pem(base, tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("this is not a certificate\n")
    r = run(*base(**{"--cert": str(junk)}), "--check")
    assert_one_line_error(r, f"--cert {junk}: no certificate found")


def test_client_ca_without_certificates(base, tmp_path):
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    r = run(*base(**{"--client-ca": str(empty)}), "--check")
    assert_one_line_error(r, f"--client-ca {empty}: no certificates found")


def test_client_ca_that_is_not_a_ca(base, pki):
    r = run(*base(**{"--client-ca": f"{pki}/client.crt"}), "--check")
    assert_one_line_error(r, "is not a CA")


def test_bad_crl(base, pki):
    r = run(*base(), "--crl", f"{pki}/root-ca.crt", "--check")
    assert_one_line_error(r, f"--crl {pki}/root-ca.crt: no CRL found")


def test_crl_missing_for_a_trusted_ca_is_a_startup_error(base, pki):
    """chain mode: every CA we trust needs its CRL, said before serving."""
    r = run(*base(), "--crl", f"{pki}/intermediate.crl", "--check")
    assert_one_line_error(r, f"--crl {pki}/intermediate.crl: no CRL for client CA",
                          "CN=ktlsgate demo root CA", "set crl_missing: allow")


def test_unreadable_key(base, pki, tmp_path):
    if os.geteuid() == 0:
        # root reads anything: make the path a directory instead
        key = tmp_path / "key-dir"
        key.mkdir()
        r = run(*base(**{"--key": str(key)}), "--check")
        assert_one_line_error(r, f"--key {key}")
    else:
        key = tmp_path / "k.key"
        shutil.copy(f"{pki}/server-ecdsa.key", key)
        key.chmod(0)
        assert_one_line_error(run(*base(**{"--key": str(key)}), "--check"), "Permission denied")


def test_address_in_use(base):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    r = run(*base(**{"--listen": f"127.0.0.1:{port}"}))
    assert_one_line_error(r, f"--listen 127.0.0.1:{port}: Address already in use")
    s.close()


@pytest.mark.parametrize("args,message", [
    (["--workers", "abc"], "--workers abc: not a positive integer"),
    (["--handshake-timeout", "soon"], "--handshake-timeout soon: not a positive number of seconds"),
    (["--log-format", "xml"], "--log-format xml: expected text or json"),
    (["--ktls", "maybe"], "--ktls maybe: expected auto, off or required"),
    (["--bogus"], "unknown option --bogus (see --help)"),
    (["--backend", "nowhere"], "--backend nowhere: expected HOST:PORT"),
    (["--listen", "127.0.0.1:99999"], "--listen 127.0.0.1:99999: expected HOST:PORT"),
])
def test_bad_flags(base, args, message):
    assert_one_line_error(run(*base(), *args), message)


@pytest.mark.parametrize("missing", ["--listen", "--cert", "--client-ca", "--backend"])
def test_missing_required_option(base, missing):
    over = {missing: None}
    if missing == "--cert":
        over["--key"] = None
    assert_one_line_error(run(*base(**over)), f"missing required option {missing}")


def ktls_available():
    try:
        with open("/proc/sys/net/ipv4/tcp_available_ulp") as f:
            return "tls" in f.read().split()
    except OSError:
        return False


def test_ktls_required_without_kernel_support_refuses(base):
    if ktls_available():
        pytest.skip("this kernel has kTLS: 'required' starts here (tested in the UML guest)")
    r = run(*base(), "--ktls", "required")
    assert_one_line_error(r, "--ktls required: kernel TLS unavailable (TCP_ULP tls:")


def test_ktls_auto_falls_back_with_a_log_line(pki, echo_backend, start_daemon):
    if ktls_available():
        pytest.skip("this kernel has kTLS: fallback is tested with --ktls off below")
    d, port = start_daemon(echo_backend.addr)
    assert "kTLS: unavailable (TCP_ULP tls: No such file or directory" in d.text()
    assert "using userspace relay" in d.text()


def test_ktls_off_says_so(echo_backend, start_daemon):
    d, _ = start_daemon(echo_backend.addr, "--ktls", "off", "--record-engine", "openssl")
    assert "kTLS: off (--ktls off)" in d.text()
    assert "relay=user" in d.text()


def test_help_and_version():
    assert run("--help").returncode == 0
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("ktlsgate ")
