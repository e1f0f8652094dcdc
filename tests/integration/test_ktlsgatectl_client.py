"""ktlsgatectl against a fake daemon: a UNIX socket server thread that records
each request line and answers with canned replies. Checks the exact request
JSON of every command, the human and --json output, exit statuses, and that
broken, silent or oversized replies end the client cleanly instead of hanging.
The binary is KTLSGATECTL_BIN, else the ktlsgatectl next to KTLSGATE_BIN (so
the ASan pass of run-tests.sh tests the ASan client), else build/ktlsgatectl."""
import json
import os
import socket
import subprocess
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


def _ctl_bin():
    if os.environ.get("KTLSGATECTL_BIN"):
        return os.environ["KTLSGATECTL_BIN"]
    daemon = os.environ.get("KTLSGATE_BIN")
    if daemon:
        sibling = os.path.join(os.path.dirname(os.path.abspath(daemon)), "ktlsgatectl")
        if os.access(sibling, os.X_OK):
            return sibling
    return os.path.join(ROOT, "build", "ktlsgatectl")


CTL = _ctl_bin()
MAX_REPLY = 64 << 20

INFO = {"ok": True, "version": "0.1.0", "pid": 4242, "uptime_s": 3725,
        "config": "/etc/ktlsgate/ktlsgate.yaml", "generation": 3,
        "ktls": {"available": False, "description": "unavailable (TCP_ULP tls: No such file or directory)"},
        "workers": [{"id": 0, "cpu": 0}, {"id": 1, "cpu": 1}],
        "listeners": [{"name": "public", "listen": ["0.0.0.0:8443", "[::]:8443"],
                       "sites": ["default", "admin.example.com"], "ktls": "auto"}]}


def _stats(k):
    return {"conns_active": 2 * k, "conns_total": 100 * k, "handshakes_ok": 90 * k,
            "handshakes_refused": 7 * k, "resumed": 5 * k, "refused": {"unknown_ca": 3 * k, "access_denied": 4 * k},
            "bytes_in": 1000 * k, "bytes_out": 2000 * k, "relay_ktls": 0, "relay_user": 90 * k,
            "handshake_latency_us": {"p50": 800, "p90": 1200, "p99": 2500, "p999": 9000},
            "handshake_timeouts": k, "idle_timeouts": 0, "backend_failures": 0, "conn_limit_hits": 0}


STATS = {"ok": True, "total": _stats(3), "workers": [_stats(1), _stats(2)]}
CERTS = {"ok": True, "certs": [
    {"kind": "server", "listener": "public", "site": "default", "file": "/etc/ktlsgate/ec.pem",
     "subject": "CN=gate.example.com", "sans": ["DNS:gate.example.com", "DNS:alt.example.com"],
     "issuer": "CN=Example Intermediate", "serial": "1A2B", "not_before": "2026-01-01T00:00:00Z",
     "not_after": "2027-02-25T00:00:00Z", "days_left": 87, "warn": False},
    {"kind": "client_ca", "listener": "public", "site": "admin.example.com", "file": "/etc/ktlsgate/ca.pem",
     "subject": "CN=Example Root", "sans": [], "issuer": "CN=Example Root", "serial": "01",
     "not_before": "2020-01-01T00:00:00Z", "not_after": "2026-12-20T00:00:00Z", "days_left": 20, "warn": True}],
    "crls": [{"listener": "public", "site": "default", "file": "/etc/ktlsgate/root.crl",
              "issuer": "CN=Example Root", "last_update": "2026-11-01T00:00:00Z",
              "next_update": "2026-11-29T00:00:00Z", "revoked": 12, "stale": True, "warn": True}]}
