"""The server-side session cache (global.session_cache, the default way to
resume): sessions resume and are counted, stay within their bound and
lifetime, survive a reload that changes nothing relevant, and stop resuming
the moment a full handshake would no longer pass (rules, client CAs). The
guarantees shared with tickets (site, CRL) are parametrized over both modes
in test_policy, test_control and test_secrets."""
import re
import ssl
import subprocess
import time

import pytest

import tlsclient
from conftest import BIN, SANITIZED, free_port, resumption_args, resumption_yaml

V12 = ssl.TLSVersion.TLSv1_2
V13 = ssl.TLSVersion.TLSv1_3

CONFIG = """
global:
  workers: 2
{glob}listeners:
  - name: main
    listen: "127.0.0.1:{port}"
    identities:
      - {{ cert: "{pki}/server-ecdsa-chain.crt", key: "{pki}/server-ecdsa.key" }}
    client_ca: {client_ca}
    backends: "{backend}"
{rules}"""


def start(start_config, pki, backend, extra="", client_ca=None, rules=""):
    fields = dict(glob=extra, client_ca=client_ca or f'"{pki}/client-ca.pem"', rules=rules,
                  backend=backend.addr)
    d, port, path = start_config(CONFIG, **fields)
    return d, port, path, fields


def rewrite(path, pki, port, **fields):
    with open(path, "w") as f:
        f.write(CONFIG.format(pki=pki, port=port, **fields))


def session_of(ctx, port):
    ok, info = tlsclient.echo_transfer(ctx, port, 64)
    assert ok and not info["reused"]
    return info["session"]


def resumes(ctx, port, session):
    ok, info = tlsclient.echo_transfer(ctx, port, 64, session=session)
    assert ok, "a refused resumption falls back to a full handshake"
    return info["reused"]


def cache_stats(d):
    st = d.ctl("show stats")
    return st["total"]["session_cache"], st["session_cache_entries"], st["total"]["resumed"]


@pytest.mark.parametrize("version", [V12, V13], ids=["tls12", "tls13"])
def test_resumes_from_the_cache_and_counts(pki, echo_backend, start_config, version):
    d, port, _, _ = start(start_config, pki, echo_backend)
    ctx = tlsclient.context(pki, version=version)
    session = session_of(ctx, port)
    if version == V13:
        assert session.has_ticket, "TLS 1.3: a ticket that names the cached session"
    else:
        assert len(session.id) == 32 and not session.has_ticket, "TLS 1.2: a session id, no ticket"
    for _ in range(3):
        assert resumes(ctx, port, session)
    counts, entries, resumed = cache_stats(d)
    assert counts["hits"] == 3 and counts["refused"] == 0 and counts["evictions"] == 0, counts
    assert resumed == 3
    # TLS 1.3 stores each resumption's new session too; TLS 1.2 reuses the one.
    assert entries == (4 if version == V13 else 1), entries
    lines = d.wait_access(4)
    assert [("resumed=1" in l) for l in lines[-4:]] == [False, True, True, True], lines
    assert 'subject="CN=client.demo' in lines[-1], "the resumed session keeps its identity"
    metrics = d.ctl("metrics")["text"]
    assert 'ktlsgate_session_cache_lookups_total{result="hit"} 3' in metrics, metrics
    assert f"ktlsgate_session_cache_entries {entries}" in metrics


def test_cache_is_bounded_oldest_evicted(pki, echo_backend, start_config):
    d, port, _, _ = start(start_config, pki, echo_backend, extra="  session_cache: 4\n")
    ctx = tlsclient.context(pki, version=V13)
    sessions = [session_of(ctx, port) for _ in range(10)]
    counts, entries, _ = cache_stats(d)
    assert entries == 4 and counts["evictions"] == 6, (counts, entries)
    assert not resumes(ctx, port, sessions[0]), "the oldest was evicted"
    assert resumes(ctx, port, sessions[-1]), "the newest is still there"
    _, entries, _ = cache_stats(d)
    assert entries == 4


