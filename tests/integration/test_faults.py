"""Faults inside the daemon itself (issue 9): a completion queue that
overflows, and allocations that fail. The daemon must keep serving, lose no
completion and no byte, and leak nothing."""
import concurrent.futures
import os
import re
import time

import pytest

import tlsclient
from conftest import SANITIZED
from test_hardening import settled_nfds, still_serves

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
    assert "ring_error" not in d.text() and "cq_dropped" not in d.text()
    assert settled_nfds(d.proc.pid) == base
    still_serves(pki, port)
    assert d.proc.poll() is None


def test_cq_entries_out_of_bounds_is_a_start_error(pki, echo_backend, start_daemon,
                                                    monkeypatch):
    for bad in ("0", "1", "12", "32768", "8x"):
        monkeypatch.setenv("KTLSGATE_TEST_CQ_ENTRIES", bad)
        d, _ = start_daemon(echo_backend.addr, ready=False)
        assert d.proc.wait(15) != 0
        assert f"KTLSGATE_TEST_CQ_ENTRIES={bad}: want a power of two from 2 to 16384" in d.text()
