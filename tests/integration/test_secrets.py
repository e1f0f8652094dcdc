"""Secrets: session ticket keys rotate and are shared across reloads and
sites, private keys readable by others are reported, and the process is not
dumpable (no core files, no ptrace or /proc peeks by its own user)."""
import grp
import os
import pwd
import re
import shutil
import ssl
import subprocess
import tempfile
import time

import pytest

import tlsclient
from conftest import SANITIZED, Daemon, free_port

V13 = ssl.TLSVersion.TLSv1_3

CONFIG = """
global:
  workers: 2
  ticket_key_rotation: {rotation}
  session_tickets: {tickets}
listeners:
  - name: main
    listen: "127.0.0.1:{port}"
    identities:
      - {{ cert: "{pki}/server-ecdsa-chain.crt", key: "{key}" }}
    client_ca: "{pki}/client-ca.pem"
    backends: "{backend}"
"""


def resumes(ctx, port, session):
    ok, info = tlsclient.echo_transfer(ctx, port, 64, session=session)
    assert ok
    return info["reused"]


def next_interval(interval, at):
    """Sleeps until CLOCK_MONOTONIC (the daemon's rotation clock) is `at`
    seconds into the next interval."""
    time.sleep(interval - time.monotonic() % interval + at)


def test_ticket_survives_one_rotation_not_two(pki, echo_backend, start_config):
    d, port, _ = start_config(CONFIG, rotation="2s", key=f"{pki}/server-ecdsa.key",
                              backend=echo_backend.addr, tickets="true")
    ctx = tlsclient.context(pki, version=V13)
    next_interval(2, 0.3)  # issued early in an interval: the boundaries are known
    ok, first = tlsclient.echo_transfer(ctx, port, 64)
    assert ok and not first["reused"]
    session = first["session"]
    assert resumes(ctx, port, session), "same interval"
    next_interval(2, 0.6)  # the next interval: the ticket's key is now the previous one
    assert resumes(ctx, port, session), "one rotation later the previous key still decrypts"
    next_interval(2, 0.6)  # two rotations: the key is gone
    assert not resumes(ctx, port, session), "two rotations later the ticket is refused"
    lines = d.wait_access(4)
    assert [("resumed=1" in l) for l in lines[-4:]] == [False, True, True, False], lines


def test_session_survives_reload(pki, echo_backend, start_config, resumption):
    d, port, _ = start_config(CONFIG, rotation="1h", key=f"{pki}/server-ecdsa.key",
                              backend=echo_backend.addr, tickets=str(resumption == "tickets").lower())
    ctx = tlsclient.context(pki, version=V13)
    ok, first = tlsclient.echo_transfer(ctx, port, 64)
    assert ok
    assert d.ctl("reload")["ok"]
    assert resumes(ctx, port, first["session"]), "keys and the cache are process-wide, not per generation"


def test_ticket_key_rotation_below_a_second_is_a_config_error(pki, tmp_path):
    from conftest import BIN
    path = tmp_path / "k.yaml"
    path.write_text(CONFIG.format(rotation="500ms", tickets="true", port=free_port(), pki=pki,
                                  key=f"{pki}/server-ecdsa.key", backend="127.0.0.1:9"))
    r = subprocess.run([BIN, "--config", str(path), "--check"], capture_output=True, text=True,
                       timeout=20)
    assert r.returncode == 2
    assert re.search(r"k\.yaml:\d+:\d+: ticket_key_rotation: at least 1s", r.stderr), r.stderr


@pytest.mark.parametrize("mode,warned", [(0o644, True), (0o640, False), (0o600, False)])
def test_world_readable_key_is_one_warning(pki, echo_backend, start_config, tmp_path, mode, warned):
    key = tmp_path / "server.key"
    shutil.copy(f"{pki}/server-ecdsa.key", key)
    os.chmod(key, mode)
    d, port, _ = start_config(CONFIG, rotation="1h", key=str(key), backend=echo_backend.addr,
                              tickets="false")
    ok, _ = tlsclient.echo_transfer(tlsclient.context(pki), port, 64)
    assert ok, "a warning, not an error"
    lines = [l for l in d.log_lines() if "secret_readable" in l]
    if warned:
        assert len(lines) == 1, d.text()
        assert f"file={key} mode={mode:04o}" in lines[0], lines[0]
        assert " warn" in lines[0].lower() or '"level":"warn' in lines[0].lower(), lines[0]
    else:
        assert lines == [], lines


