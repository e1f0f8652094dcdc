"""Faults inside the daemon itself (issue 9): a completion queue that
overflows, and allocations that fail. The daemon must keep serving, lose no
completion and no byte, and leak nothing."""
import concurrent.futures
import json
import os
import re
import threading
import time

import pytest

import test_control
import tlsclient
from conftest import BIN, SANITIZED
from procfs import settled_nfds
from test_hardening import still_serves

MIB = 1 << 20


def transfers(pki, port, sizes, workers):
    """Echo transfers of the given sizes, all at once; a list of bools."""
    ctx = tlsclient.context(pki)
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        futs = [ex.submit(tlsclient.echo_transfer, ctx, port, n, 300) for n in sizes]
        return [f.result()[0] for f in futs]


# --- io_uring completion queue overflow ------------------------------------------------------

@pytest.mark.parametrize("engine", ["openssl", "auto"])
def test_cq_overflow_loses_no_completion(pki, echo_backend, start_daemon, monkeypatch, engine):
    """An 8-entry CQ (KTLSGATE_TEST_CQ_ENTRIES) under 160 concurrent connections:
    completions overflow into the kernel's list (logged: cq_overflow, counted:
    show stats cq_overflows) and come back in order; every transfer is byte-exact,
    every connection is logged result=ok, nothing leaks."""
    monkeypatch.setenv("KTLSGATE_TEST_CQ_ENTRIES", "8")
    d, port = start_daemon(echo_backend.addr, "--record-engine", engine)
    base = settled_nfds(d.proc.pid)
    sizes = [4 * MIB] * 24 + [2000] * 136
    ok = transfers(pki, port, sizes, workers=len(sizes))
    assert ok.count(True) == len(sizes), f"{ok.count(False)} transfers not byte-exact"
    lines = d.wait_access(len(sizes), timeout=60)
    assert all("result=ok" in l for l in lines), [l for l in lines if "result=ok" not in l][:3]
    dropped = re.findall(r"cq_overflow worker=\d+ cq_entries=8 rounds=\d+ rounds_total=\d+ "
                         r"dropped=(\d+)", d.text())
    assert dropped, "the CQ never overflowed: the test proves nothing\n" + d.text()[-3000:]
    assert set(dropped) == {"0"}, dropped
    stats = d.ctl("show stats")
    assert stats["ok"] and stats["total"]["cq_overflows"] > 0, stats
    metrics = d.ctl("metrics").get("text", "")
    m = re.search(r"^ktlsgate_io_uring_cq_overflows_total (\d+)$", metrics, re.M)
    assert m and int(m.group(1)) > 0, metrics[-2000:]
    assert "ring_error" not in d.text() and "cq_dropped" not in d.text()
    assert settled_nfds(d.proc.pid) == base
    still_serves(pki, port)
    assert d.proc.poll() is None


def test_cq_entries_out_of_bounds_is_a_start_error(pki, echo_backend, start_daemon,
                                                    monkeypatch, daemons):
    for bad in ("0", "1", "12", "32768", "8x"):
        monkeypatch.setenv("KTLSGATE_TEST_CQ_ENTRIES", bad)
        d, _ = start_daemon(echo_backend.addr, ready=False)
        assert exited_cleanly(d, daemons) == 2
        assert f"KTLSGATE_TEST_CQ_ENTRIES={bad}: want a power of two from 2 to 16384" in d.text()


# --- allocation failures (tests/integration/enomem_shim.c) ----------------------------------

# test_control's one listener, with a CRL: revocation must survive the faults.
CONFIG = test_control.CONFIG + '    crl: "{pki}/crl-bundle.pem"\n'


def shim_path():
    path = os.environ.get("KTLSGATE_ENOMEM_SHIM") or os.path.join(
        os.path.dirname(BIN), "tests", "enomem_shim.so")
    assert os.path.exists(path), f"{path} missing: ninja -C build builds it"
    return path


def with_shim(monkeypatch, ctl, command="off"):
    with open(ctl, "w") as f:
        f.write(command)
    monkeypatch.setenv("LD_PRELOAD", shim_path())
    monkeypatch.setenv("KTLSGATE_ENOMEM_CTL", ctl)
    # libfyaml 0.7.12 crashes when this one fails (enomem_shim.c): not ours to fix.
    monkeypatch.setenv("KTLSGATE_ENOMEM_SPARE", "fy_input_create")
    if SANITIZED:  # the shim comes before the sanitizer's runtime
        opts = os.environ.get("ASAN_OPTIONS", "")
        # Full stacks (libfyaml has no frame pointers) so that the
        # suppressions below can name the library a leak comes from.
        monkeypatch.setenv("ASAN_OPTIONS", (opts + ":" if opts else "")
                           + "verify_asan_link_order=0:fast_unwind_on_malloc=0")
        monkeypatch.setenv("LSAN_OPTIONS", "suppressions=" + os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "enomem.lsan.supp"))