def test_cache_memory_stays_bounded(pki, echo_backend, start_config):
    """Many more sessions than entries: the daemon's memory does not grow
    with them (ASan's leak check covers what is freed at exit)."""
    d, port, _, _ = start(start_config, pki, echo_backend, extra="  session_cache: 16\n")
    ctx = tlsclient.context(pki, version=V12)

    def rss_kib():
        with open(f"/proc/{d.proc.pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))

    for _ in range(600):  # warm up: allocator arenas, the workers' receive buffer rings
        session_of(ctx, port)
    before = rss_kib()
    for _ in range(600):
        session_of(ctx, port)
    counts, entries, _ = cache_stats(d)
    assert entries == 16 and counts["evictions"] == 1200 - 16, (counts, entries)
    # 600 sessions kept (~7.5 KiB each with the client leaf) would be ~4.4 MiB;
    # allocator arenas and page granularity move RSS by a few hundred KiB on
    # their own, so the bound sits between the two.
    # ASan keeps freed memory in quarantine: there its leak check at exit counts.
    assert SANITIZED or rss_kib() - before < 2048, "memory grew with evicted sessions"


def test_sessions_expire_after_session_timeout(pki, echo_backend, start_config):
    d, port, _, _ = start(start_config, pki, echo_backend, extra="  session_timeout: 2s\n")
    for version in (V12, V13):
        ctx = tlsclient.context(pki, version=version)
        session = session_of(ctx, port)
        assert resumes(ctx, port, session)
        time.sleep(2.5)
        assert not resumes(ctx, port, session), f"{version}: expired after 2s"


def test_session_tickets_expire_after_session_timeout(pki, echo_backend, start_config):
    d, port, _, _ = start(start_config, pki, echo_backend,
                          extra="  session_timeout: 2s\n" + resumption_yaml("tickets"))
    ctx = tlsclient.context(pki, version=V13)
    session = session_of(ctx, port)
    assert resumes(ctx, port, session)
    time.sleep(2.5)
    assert not resumes(ctx, port, session), "a ticket older than session_timeout is refused"


def test_session_cache_zero_disables_resumption(pki, echo_backend, start_config):
    d, port, _, _ = start(start_config, pki, echo_backend, extra="  session_cache: 0\n")
    for version in (V12, V13):
        ctx = tlsclient.context(pki, version=version)
        session = session_of(ctx, port)
        assert not session.has_ticket, "no ticket: it could never resume"
        assert not resumes(ctx, port, session)
    counts, entries, resumed = cache_stats(d)
    assert entries == 0 and resumed == 0 and counts["hits"] == 0


def test_reload_keeps_sessions_when_nothing_relevant_changed(pki, echo_backend, start_config):
    d, port, path, fields = start(start_config, pki, echo_backend)
    ctx = tlsclient.context(pki, version=V13)
    session = session_of(ctx, port)
    rewrite(path, pki, port, **{**fields, "glob": "  max_connections: 500\n"})
    assert d.ctl("reload")["ok"]
    assert d.ctl("show generation")["generation"] == 2
    assert resumes(ctx, port, session), "a new generation, the same site, rules and CAs"


def test_rule_change_blocks_resumption(pki, echo_backend, start_config):
    d, port, path, fields = start(start_config, pki, echo_backend,
                                  rules="    allow:\n      - cn: client.demo\n")
    ctx = tlsclient.context(pki, version=V13)
    session = session_of(ctx, port)
    assert resumes(ctx, port, session)
    rewrite(path, pki, port, **{**fields, "rules": "    allow:\n      - cn: somebody.else\n"})
    assert d.ctl("reload")["ok"]
    err = None
    try:
        ok, info = tlsclient.echo_transfer(ctx, port, 64, session=session)
        assert not ok or not info["reused"]
    except (ssl.SSLError, OSError) as e:
        err = str(e)
    assert err is None or "ACCESS_DENIED" in err.upper().replace(" ", "_"), err
    lines = d.wait_access(3)
    assert "result=access_denied" in lines[-1] and "resumed=0" in lines[-1], lines
    counts, _, _ = cache_stats(d)
    assert counts["refused"] == 1, counts


def test_client_ca_change_blocks_resumption(pki, echo_backend, start_config):
    d, port, path, fields = start(start_config, pki, echo_backend)
    ctx = tlsclient.context(pki, version=V12)
    session = session_of(ctx, port)
    rewrite(path, pki, port, **{**fields, "client_ca": f'["{pki}/client-ca.pem", "{pki}/other-ca.crt"]'})
    assert d.ctl("reload")["ok"]
    assert not resumes(ctx, port, session), "another CA set: verify the client again"
    counts, _, _ = cache_stats(d)
    assert counts["refused"] == 1, counts


@pytest.mark.parametrize("setting", ["verify_depth: 3", "require_client_eku: false", "crl_missing: allow"])
def test_verification_setting_change_blocks_resumption(pki, echo_backend, start_config, setting):
    """How the chain is checked is part of the trust: a session made under
    other settings would skip the new check, so it verifies in full again."""
    d, port, path, fields = start(start_config, pki, echo_backend)
    ctx = tlsclient.context(pki, version=V12)
    session = session_of(ctx, port)
    rewrite(path, pki, port, **{**fields, "rules": f"    {setting}\n"})
    assert d.ctl("reload")["ok"]
    ok, info = tlsclient.echo_transfer(ctx, port, 64, session=session)
    assert ok and not info["reused"], f"{setting}: a full handshake"
    assert resumes(ctx, port, info["session"]), "the new session resumes"


@pytest.mark.parametrize("version", [V12, V13], ids=["tls12", "tls13"])
def test_crl_update_reverifies_once(pki, echo_backend, start_config, resumption, version):
    """A session keeps only the client's leaf: after any change of the site's
    CRLs (here one that revokes nobody) a client is verified in full once,
    so a newly revoked intermediate cannot slip through; then it resumes."""
    d, port, path, fields = start(start_config, pki, echo_backend,
                                  extra=resumption_yaml(resumption))
    ctx = tlsclient.context(pki, version=version)
    session = session_of(ctx, port)
    rewrite(path, pki, port, **{**fields, "rules": f'    crl: "{pki}/crl-bundle.pem"\n'})
    assert d.ctl("reload")["ok"]
    ok, info = tlsclient.echo_transfer(ctx, port, 64, session=session)
    assert ok and not info["reused"], "another CRL set: a full handshake"
    assert resumes(ctx, port, info["session"]), "the new session resumes"


@pytest.mark.parametrize("line,message", [
    ("session_cache: -1", r"session_cache: must not be negative"),
    ("session_cache: 1000001", r"session_cache: must be from 0 to 1000000"),
    ("session_timeout: 500ms", r"session_timeout: whole seconds, at least 1s"),
    ("session_timeout: 8d", r"session_timeout: "),
    ("session_tickets: maybe", r"session_tickets: expected true or false"),
])
def test_session_keys_are_bounds_checked(pki, tmp_path, line, message):
    path = tmp_path / "s.yaml"
    path.write_text(CONFIG.format(glob=f"  {line}\n", port=free_port(), pki=pki,
                                  client_ca=f'"{pki}/client-ca.pem"', rules="",
                                  backend="127.0.0.1:9"))
    r = subprocess.run([BIN, "--config", str(path), "--check"], capture_output=True, text=True,
                       timeout=20)
    assert r.returncode == 2
    assert re.search(r"s\.yaml:4:\d+: " + message, r.stderr), r.stderr


@pytest.mark.parametrize("version", ["1.3", "1.2"])
def test_a_client_that_uses_each_ticket_once_keeps_resuming(pki, start_daemon, resumption, version):
    """ktlsgate-bench keeps only the newest session per slot, as clients that
    use a TLS 1.3 ticket once do: every resumption must bring a fresh one,
    or every other handshake is a full one (tickets mode did that before)."""
    import json
    import os
    bench = os.path.join(os.path.dirname(BIN), "bench")
    backend = subprocess.Popen([f"{bench}/bench-backend", "--listen", f"127.0.0.1:{free_port()}"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        addr = backend.args[2]
        time.sleep(0.3)
        d, port = start_daemon(addr, *resumption_args(resumption))
        r = subprocess.run([f"{bench}/ktlsgate-bench", "--target", f"127.0.0.1:{port}",
                            "--cert", f"{pki}/client-chain.crt", "--key", f"{pki}/client.key",
                            "--sni", "localhost", "--mode", "resume", "-c", "1", "-n", "8",
                            "-w", "0", "--tls", version, "--json"],
                           capture_output=True, text=True, timeout=60)
        out = json.loads(r.stdout)
        # -n counts finished exchanges; a slot may start one more handshake.
        assert out["ok"] >= 8 and out["full"] == 1 and out["resumed"] >= 7, out
    finally:
        backend.kill()
        backend.wait()


@pytest.mark.skipif(SANITIZED, reason="ASan's allocator and quarantine change RSS")
def test_cached_session_keeps_only_the_leaf(pki, echo_backend, start_config):
    """A cached session holds the client's parsed leaf, not its intermediates
    (nothing reads them after verification): ~7 KiB a session, not ~11."""
    d, port, _, _ = start(start_config, pki, echo_backend)
    ctx = tlsclient.context(pki, version=V13)

    def rss_kib():
        with open(f"/proc/{d.proc.pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))

    # Warm-up past the workers' receive buffer rings (256 buffers each, taken
    # in turn: each is first touched by some connection's first receive).
    for _ in range(600):
        session_of(ctx, port)
    before = rss_kib()
    for _ in range(600):
        session_of(ctx, port)
    per = (rss_kib() - before) * 1024 / 600
    print("bytes per cached session", per)
    assert cache_stats(d)[1] == 1200
    assert per < 9 * 1024, per