CONNS = {"ok": True, "conns": [
    {"id": 7, "worker": 1, "client": "127.0.0.1:5000", "sni": "gate.example.com",
     "subject": "CN=alice,O=Example", "serial": "0697CD", "spiffe": "spiffe://example.org/ns/prod/sa/alice",
     "backend": "127.0.0.1:8080", "bytes_in": 1234, "bytes_out": 56789, "age_ms": 125000,
     "state": "relay", "path": "ktls",
     "kernel": {"tls_version": "TLS 1.3", "cipher": "AES-128-GCM", "tx": "sw", "rx": "sw"}},
    {"id": 8, "worker": 0, "client": "[::1]:5001", "sni": None, "subject": "CN=bob", "serial": "0A",
     "spiffe": None, "backend": None, "bytes_in": 0, "bytes_out": 0, "age_ms": 40,
     "state": "handshake", "path": None, "kernel": None}]}
GENERATION = {"ok": True, "generation": 3, "built_at": "2026-11-30T03:00:00Z",
              "source": "/etc/ktlsgate/ktlsgate.yaml", "runtime_changes": 1}
METRICS_TEXT = "# HELP ktlsgate_conns_total Connections accepted.\n# TYPE ktlsgate_conns_total counter\nktlsgate_conns_total 300\n"

CANNED = {
    "show info": INFO, "show stats": STATS, "show certs": CERTS, "show conns": CONNS,
    "show generation": GENERATION, "reload": {"ok": True, "generation": 4, "ms": 12.5},
    "policy set": {"ok": True, "generation": 6}, "conn kill": {"ok": True, "killed": 1},
    "drain": {"ok": True}, "metrics": {"ok": True, "text": METRICS_TEXT},
}
for _kind in ("cert", "ca", "crl"):
    for _verb in ("begin", "set", "abort"):
        CANNED[f"{_kind} {_verb}"] = {"ok": True}
    CANNED[f"{_kind} commit"] = {"ok": True, "generation": 5}


class FakeDaemon:
    """Answers one request per connection, then closes it. replies[cmd] is a
    dict (sent as one JSON line), bytes (sent raw), or a function (conn,
    request) doing it all; if that returns true the connection stays open."""

    def __init__(self, path):
        self.path = path
        self.replies = dict(CANNED)
        self.requests = []
        self.raw_requests = []
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(path)
        self.sock.listen(16)
        self.conns = []
        self.stopped = False
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        buf = b""
        try:
            while b"\n" not in buf:
                chunk = c.recv(65536)
                if not chunk:
                    return
                buf += chunk
            line = buf.split(b"\n", 1)[0]
            self.raw_requests.append(line)
            req = json.loads(line)
            self.requests.append(req)
            reply = self.replies.get(req.get("cmd"), {"ok": False, "error": "unknown command"})
            keep = False
            if callable(reply):
                keep = reply(c, req)
            elif isinstance(reply, bytes):
                c.sendall(reply)
            else:
                c.sendall(json.dumps(reply).encode() + b"\n")
            if not keep:
                c.close()
        except OSError:
            pass

    def close(self):
        self.stopped = True
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


@pytest.fixture
def daemon(tmp_path):
    d = FakeDaemon(str(tmp_path / "control.sock"))
    yield d
    d.close()


def ctl(*args, sock=None, stdin=None, timeout=20, env=None):
    """Runs ktlsgatectl; a hang fails the test through subprocess's timeout."""
    if not os.access(CTL, os.X_OK):
        pytest.fail(f"ktlsgatectl not found at {CTL} (build first or set KTLSGATECTL_BIN)")
    cmd = [CTL] + (["-s", sock] if sock else []) + list(args)
    e = dict(os.environ)
    e.pop("KTLSGATE_SOCKET", None)
    e.update(env or {})
    r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout, env=e)
    # With the ASan+UBSan build: any report fails the test, whatever the exit status.
    assert "Sanitizer" not in r.stderr and "runtime error:" not in r.stderr, r.stderr
    return r


def kv(key, value):
    """A "key: value" line as show info/generation print it (values aligned)."""
    return f"{key + ':':<17}{value}"


def run(daemon, *args, **kw):
    return ctl(*args, sock=daemon.path, **kw)


# --- every command sends exactly the request the protocol describes ---------