def exited_cleanly(d, daemons):
    """A daemon that was meant to stop on its own: judged here (an exit
    status, no sanitizer report), not by the fixture that fails any non-zero
    status under sanitizers."""
    rc = d.proc.wait(30)
    d.stop()
    daemons.remove(d)
    assert "ERROR: AddressSanitizer" not in d.text() and "runtime error:" not in d.text(), \
        d.text()[-4000:]
    return rc


def set_fault(ctl, command):
    with open(ctl, "w") as f:
        f.write(command)
    time.sleep(0.1)  # the shim looks every 20 ms


def failed_allocations(ctl):
    time.sleep(0.1)
    with open(ctl + ".count") as f:
        return int(f.read().split()[0])


def attempt(fn, *args):
    """Runs one client action; under injected failures it may fail: only the
    daemon's survival is judged."""
    try:
        return fn(*args)
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        return e


def hostile_mix(pki, d, port, stop):
    """Handshakes, refusals, bulk transfers and control commands, over and over."""
    good, other = tlsclient.context(pki), tlsclient.context(pki, cert="client-other")
    i = 0
    while not stop.is_set():
        i += 1
        attempt(tlsclient.echo_transfer, good, port, 2000, 20)
        attempt(tlsclient.refusal, other, port)
        if i % 4 == 0:
            attempt(tlsclient.echo_transfer, good, port, MIB, 30)
        for cmd in ("show stats", "show conns", "show certs", "show info", "metrics"):
            attempt(d.ctl, cmd)
        if i % 3 == 0:
            attempt(d.ctl, "reload")


@pytest.mark.parametrize("every", [97, 13])
def test_enomem_at_runtime_refuses_one_and_keeps_serving(pki, echo_backend, start_config,
                                                          monkeypatch, tmp_path, every):
    """Every Nth allocation fails (all threads: workers, control, OpenSSL) while
    clients handshake, get refused, transfer in bulk and the control socket is
    used and reloaded. No crash or sanitizer report; afterwards a good client
    transfers byte-exact, reload and show stats work, and fds return to baseline."""
    ctl = str(tmp_path / "enomem")
    with_shim(monkeypatch, ctl)
    d, port, _ = start_config(CONFIG, backend=echo_backend.addr, extra=("--workers", "2"))
    base = settled_nfds(d.proc.pid)
    set_fault(ctl, f"every {every}")
    stop = threading.Event()
    threads = [threading.Thread(target=hostile_mix, args=(pki, d, port, stop)) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(8)
    stop.set()
    for t in threads:
        t.join(120)
    set_fault(ctl, "off")
    assert failed_allocations(ctl) > 0
    assert d.proc.poll() is None, d.text()[-4000:]
    text = d.text()
    # Each refused connection or request says so: an access line with the
    # reason, a reload_failed or control_error line.
    assert re.search(r"access .*(end=out_of_memory|detail=\"malloc failure\")", text), text[-3000:]
    assert re.search(r"reload_failed|control_error", text), text[-3000:]
    assert tlsclient.echo_transfer(tlsclient.context(pki), port, 4 * MIB, 60)[0]
    served_right(pki, port)
    assert d.ctl("reload")["ok"]
    assert d.ctl("show stats")["ok"]
    assert settled_nfds(d.proc.pid) == base


def served_right(pki, port):
    """A good client transfers byte-exact, a revoked one is refused: a
    generation built while allocations failed lost no CA, CRL or rule."""
    assert tlsclient.echo_transfer(tlsclient.context(pki), port, 100_000, 30)[0]
    err = tlsclient.refusal(tlsclient.context(pki, cert="client-revoked"), port)
    assert "REVOKED" in err.upper(), err


# The Kth allocation since main() fails: 1..~17,500 cover OpenSSL's and
# DPDK's initialisation, option and YAML parsing, certificate loading, the
# rings. One failure at a time: with several, OpenSSL 3.0 can leave its
# default library context with a NULL lock and crash inside itself
# (tests/README.md).
STARTUP_FAULTS = [f"at {k}" for k in (1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987,
                                      1597, 2584, 4181, 6765, 10946, 17711)]


def test_enomem_during_startup_is_a_clean_exit_or_a_correct_daemon(pki, echo_backend, start_config,
                                                                   monkeypatch, tmp_path, daemons):
    """An allocation failing anywhere in start-up: the daemon either exits
    with an error status (no signal, no sanitizer report) or starts and serves
    exactly as configured."""
    ctl = str(tmp_path / "enomem")
    outcomes = {}
    for fault in STARTUP_FAULTS:
        with_shim(monkeypatch, ctl, fault)
        d, port, _ = start_config(CONFIG, ready=False, backend=echo_backend.addr,
                                  extra=("--workers", "2"))
        try:
            d.wait_ready(timeout=20 * (3 if SANITIZED else 1))
        except AssertionError:
            rc = exited_cleanly(d, daemons)
            assert rc > 0, f"{fault}: killed by signal {-rc}:\n{d.text()[-3000:]}"
            outcomes[fault] = f"exit {rc}"
            continue
        set_fault(ctl, "off")
        served_right(pki, port)
        outcomes[fault] = "served"
    print(outcomes)
    assert "served" in outcomes.values()
