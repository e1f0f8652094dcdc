"""Every ktlsgatectl subcommand against the real daemon, in the form for
people and in --json, plus its exit statuses."""
import json
import os
import ssl
import subprocess

import pytest

import tlsclient
from conftest import BIN
from test_control import crl_bundle, key_pem, load, new_server_identity, pem

CTL = os.environ.get("KTLSGATECTL_BIN", os.path.join(os.path.dirname(BIN), "ktlsgatectl"))
V13 = ssl.TLSVersion.TLSv1_3


def ctl(d, *args, stdin=None):
    return subprocess.run([CTL, "-s", d.ctl_path, *args], capture_output=True, text=True,
                          input=stdin, timeout=30)


def both(d, *args):
    """(human output, parsed --json reply), both exit 0."""
    human, js = ctl(d, *args), ctl(d, "--json", *args)
    assert human.returncode == 0, (args, human.stderr)
    assert js.returncode == 0, (args, js.stderr)
    reply = json.loads(js.stdout)
    assert reply["ok"], reply
    return human.stdout, reply


@pytest.fixture
def running(pki, echo_backend, start_daemon):
    d, port = start_daemon(echo_backend.addr, "--crl", f"{pki}/crl-bundle.pem")
    s = tlsclient.connect(tlsclient.context(pki, version=V13), port)
    s.sendall(b"hi")
    assert s.recv(2) == b"hi"
    yield d, port, s
    s.close()


def test_show_commands_human_and_json(pki, running):
    d, port, s = running
    out, r = both(d, "show", "info")
    assert f"127.0.0.1:{port}" in out and "0.1.0" in out and r["pid"] == d.proc.pid
    out, r = both(d, "show", "stats")
    assert "handshakes_ok" in out and r["total"]["handshakes_ok"] == 1
    assert "session cache entries: 1" in out and r["session_cache_entries"] == 1
    out, r = both(d, "show", "certs")
    assert "CN=localhost,O=ktlsgate demo" in out and "NEXT UPDATE" in out
    assert {c["kind"] for c in r["certs"]} == {"server", "client_ca"} and len(r["crls"]) == 3
    out, r = both(d, "show", "conns")
    assert "CN=client.demo" in out and "spiffe://demo.test/client" in out
    assert r["conns"][0]["bytes_in"] == 2
    out, r = both(d, "show", "generation")
    assert "command line" in out and r["generation"] == 1
    out, r = both(d, "metrics")
    assert "# TYPE ktlsgate_handshakes_ok_total counter" in out and "ktlsgate_generation" in r["text"]


def test_reload_and_cert_update(pki, running):
    d, port, s = running
    out = ctl(d, "reload")
    assert out.returncode == 0 and "generation 2" in out.stdout, out
    new_cert, new_key, inter = new_server_identity(pki, cn="ctl-rotated")
    name = f"{pki}/server-ecdsa-chain.crt"
    out = ctl(d, "cert", "update", name, "-", stdin=pem(new_cert, inter) + key_pem(new_key))
    assert out.returncode == 0, out.stderr
    r = json.loads(ctl(d, "--json", "show", "certs").stdout)
    assert any("ctl-rotated" in c["subject"] for c in r["certs"] if c["kind"] == "server")
    # A refused commit: exit 1 and the daemon's reason on stderr.
    wrong = pem(new_cert, inter) + key_pem(load(pki, "server-rsa.key", key=True))
    out = ctl(d, "cert", "update", name, "-", stdin=wrong)
    assert out.returncode == 1 and "key does not match" in out.stderr, out
    assert ctl(d, "--json", "show", "generation").stdout.count('"generation":3') == 1


def test_step_by_step_transaction_and_crl(pki, running):
    d, port, s = running
    name = f"{pki}/crl-bundle.pem"
    assert ctl(d, "crl", "begin", name).returncode == 0
    path = os.path.join(os.path.dirname(d.ctl_path), "new.crl")
    with open(path, "w") as f:
        f.write(crl_bundle(pki, revoke=[load(pki, "client.crt")]))
    assert ctl(d, "crl", "set", name, path).returncode == 0
    assert ctl(d, "crl", "commit", name).returncode == 0
    s.settimeout(2)
    try:
        s.sendall(b"x")
        assert s.recv(1) == b""
    except (OSError, ssl.SSLError):
        pass  # cut: the new CRL revokes this client
    out = ctl(d, "crl", "abort", name)
    assert out.returncode == 1 and "no open transaction" in out.stderr


def test_policy_set_and_conn_kill(pki, running, tmp_path):
    d, port, s = running
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"deny": [{"name": "ctl-deny", "cn": "nobody.demo"}]}))
    out = ctl(d, "policy", "set", "default", str(rules))
    assert out.returncode == 0, out.stderr
    out = ctl(d, "conn", "kill", "--subject", "CN=client.demo,O=ktlsgate demo")
    assert out.returncode == 0 and "1" in out.stdout, out
    r = json.loads(ctl(d, "--json", "conn", "kill", "424242").stdout)
    assert r == {"ok": True, "killed": 0}


def test_exit_statuses(pki, running, tmp_path):
    d, port, s = running
    assert ctl(d, "frobnicate").returncode == 2
    assert ctl(d, "cert", "begin").returncode == 2
    out = ctl(d, "ca", "begin", "/etc/passwd")
    assert out.returncode == 1 and "names no such file" in out.stderr
    missing = subprocess.run([CTL, "-s", str(tmp_path / "none.sock"), "show", "info"],
                             capture_output=True, text=True, timeout=30)
    assert missing.returncode == 3 and "cannot connect" in missing.stderr


def test_drain(pki, running):
    d, port, s = running
    assert ctl(d, "drain").returncode == 0
    d.wait_log(r"draining connections")
    s.sendall(b"z")
    assert s.recv(1) == b"z"
    s.close()
    assert d.proc.wait(20) == 0