SIMPLE = [
    (["show", "info"], {"cmd": "show info"}),
    (["show", "stats"], {"cmd": "show stats"}),
    (["show", "certs"], {"cmd": "show certs"}),
    (["show", "conns"], {"cmd": "show conns"}),
    (["show", "generation"], {"cmd": "show generation"}),
    (["reload"], {"cmd": "reload"}),
    (["drain"], {"cmd": "drain"}),
    (["metrics"], {"cmd": "metrics"}),
    (["cert", "begin", "/etc/ktlsgate/ec.pem"], {"cmd": "cert begin", "name": "/etc/ktlsgate/ec.pem"}),
    (["cert", "commit", "/etc/ktlsgate/ec.pem"], {"cmd": "cert commit", "name": "/etc/ktlsgate/ec.pem"}),
    (["cert", "abort", "/etc/ktlsgate/ec.pem"], {"cmd": "cert abort", "name": "/etc/ktlsgate/ec.pem"}),
    (["ca", "begin", "ca.pem"], {"cmd": "ca begin", "name": "ca.pem"}),
    (["ca", "commit", "ca.pem"], {"cmd": "ca commit", "name": "ca.pem"}),
    (["ca", "abort", "ca.pem"], {"cmd": "ca abort", "name": "ca.pem"}),
    (["crl", "begin", "root.crl"], {"cmd": "crl begin", "name": "root.crl"}),
    (["crl", "commit", "root.crl"], {"cmd": "crl commit", "name": "root.crl"}),
    (["crl", "abort", "root.crl"], {"cmd": "crl abort", "name": "root.crl"}),
    (["conn", "kill", "7"], {"cmd": "conn kill", "id": 7}),
    (["conn", "kill", "--serial", "1a:2b"], {"cmd": "conn kill", "serial": "1A2B"}),
    (["conn", "kill", "--subject", "CN=alice,O=Example"], {"cmd": "conn kill", "subject": "CN=alice,O=Example"}),
    (["conn", "kill", "--spiffe", "spiffe://example.org/a"], {"cmd": "conn kill", "spiffe": "spiffe://example.org/a"}),
]


@pytest.mark.parametrize("args,request_", SIMPLE, ids=[" ".join(a) for a, _ in SIMPLE])
def test_request_is_exact(daemon, args, request_):
    r = run(daemon, *args)
    assert r.returncode == 0, r.stderr
    assert daemon.requests == [request_]
    # one compact JSON object on one line
    assert daemon.raw_requests[0] == json.dumps(request_, separators=(",", ":")).encode()


@pytest.mark.parametrize("kind", ["cert", "ca", "crl"])
def test_set_sends_file_contents(daemon, tmp_path, kind):
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    f = tmp_path / "new.pem"
    f.write_text(pem)
    r = run(daemon, kind, "set", "/etc/ktlsgate/x.pem", str(f))
    assert r.returncode == 0, r.stderr
    assert daemon.requests == [{"cmd": f"{kind} set", "name": "/etc/ktlsgate/x.pem", "pem": pem}]
    assert "staged" in r.stdout


def test_set_reads_stdin(daemon):
    pem = "-----BEGIN X509 CRL-----\nMIIC\n-----END X509 CRL-----\n"
    r = run(daemon, "crl", "set", "root.crl", "-", stdin=pem)
    assert r.returncode == 0, r.stderr
    assert daemon.requests == [{"cmd": "crl set", "name": "root.crl", "pem": pem}]


@pytest.mark.parametrize("kind", ["cert", "ca", "crl"])
def test_update_is_begin_set_commit(daemon, tmp_path, kind):
    f = tmp_path / "new.pem"
    f.write_text("PEM\n")
    r = run(daemon, kind, "update", "n.pem", str(f))
    assert r.returncode == 0, r.stderr
    assert daemon.requests == [{"cmd": f"{kind} begin", "name": "n.pem"},
                               {"cmd": f"{kind} set", "name": "n.pem", "pem": "PEM\n"},
                               {"cmd": f"{kind} commit", "name": "n.pem"}]
    assert r.stdout == f"{kind} n.pem: updated, generation 5\n"