def test_world_readable_passphrase_and_pkcs12_warn(pki, echo_backend, start_config, tmp_path):
    p12 = tmp_path / "server.p12"
    pw = tmp_path / "pass.txt"
    pw.write_text("s3cret\n")
    subprocess.run(["openssl", "pkcs12", "-export", "-in", f"{pki}/server-ecdsa-chain.crt",
                    "-inkey", f"{pki}/server-ecdsa.key", "-out", str(p12), "-passout", "pass:s3cret"],
                   check=True, capture_output=True)
    os.chmod(p12, 0o604)
    os.chmod(pw, 0o644)
    text = CONFIG.replace('{{ cert: "{pki}/server-ecdsa-chain.crt", key: "{key}" }}',
                          '{{ pkcs12: "{p12}", passphrase_file: "{pw}" }}')
    d, port, _ = start_config(text, rotation="1h", p12=str(p12), pw=str(pw), backend=echo_backend.addr,
                              tickets="false")
    lines = [l for l in d.log_lines() if "secret_readable" in l]
    assert len(lines) == 2, d.text()
    assert f"file={p12} mode=0604" in lines[0] and f"file={pw} mode=0644" in lines[1], lines


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start the daemon as another user")
def test_process_is_not_dumpable(pki, echo_backend, daemons, tmp_path):
    """PR_SET_DUMPABLE 0: the kernel then owns /proc/PID/* as root, so even
    the daemon's own user cannot read its memory, environment or attach a
    debugger. Started directly as nobody (no setuid after exec, which would
    clear the flag by itself), so only the prctl can explain it."""
    nobody = pwd.getpwnam("nobody")
    pub = tempfile.mkdtemp(prefix="kgdump")
    os.chmod(pub, 0o755)
    for name in ("server-ecdsa-chain.crt", "server-ecdsa.key", "client-ca.pem"):
        shutil.copy(f"{pki}/{name}", pub)
        os.chown(os.path.join(pub, name), nobody.pw_uid, nobody.pw_gid)
    ctl_dir = tempfile.mkdtemp(prefix="kgdumpctl")
    os.chown(ctl_dir, nobody.pw_uid, nobody.pw_gid)

    try:  # the control socket is chowned to group ktlsgate when it exists
        groups = [grp.getgrnam("ktlsgate").gr_gid]
    except KeyError:
        groups = []

    def become_nobody():
        os.setgroups(groups)
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    port = free_port()
    d = Daemon(["--listen", f"127.0.0.1:{port}", "--cert", f"{pub}/server-ecdsa-chain.crt",
                "--key", f"{pub}/server-ecdsa.key", "--client-ca", f"{pub}/client-ca.pem",
                "--backend", echo_backend.addr, "--workers", "1",
                "--control-socket", f"{ctl_dir}/control.sock"],
               str(tmp_path / "nobody.log"), preexec_fn=become_nobody)
    daemons.append(d)
    d.wait_ready()
    pid = d.proc.pid
    with open(f"/proc/{pid}/status") as f:
        assert re.search(rf"^Uid:\s+{nobody.pw_uid}\s", f.read(), re.M)
    for name in ("environ", "mem", "maps"):
        st = os.stat(f"/proc/{pid}/{name}")
        assert st.st_uid == 0, f"/proc/{pid}/{name} owned by {st.st_uid}: the process is dumpable"
    if shutil.which("setpriv"):
        r = subprocess.run(["setpriv", "--reuid", str(nobody.pw_uid), "--regid", str(nobody.pw_gid),
                            "--clear-groups", "cat", f"/proc/{pid}/environ"],
                           capture_output=True, timeout=10)
        assert r.returncode != 0 and b"Permission denied" in r.stderr, r
    ok, _ = tlsclient.echo_transfer(tlsclient.context(pki), port, 64)
    assert ok


@pytest.mark.skipif(SANITIZED, reason="ASan sets RLIMIT_CORE to 0 itself (disable_coredump)")
@pytest.mark.skipif(os.path.exists("/proc/sys/kernel/core_pattern") and
                    open("/proc/sys/kernel/core_pattern").read().startswith("|"),
                    reason="core_pattern pipes cores to a helper; no file to look for")
def test_no_core_file_even_as_root(pki, echo_backend, tmp_path):
    """As root without --user nothing else clears the dumpable flag: only
    main's prctl keeps a crash (SIGQUIT here, core limit unlimited) from
    writing the keys to disk."""
    import resource
    import signal
    cwd = tmp_path / "cwd"
    cwd.mkdir()

    def allow_cores():
        os.chdir(cwd)
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    port = free_port()
    d = Daemon(["--listen", f"127.0.0.1:{port}", "--cert", f"{pki}/server-ecdsa-chain.crt",
                "--key", f"{pki}/server-ecdsa.key", "--client-ca", f"{pki}/client-ca.pem",
                "--backend", echo_backend.addr, "--workers", "1"],
               str(tmp_path / "core.log"), preexec_fn=allow_cores)
    try:
        d.wait_ready()
        ok, _ = tlsclient.echo_transfer(tlsclient.context(pki), port, 64)
        assert ok
        with open(f"/proc/{d.proc.pid}/limits") as f:
            assert re.search(r"Max core file size\s+unlimited", f.read())
        d.proc.send_signal(signal.SIGQUIT)
        assert d.proc.wait(20) == -signal.SIGQUIT
        time.sleep(0.5)
        assert os.listdir(cwd) == [], "a core file was written"
    finally:
        d.stop(signal.SIGKILL)
        for name in os.listdir(cwd):
            os.unlink(cwd / name)
