#!/usr/bin/env python3
"""Soak test: one ktlsgate under mixed load for N minutes (default 10).

Load: good clients doing bulk transfers (64 KiB .. 4 MiB, TLS 1.2 and 1.3) checked byte-exact by sha256 at a sink backend, and refused
clients (unknown CA, no certificate). Churn: `reload` on the control socket
every 10 s, a server certificate rotation (cert begin/set/commit) every 30 s.

Pass: every good transfer byte-exact, every refused client refused, the
daemon never restarted (same PID, uptime only grows), and after the load
stops and a settle period the open fds, io_uring instances and VmRSS are
within 5% of what they were after the warm-up.

  /usr/bin/python3 tests/soak/soak.py --bin build/ktlsgate --minutes 10
Exit 0 on pass, 1 on failure; a summary line per minute and at the end."""
import argparse
import hashlib
import os
import random
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.join(ROOT, "tests", "pki"))

import tlsclient  # noqa: E402
from conftest import Backend, Daemon, free_port, sha256_sink_handler  # noqa: E402

CONFIG = """
global:
  workers: 2
  ticket_key_rotation: 1m
  # The session cache is memory held by design, up to its bound (tested in
  # test_session_cache.py): small enough that the warm-up fills it before
  # the baseline, so what the soak compares is what leaks.
  session_cache: 256
listeners:
  - name: soak
    listen: "127.0.0.1:{port}"
    identities:
      - {{ cert: "{pki}/server-ecdsa-chain.crt", key: "{pki}/server-ecdsa.key" }}
    client_ca: "{pki}/client-ca.pem"
    backends: "{backend}"
"""


def vitals(pid):
    """(open fds, io_uring fds, VmRSS KiB)."""
    fds = uring = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        fds += 1
        try:
            uring += os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[io_uring]"
        except OSError:
            pass
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    return fds, uring, rss


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.good = self.resumed = self.refused = self.bytes = 0
        self.failures = []

    def fail(self, what):
        with self.lock:
            if len(self.failures) < 50:
                self.failures.append(what)


def new_identity(pki, n):
    """A fresh server certificate from the test intermediate, PEM cert+chain+key."""
    import gen_pki
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID
    with open(f"{pki}/intermediate-ca.crt", "rb") as f:
        inter = x509.load_pem_x509_certificate(f.read())
    with open(f"{pki}/intermediate-ca.key", "rb") as f:
        inter_key = serialization.load_pem_private_key(f.read(), None)
    k = gen_pki.ec_key()
    c = gen_pki.build(gen_pki.name(f"soak-{n}.localhost"), k, inter, inter_key,
                      eku=[ExtendedKeyUsageOID.SERVER_AUTH], sans=(x509.DNSName("localhost"),))
    enc = serialization.Encoding.PEM
    return (c.public_bytes(enc) + inter.public_bytes(enc) + k.private_bytes(
        enc, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())).decode()