def test_update_aborts_after_failed_set(daemon, tmp_path):
    f = tmp_path / "new.pem"
    f.write_text("not a cert\n")
    daemon.replies["cert set"] = {"ok": False, "error": "new.pem: no certificate found"}
    r = run(daemon, "cert", "update", "n.pem", str(f))
    assert r.returncode == 1
    assert [q["cmd"] for q in daemon.requests] == ["cert begin", "cert set", "cert abort"]
    assert "ktlsgatectl: new.pem: no certificate found\n" in r.stderr
    assert "aborted" in r.stderr


def test_update_aborts_after_failed_commit(daemon, tmp_path):
    f = tmp_path / "new.pem"
    f.write_text("PEM\n")
    daemon.replies["ca commit"] = {"ok": False, "error": "ca.pem: CA certificate expired"}
    r = run(daemon, "ca", "update", "ca.pem", str(f))
    assert r.returncode == 1
    assert [q["cmd"] for q in daemon.requests] == ["ca begin", "ca set", "ca commit", "ca abort"]
    assert "CA certificate expired" in r.stderr


def test_update_failed_begin_leaves_the_other_transaction(daemon, tmp_path):
    f = tmp_path / "new.pem"
    f.write_text("PEM\n")
    daemon.replies["cert begin"] = {"ok": False, "error": "a transaction for n.pem is already open"}
    r = run(daemon, "cert", "update", "n.pem", str(f))
    assert r.returncode == 1
    assert [q["cmd"] for q in daemon.requests] == ["cert begin"]


def test_update_missing_file_sends_nothing(daemon, tmp_path):
    r = run(daemon, "cert", "update", "n.pem", str(tmp_path / "nope.pem"))
    assert r.returncode == 2
    assert "nope.pem: No such file or directory" in r.stderr
    assert daemon.requests == []


def test_update_json_prints_one_object(daemon, tmp_path):
    f = tmp_path / "new.pem"
    f.write_text("PEM\n")
    r = run(daemon, "--json", "crl", "update", "root.crl", str(f))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"ok": True, "generation": 5}


def test_policy_set(daemon, tmp_path):
    rules = {"allow": [{"name": "ops", "cn": ["alice", "bob"]},
                       {"name": "mesh", "uri": "spiffe://example.org/ns/prod/*"}],
             "deny": [{"serial": "1A2B"}]}
    f = tmp_path / "rules.json"
    f.write_text(json.dumps(rules))
    r = run(daemon, "policy", "set", "public", str(f))
    assert r.returncode == 0, r.stderr
    assert daemon.requests == [{"cmd": "policy set", "listener": "public", "site": None, **rules}]
    assert r.stdout == "policy replaced: generation 6\n"


def test_policy_set_site_and_missing_list(daemon, tmp_path):
    f = tmp_path / "rules.json"
    f.write_text('{"allow": [{"dns": "*.example.com"}]}')
    r = run(daemon, "policy", "set", "public", "--site", "admin.example.com", str(f))
    assert r.returncode == 0, r.stderr
    assert daemon.requests == [{"cmd": "policy set", "listener": "public", "site": "admin.example.com",
                                "allow": [{"dns": "*.example.com"}], "deny": []}]


def test_policy_set_from_stdin(daemon):
    r = run(daemon, "policy", "set", "--site=a.example", "public", "-", stdin='{"deny": [{"cn": "eve"}]}')
    assert r.returncode == 0, r.stderr
    assert daemon.requests[0]["site"] == "a.example"
    assert daemon.requests[0]["deny"] == [{"cn": "eve"}]


# --- output for people --------------------------------------------------------

def test_show_info_human(daemon):
    r = run(daemon, "show", "info")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert kv("version", "0.1.0") in out
    assert kv("pid", "4242") in out
    assert kv("uptime", "1h02m") in out
    assert kv("config", "/etc/ktlsgate/ktlsgate.yaml") in out
    assert kv("kernel TLS", "unavailable (TCP_ULP tls: No such file or directory)") in out
    assert kv("workers", "2 (CPU 0, 1)") in out
    lines = out.splitlines()
    header = next(l for l in lines if l.startswith("LISTENER"))
    assert header.split() == ["LISTENER", "LISTEN", "KTLS", "SITES"]
    row = lines[lines.index(header) + 1]
    assert row.startswith("public  ")
    assert "0.0.0.0:8443, [::]:8443" in row and "auto" in row and "default, admin.example.com" in row
    # columns line up: each title starts where its values start
    assert row.index("auto") == header.index("KTLS")


