"""--user/--group: bind as root, then serve as an unprivileged user with no
capabilities; a non-root start cannot name another user."""
import os
import pwd
import shutil
import subprocess

import pytest

from conftest import BIN, free_port
import tlsclient

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch user")


def status(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)


@root_only
def test_user_drops_root_and_every_capability(pki, echo_backend, start_daemon):
    nobody = pwd.getpwnam("nobody")
    d, port = start_daemon(echo_backend.addr, "--user", "nobody")
    st = status(d.proc.pid)
    assert st["Uid"].split() == [str(nobody.pw_uid)] * 4, st["Uid"]
    assert st["Gid"].split() == [str(nobody.pw_gid)] * 4, st["Gid"]
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(st[cap], 16) == 0, (cap, st[cap])
    assert st["NoNewPrivs"].strip() == "1"
    assert f"privdrop user=nobody uid={nobody.pw_uid}" in d.text()
    ok, _ = tlsclient.echo_transfer(tlsclient.context(pki), port, 4096)
    assert ok


def test_unknown_user_is_a_start_error(pki):
    r = subprocess.run([BIN, "--listen", f"127.0.0.1:{free_port()}",
                        "--cert", f"{pki}/server-ecdsa-chain.crt", "--key", f"{pki}/server-ecdsa.key",
                        "--client-ca", f"{pki}/client-ca.pem", "--backend", "127.0.0.1:9",
                        "--user", "no-such-user-kg", "--check"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2
    assert r.stderr.strip() == "ktlsgate: --user no-such-user-kg: no such user"


@root_only
@pytest.mark.skipif(not shutil.which("setpriv"), reason="setpriv (util-linux) missing")
def test_non_root_cannot_name_another_user(pki, tmp_path):
    # A readable copy: the session's PKI keeps its keys private (0600).
    pub = tmp_path / "pki"
    shutil.copytree(pki, pub)
    for f in os.listdir(pub):
        os.chmod(pub / f, 0o644)
    os.chmod(tmp_path, 0o755)
    os.chmod(pub, 0o755)
    pki = str(pub)
    r = subprocess.run(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
                        BIN, "--listen", f"127.0.0.1:{free_port()}",
                        "--cert", f"{pki}/server-ecdsa-chain.crt", "--key", f"{pki}/server-ecdsa.key",
                        "--client-ca", f"{pki}/client-ca.pem", "--backend", "127.0.0.1:9",
                        "--user", "root"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 2, r.stderr
    assert "--user root: only root can switch user" in r.stderr