def client_loop(pki, port, stop, stats, seed):
    rnd = random.Random(seed)
    contexts = {v: tlsclient.context(pki, version=v)
                for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)}
    bad = [tlsclient.context(pki, cert="client-other"), tlsclient.context(pki, cert=None)]
    while not stop.is_set():
        try:
            if rnd.random() < 0.2:
                err = tlsclient.refusal(rnd.choice(bad), port)
                if err.startswith("no alert"):
                    stats.fail(f"refused client was let in: {err}")
                else:
                    with stats.lock:
                        stats.refused += 1
                continue
            ctx = contexts[rnd.choice(list(contexts))]
            size = rnd.choice([64 << 10, 256 << 10, 1 << 20, 4 << 20])
            payload = rnd.randbytes(size)
            digest = tlsclient.half_close_exchange(ctx, port, payload, timeout=120)
            if digest != hashlib.sha256(payload).hexdigest().encode():
                stats.fail(f"transfer of {size} bytes not byte-exact: {digest[:80]!r}")
            else:
                with stats.lock:
                    stats.good += 1
                    stats.bytes += size
        except Exception as e:  # noqa: BLE001 - every failure is counted and reported
            stats.fail(f"good client: {type(e).__name__}: {e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.environ.get("KTLSGATE_BIN", os.path.join(ROOT, "build", "ktlsgate")))
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--clients", type=int, default=4, help="concurrent client threads")
    # 90 s: bounded pools are first touched under load and take a while to
    # fill (the workers' receive buffer rings, DPDK's session and buffer
    # mempools, the session cache); a leak keeps growing after that.
    ap.add_argument("--warmup", type=float, default=90, help="seconds of load before the baseline")
    ap.add_argument("--settle", type=float, default=10, help="seconds idle before each measurement")
    ap.add_argument("--reload-every", type=float, default=10)
    ap.add_argument("--rotate-every", type=float, default=30)
    ap.add_argument("--tolerance", type=float, default=0.05)
    a = ap.parse_args()
    os.environ["KTLSGATE_BIN"] = os.path.abspath(a.bin)
    import conftest
    conftest.BIN = os.path.abspath(a.bin)

    work = tempfile.mkdtemp(prefix="ktlsgate-soak")
    pki = os.path.join(work, "pki")
    subprocess.run([sys.executable, os.path.join(ROOT, "tests", "pki", "gen_pki.py"), pki],
                   check=True, stdout=subprocess.DEVNULL)
    sink = Backend(sha256_sink_handler)
    port = free_port()
    cfg = os.path.join(work, "ktlsgate.yaml")
    with open(cfg, "w") as f:
        f.write(CONFIG.format(port=port, pki=pki, backend=sink.addr))
    d = Daemon(["--config", cfg], os.path.join(work, "ktlsgate.log"))
    d.wait_ready()
    pid = d.proc.pid
    stats = Stats()
    stop = threading.Event()
    threads = [threading.Thread(target=client_loop, args=(pki, port, stop, stats, i), daemon=True)
               for i in range(a.clients)]
    for t in threads:
        t.start()
    failures = []

    def run_churn(seconds, state):
        end = time.time() + seconds
        while time.time() < end:
            time.sleep(1)
            now = time.time()
            if now >= state["next_reload"]:
                r = d.ctl("reload")
                state["reloads"] += 1
                if not r.get("ok"):
                    failures.append(f"reload failed: {r}")
                state["next_reload"] = now + a.reload_every
            if now >= state["next_rotate"]:
                name = f"{pki}/server-ecdsa-chain.crt"
                state["rotations"] += 1
                steps = [d.ctl("cert begin", name=name),
                         d.ctl("cert set", name=name, pem=new_identity(pki, state["rotations"])),
                         d.ctl("cert commit", name=name)]
                if not all(s.get("ok") for s in steps):
                    failures.append(f"cert rotation failed: {steps}")
                state["next_rotate"] = now + a.rotate_every
            info = d.ctl("show info")
            if info.get("pid") != pid or info.get("uptime_s", 0) < state["uptime"]:
                failures.append(f"daemon restarted: {info}")
            state["uptime"] = info.get("uptime_s", 0)
            if d.proc.poll() is not None:
                failures.append(f"daemon exited {d.proc.returncode}")
                return
            if now >= state["next_report"]:
                fds, uring, rss = vitals(pid)
                print(f"soak: t={now - state['t0']:.0f}s good={stats.good} refused={stats.refused} "
                      f"bytes={stats.bytes} reloads={state['reloads']} rotations={state['rotations']} "
                      f"fds={fds} io_uring={uring} rss_kib={rss} failures={len(stats.failures)}",
                      flush=True)
                state["next_report"] = now + 60

    t0 = time.time()
    state = {"t0": t0, "next_reload": t0 + a.reload_every, "next_rotate": t0 + a.rotate_every,
             "next_report": t0 + 60, "reloads": 0, "rotations": 0, "uptime": 0}
    # Warm-up under load (allocator arenas, OpenSSL caches), then a quiet
    # moment for the baseline.
    run_churn(a.warmup, state)
    stop.set()
    for t in threads:
        t.join(180)
    time.sleep(a.settle)
    start = vitals(pid)
    print(f"soak: baseline fds={start[0]} io_uring={start[1]} rss_kib={start[2]}", flush=True)
    stop.clear()
    threads = [threading.Thread(target=client_loop, args=(pki, port, stop, stats, 100 + i), daemon=True)
               for i in range(a.clients)]
    for t in threads:
        t.start()
    run_churn(max(0, a.minutes * 60 - a.warmup), state)
    stop.set()
    for t in threads:
        t.join(180)
    time.sleep(a.settle)
    end = vitals(pid)
    alive = d.proc.poll() is None
    rc = d.stop()
    sink.close()
    print(f"soak: end fds={end[0]} io_uring={end[1]} rss_kib={end[2]}; good={stats.good} "
          f"refused={stats.refused} bytes={stats.bytes} reloads={state['reloads']} "
          f"rotations={state['rotations']} minutes={(time.time() - t0) / 60:.1f}", flush=True)

    for name, s, e in zip(("fds", "io_uring fds", "VmRSS"), start, end):
        if e > s * (1 + a.tolerance):
            failures.append(f"{name} grew from {s} to {e} (> {a.tolerance:.0%})")
    if end[1] != start[1]:
        failures.append(f"io_uring instances changed: {start[1]} -> {end[1]}")
    if not alive or rc not in (0, None):
        failures.append(f"daemon not alive at the end or exit status {rc}")
    if stats.good == 0 or stats.refused == 0:
        failures.append("no traffic of one kind: the load generator is broken")
    failures += stats.failures
    log = d.text()
    if "ERROR: AddressSanitizer" in log or "runtime error:" in log:
        failures.append("sanitizer report in the daemon log")
    if failures:
        print("soak: FAIL\n  " + "\n  ".join(failures[:50]), file=sys.stderr)
        print(f"soak: daemon log kept at {d.log_path}", file=sys.stderr)
        return 1
    shutil.rmtree(work, ignore_errors=True)
    print("soak: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