def test_show_info_command_line_config(daemon):
    daemon.replies["show info"] = dict(INFO, config=None)
    r = run(daemon, "show", "info")
    assert kv("config", "(command line)") in r.stdout


def test_show_stats_human(daemon):
    r = run(daemon, "show", "stats")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["COUNTER", "TOTAL", "WORKER", "0", "WORKER", "1"]
    rows = {l.split()[0]: l.split()[1:] for l in lines[1:]}
    assert rows["conns_total"] == ["300", "100", "200"]
    assert rows["refused.unknown_ca"] == ["9", "3", "6"]
    assert rows["handshake_latency_us.p99"] == ["2500", "2500", "2500"]
    assert rows["conn_limit_hits"] == ["0", "0", "0"]
    assert len(rows) == 13 + 2 + 4  # scalars, refused reasons, percentiles
    # numbers are right-aligned under their titles
    assert len(set(len(l) for l in lines)) == 1


def test_show_stats_hides_zero_breakdowns(daemon):
    total = dict(_stats(1), refused={"unknown_ca": 0, "certificate_revoked": 2, "crl_stale": 0})
    daemon.replies["show stats"] = {"ok": True, "total": total, "workers": [total]}
    r = run(daemon, "show", "stats")
    assert r.returncode == 0, r.stderr
    assert "refused.certificate_revoked" in r.stdout
    assert "refused.unknown_ca" not in r.stdout and "crl_stale" not in r.stdout
    assert "idle_timeouts" in r.stdout  # a plain counter stays, even at 0


def test_show_certs_human(daemon):
    r = run(daemon, "show", "certs")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["KIND", "LISTENER", "SITE", "SUBJECT"]
    server = next(l for l in lines if l.startswith("server"))
    for v in ("public", "default", "CN=gate.example.com", "DNS:gate.example.com, DNS:alt.example.com",
              "1A2B", "2027-02-25T00:00:00Z", " 87 ", " ok ", "/etc/ktlsgate/ec.pem"):
        assert v in server
    ca = next(l for l in lines if l.startswith("client_ca"))
    assert "EXPIRES SOON" in ca and "admin.example.com" in ca
    crl_header = next(l for l in lines if l.startswith("LISTENER"))
    assert "NEXT UPDATE" in crl_header and "REVOKED" in crl_header
    crl = lines[lines.index(crl_header) + 1]
    assert "CN=Example Root" in crl and " 12 " in crl and "STALE" in crl and "/etc/ktlsgate/root.crl" in crl


def test_show_conns_human(daemon):
    r = run(daemon, "show", "conns")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["ID", "WORKER", "CLIENT", "SNI", "SUBJECT", "SERIAL", "SPIFFE",
                                "BACKEND", "IN", "OUT", "AGE", "STATE", "PATH", "KERNEL"]
    first = lines[1]
    for v in ("127.0.0.1:5000", "gate.example.com", "CN=alice,O=Example", "0697CD",
              "spiffe://example.org/ns/prod/sa/alice", "127.0.0.1:8080", "1234", "56789", "2m05s",
              "relay", "ktls", "TLS 1.3 AES-128-GCM tx=sw rx=sw"):
        assert v in first
    assert first.split()[0] == "7"
    second = lines[2].split()
    assert second[:3] == ["8", "0", "[::1]:5001"]
    assert "40ms" in second and "handshake" in second
    assert second[-1] == "-"  # no kernel state


def test_show_conns_empty(daemon):
    daemon.replies["show conns"] = {"ok": True, "conns": []}
    r = run(daemon, "show", "conns")
    assert r.returncode == 0 and r.stdout == "no connections\n"


def test_show_conns_escapes_terminal_controls(daemon):
    evil = dict(CONNS["conns"][1], subject="CN=\x1b[2Jgotcha\x07")
    daemon.replies["show conns"] = {"ok": True, "conns": [evil]}
    r = run(daemon, "show", "conns")
    assert r.returncode == 0
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout
    assert "CN=\\x1b[2Jgotcha\\x07" in r.stdout


def test_show_generation_human(daemon):
    r = run(daemon, "show", "generation")
    assert r.returncode == 0, r.stderr
    assert r.stdout == (kv("generation", "3") + "\n" + kv("built at", "2026-11-30T03:00:00Z") + "\n"
                        + kv("source", "/etc/ktlsgate/ktlsgate.yaml") + "\n" + kv("runtime changes", "1") + "\n")


@pytest.mark.parametrize("args,out", [
    (["reload"], "reloaded: generation 4 (12.5 ms)\n"),
    (["drain"], "draining: no new connections; live ones may finish\n"),
    (["conn", "kill", "7"], "killed 1 connection\n"),
    (["cert", "begin", "x.pem"], "cert x.pem: transaction begun\n"),
    (["cert", "commit", "x.pem"], "cert x.pem: committed, generation 5\n"),
    (["crl", "abort", "x.crl"], "crl x.crl: transaction aborted\n"),
])
def test_short_human_output(daemon, args, out):
    r = run(daemon, *args)
    assert r.returncode == 0, r.stderr
    assert r.stdout == out


def test_conn_kill_none_matched(daemon):
    daemon.replies["conn kill"] = {"ok": True, "killed": 0}
    r = run(daemon, "conn", "kill", "--subject", "CN=nobody")
    assert r.returncode == 0 and r.stdout == "no connection matched\n"


def test_metrics_printed_raw(daemon):
    r = run(daemon, "metrics")
    assert r.returncode == 0, r.stderr
    assert r.stdout == METRICS_TEXT


# --- --json -----------------------------------------------------------------------

@pytest.mark.parametrize("cmd", ["show info", "show stats", "show certs", "show conns",
                                 "show generation", "reload", "drain", "metrics"])
def test_json_prints_reply_verbatim(daemon, cmd):
    raw = json.dumps(CANNED[cmd], separators=(",", ":"))
    daemon.replies[cmd] = raw.encode() + b"\n"
    r = run(daemon, "--json", *cmd.split())
    assert r.returncode == 0, r.stderr
    assert r.stdout == raw + "\n"
    assert json.loads(r.stdout) == CANNED[cmd]


def test_json_short_option_and_refusal(daemon):
    daemon.replies["reload"] = {"ok": False, "error": "/etc/ktlsgate/ktlsgate.yaml:3:1: bad"}
    r = run(daemon, "-j", "reload")
    assert r.returncode == 1
    assert json.loads(r.stdout) == {"ok": False, "error": "/etc/ktlsgate/ktlsgate.yaml:3:1: bad"}
    assert r.stderr == "ktlsgatectl: /etc/ktlsgate/ktlsgate.yaml:3:1: bad\n"


# --- the daemon says no ------------------------------------------------------

@pytest.mark.parametrize("args", [["reload"], ["show", "conns"], ["cert", "commit", "x.pem"],
                                  ["conn", "kill", "3"], ["metrics"]])
def test_ok_false_exits_1_with_message(daemon, args):
    daemon.replies[" ".join(args[:2]) if args[0] in ("show", "cert", "conn") else args[0]] = \
        {"ok": False, "error": "no such thing"}
    r = run(daemon, *args)
    assert r.returncode == 1
    assert r.stderr == "ktlsgatectl: no such thing\n"
    assert r.stdout == ""


def test_ok_false_without_error(daemon):
    daemon.replies["drain"] = {"ok": False}
    r = run(daemon, "drain")
    assert r.returncode == 1 and r.stderr.startswith("ktlsgatectl: ")


# --- a broken daemon: clean exit 4, never a hang --------------------------------

@pytest.mark.parametrize("reply,msg", [
    (b"this is not json\n", "bad reply from the daemon"),
    (b"[1,2,3]\n", "bad reply from the daemon"),
    (b'{"version":"0.1.0"}\n', "bad reply from the daemon"),
    (b'{"ok":"yes"}\n', "bad reply from the daemon"),
    (b'{"ok":true,"ok":false}\n', "bad reply from the daemon"),
    (b'{"ok":true', "closed the connection in the middle of a reply"),
    (b"", "closed the connection without replying"),
])
def test_bad_reply(daemon, reply, msg):
    daemon.replies["show info"] = reply
    r = run(daemon, "show", "info")
    assert r.returncode == 4, r.stderr
    assert msg in r.stderr
    assert r.stdout == ""


def test_no_reply_times_out(daemon):
    daemon.replies["reload"] = lambda c, req: True  # keeps the connection open, silent
    t0 = time.monotonic()
    r = run(daemon, "--timeout", "0.5", "reload")
    took = time.monotonic() - t0
    assert r.returncode == 4
    assert "no reply from the daemon within 0.500 s" in r.stderr
    assert took < 5


def test_daemon_never_reads(tmp_path):
    """A socket whose owner never accepts: the backlog fills, connect cannot
    complete, and the client still gives up at the deadline."""
    path = str(tmp_path / "stuck.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.listen(0)
    fillers = []
    for _ in range(4):  # fill the backlog
        f = socket.socket(socket.AF_UNIX)
        f.setblocking(False)
        try:
            f.connect(path)
        except BlockingIOError:
            f.close()
            break
        fillers.append(f)
    try:
        t0 = time.monotonic()
        r = ctl("--timeout", "0.5", "show", "info", sock=path)
        assert time.monotonic() - t0 < 5
        assert r.returncode == 3, r.stderr
        assert "Connection timed out (is ktlsgate running?)" in r.stderr
    finally:
        for f in fillers:
            f.close()
        s.close()


def test_reply_over_size_cap(daemon):
    def flood(c, req):
        chunk = b'{"ok":true,"text":"' + b"x" * (1 << 20)
        try:
            for _ in range((MAX_REPLY >> 20) + 2):
                c.sendall(chunk)
            c.sendall(b'"}\n')
        except OSError:
            pass  # the client hung up: what we want
    daemon.replies["metrics"] = flood
    r = run(daemon, "metrics")
    assert r.returncode == 4
    assert "reply longer than 64 MiB" in r.stderr
    assert r.stdout == ""


def test_reply_just_under_cap_is_fine(daemon):
    text = "y" * ((1 << 20) * 3)
    daemon.replies["metrics"] = {"ok": True, "text": text}
    r = run(daemon, "metrics")
    assert r.returncode == 0, r.stderr[:500]
    assert r.stdout == text


# --- no daemon ---------------------------------------------------------------------

def test_socket_missing_exit_3(tmp_path):
    path = str(tmp_path / "none.sock")
    r = ctl("show", "info", sock=path)
    assert r.returncode == 3
    assert r.stderr == f"ktlsgatectl: cannot connect to {path}: No such file or directory (is ktlsgate running?)\n"


def test_stale_socket_exit_3(tmp_path):
    path = str(tmp_path / "stale.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()  # the file stays, nobody listens
    r = ctl("reload", sock=path)
    assert r.returncode == 3
    assert "Connection refused (is ktlsgate running?)" in r.stderr


def test_default_socket_path_in_message():
    r = ctl("show", "info", env={})
    if os.path.exists("/run/ktlsgate/control.sock"):
        pytest.skip("a real daemon is running here")
    assert r.returncode == 3
    assert r.stderr.startswith("ktlsgatectl: cannot connect to /run/ktlsgate/control.sock: ")


def test_socket_from_environment(daemon):
    r = ctl("show", "generation", env={"KTLSGATE_SOCKET": daemon.path})
    assert r.returncode == 0, r.stderr
    assert daemon.requests == [{"cmd": "show generation"}]


def test_socket_option_beats_environment(daemon, tmp_path):
    r = ctl("--socket", daemon.path, "drain", env={"KTLSGATE_SOCKET": str(tmp_path / "other.sock")})
    assert r.returncode == 0, r.stderr


# --- usage errors: exit 2, nothing sent -----------------------------------------

USAGE = [
    [],
    ["frobnicate"],
    ["show"],
    ["show", "everything"],
    ["show", "info", "extra"],
    ["reload", "now"],
    ["cert"],
    ["cert", "frob", "x.pem"],
    ["cert", "begin"],
    ["cert", "begin", ""],
    ["cert", "set", "x.pem"],
    ["ca", "commit", "x.pem", "extra"],
    ["crl", "update", "x.crl"],
    ["conn", "kill"],
    ["conn", "kill", "abc"],
    ["conn", "kill", "0"],
    ["conn", "kill", "-3"],
    ["conn", "kill", "--serial", "xyz"],
    ["conn", "kill", "--serial"],
    ["conn", "kill", "--issuer", "CN=x"],
    ["conn", "kill", "7", "--serial", "1A"],
    ["policy", "set"],
    ["policy", "set", "public"],
    ["policy", "set", "public", "--site"],
    ["policy", "set", "public", "--bogus", "f.json"],
    ["policy", "set", "public", "/nonexistent/rules.json"],
    ["--timeout", "0", "show", "info"],
    ["--timeout", "abc", "show", "info"],
    ["--timeout", "-1", "reload"],
    ["--bogus", "reload"],
    ["-x", "reload"],
    ["-s"],
    ["-s", "", "show", "info"],
    ["help", "nosuch"],
]


@pytest.mark.parametrize("args", USAGE, ids=[" ".join(a) or "(none)" for a in USAGE])
def test_usage_error_exit_2(daemon, args):
    r = run(daemon, *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith("ktlsgatectl: ") or r.stderr.startswith("usage: ")
    assert daemon.requests == []


@pytest.mark.parametrize("content,msg", [
    ("{not json", "rules.json:1:"),
    ("[]", "expected an object"),
    ('{"allow": [], "permit": []}', "unknown key 'permit'"),
    ('{"allow": {"cn": "x"}}', "expected a list of rules"),
    ('{"deny": ["alice"]}', "a rule is an object"),
    ('{"allow": [], "allow": []}', "duplicate"),
])
def test_policy_file_errors(daemon, tmp_path, content, msg):
    f = tmp_path / "rules.json"
    f.write_text(content)
    r = run(daemon, "policy", "set", "public", str(f))
    assert r.returncode == 2
    assert msg in r.stderr
    assert daemon.requests == []


def test_pem_too_large_is_not_sent(daemon, tmp_path):
    f = tmp_path / "huge.pem"
    f.write_bytes(b"A" * ((1 << 20) + 10))
    r = run(daemon, "cert", "set", "x.pem", str(f))
    assert r.returncode == 2
    assert "larger than" in r.stderr
    assert daemon.requests == []


def test_request_over_1mib_after_escaping_is_not_sent(daemon, tmp_path):
    f = tmp_path / "big.pem"
    f.write_bytes(b"\n" * ((1 << 20) - 100))  # fits as a file, doubles as JSON ("\n")
    r = run(daemon, "cert", "set", "x.pem", str(f))
    assert r.returncode == 2
    assert "over the daemon's limit" in r.stderr
    assert daemon.requests == []


def test_binary_pem_refused(daemon, tmp_path):
    f = tmp_path / "cert.der"
    f.write_bytes(b"\x30\x82\x01\x00\x00\xff")
    r = run(daemon, "cert", "set", "x.pem", str(f))
    assert r.returncode == 2
    assert daemon.requests == []


# --- help and version ----------------------------------------------------------------

def test_help_lists_every_command(daemon):
    r = ctl("help")
    assert r.returncode == 0
    for c in ("show info", "show stats", "show certs", "show conns", "show generation", "reload",
              "cert begin", "ca begin", "crl begin", "policy set", "conn kill", "drain", "metrics"):
        assert f"\n  {c}" in r.stdout
    assert ctl("--help").stdout == r.stdout


def test_help_for_a_group():
    r = ctl("help", "show")
    assert r.returncode == 0
    assert "show conns" in r.stdout and "reload" not in r.stdout.split("commands:")[1]


def test_version():
    r = ctl("--version")
    assert r.returncode == 0 and r.stdout == "ktlsgatectl 0.1.0\n"
