#!/usr/bin/python3
"""Turns the "kgb-result" lines of bench/ktls-guest.sh (read on stdin) into
markdown tables: medians with [min-max] over rounds, and the median of the
per-round kTLS/userspace and DPDK/userspace ratios (all paths measured in the
same round)."""
import argparse
import datetime
import json
import statistics
import sys

NAMES = {"ktls": "kTLS+splice", "user": "OpenSSL (userspace)", "dpdk": "DPDK cryptodev"}
MEM_FIELDS = ["rss", "anon", "smaps_anon", "pss", "slab", "unreclaim", "pagetables", "memfree"]


def cell(vals, fmt):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "n/a"
    med = statistics.median(vals)
    return f"{fmt(med)} [{fmt(min(vals))}–{fmt(max(vals))}]"


def ratio_cell(pairs):
    rs = [k / u for k, u in pairs if k is not None and u]
    if not rs:
        return "n/a"
    return f"×{statistics.median(rs):.2f} [{min(rs):.2f}–{max(rs):.2f}]"


def mem(s):
    vals = [int(x) for x in s.split()] if s else []
    return dict(zip(MEM_FIELDS, vals)) if len(vals) == len(MEM_FIELDS) else None


def idle_metrics(r):
    b = r.get("bench") or {}
    srv = b.get("server") or {}
    ok, n = b.get("ok") or 0, r["n"]
    m0, m1 = mem(r["mem_before"]), mem(r["mem_held"])
    out = {"ok": ok, "n": n, "errors": b.get("errors", 0), "access_ktls": r["access_ktls"]}
    if ok:
        out["rss_bench"] = (srv.get("rss_after_kb", 0) - srv.get("rss_before_kb", 0)) * 1024 / ok
    if m0 and m1 and ok == n:
        out["rss"] = (m1["rss"] - m0["rss"]) * 1024 / n
        out["anon"] = (m1["smaps_anon"] - m0["smaps_anon"]) * 1024 / n
        out["slab"] = (m1["slab"] - m0["slab"]) * 1024 / n
        out["kfree"] = (m0["memfree"] - m1["memfree"]) * 1024 / n
        out["fds"] = (r["fds_held"] - r["fds_before"]) / n
    return out


def bulk_metrics(r):
    b = r.get("bench") or {}
    srv = b.get("server") or {}
    nbytes = b.get("bytes_rx" if r["dir"] == "down" else "bytes_tx") or 0
    out = {"errors": b.get("errors", 0), "ok": b.get("ok", 0)}
    # The kernel set up a software TX session during a kTLS run, and none in a user run.
    t0 = [int(x) for x in r.get("tls_sw_before", "").split()]
    t1 = [int(x) for x in r.get("tls_sw_after", "").split()]
    out["path_ok"] = len(t0) == 2 and len(t1) == 2 and (t1[0] > t0[0]) == (r["path"] == "ktls")
    if nbytes and b.get("ok") == 1 and not b.get("errors"):
        gib = nbytes / 2**30
        out["cpu_gib"] = srv.get("cpu_s", 0) / gib
        out["mib_s"] = nbytes / 2**20 / b["duration_s"] if b.get("duration_s") else None
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--commit", default="?")
    ap.add_argument("--uml-mem", default="?")
    a = ap.parse_args()
    results, info = [], []
    for line in sys.stdin:
        if line.startswith("kgb-result "):
            try:
                results.append(json.loads(line[len("kgb-result "):]))
            except json.JSONDecodeError as e:
                info.append(f"unparsable result line ({e})")
        elif line.startswith(("kgb-info ", "kgb-error ")):
            info.append(line.strip())
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"## kTLS vs userspace (vs DPDK) in the UML guest: {now}, commit {a.commit}, UML mem={a.uml_mem}\n")
    for i in info:
        print(f"    {i}")
    print()
    idle = [dict(r, m=idle_metrics(r)) for r in results if r["test"] == "idle"]
    if idle:
        print("### Idle connections: memory per connection (bytes), median [min–max] over rounds\n")
        print("| N | path | held | server RSS Δ/N | server anon (smaps_rollup) Δ/N "
              "| guest slab Δ/N (all sockets, both sides) | guest MemFree drop/N | server fds/conn |")
        print("|---|---|---|---|---|---|---|---|")
        for n in sorted({r["n"] for r in idle}):
            for path in ("ktls", "user"):
                rs = [r["m"] for r in idle if r["n"] == n and r["path"] == path]
                if not rs:
                    continue
                held = f"{min(x['ok'] for x in rs)}/{n}"
                f0 = lambda v: f"{v:.0f}"
                print(f"| {n} | {path} | {held} | {cell([x.get('rss') for x in rs], f0)} "
                      f"| {cell([x.get('anon') for x in rs], f0)} "
                      f"| {cell([x.get('slab') for x in rs], f0)} "
                      f"| {cell([x.get('kfree') for x in rs], f0)} "
                      f"| {cell([x.get('fds') for x in rs], lambda v: f'{v:.1f}')} |")
        print()
        ns = sorted({r["n"] for r in idle})
        if len(ns) >= 2:
            lo, hi = ns[0], ns[-1]
            print(f"Marginal cost of one more connection, from the medians at N={lo} and N={hi} "
                  "(what a connection keeps, without the one-time growth):\n")
            for path in ("ktls", "user"):
                parts = []
                for key, what in (("rss", "RSS"), ("anon", "anon")):
                    med = {}
                    for n in (lo, hi):
                        v = [r["m"].get(key) for r in idle if r["n"] == n and r["path"] == path]
                        v = [x for x in v if x is not None]
                        med[n] = statistics.median(v) if v else None
                    if None not in med.values():
                        parts.append(f"{what} {(hi * med[hi] - lo * med[lo]) / (hi - lo):.0f} B")
                if parts:
                    print(f"* {path}: " + ", ".join(parts))
            print()
    bulk = [dict(r, m=bulk_metrics(r)) for r in results if r["test"] == "bulk"]
    if bulk:
        paths = [p for p in ("ktls", "user", "dpdk") if any(r["path"] == p for r in bulk)]
        others = [p for p in paths if p != "user"]
        print("### Bulk: server CPU seconds per GiB relayed, median [min–max] over rounds\n")
        print("| suite | dir | " + " | ".join(f"{NAMES[p]} s/GiB" for p in paths)
              + "".join(f" | {NAMES[p]}/user (per round)" for p in others if "user" in paths)
              + "".join(f" | {NAMES[p]} MiB/s" for p in paths) + " |")
        print("|---|---|" + "---|" * (2 * len(paths) + (len(others) if "user" in paths else 0)))
        keys = []
        for r in bulk:
            if (r["suite"], r["dir"]) not in keys:
                keys.append((r["suite"], r["dir"]))
        f2 = lambda v: f"{v:.2f}"
        f0 = lambda v: f"{v:.0f}"
        for suite, d in keys:
            sel = {p: {r["round"]: r["m"] for r in bulk
                       if r["suite"] == suite and r["dir"] == d and r["path"] == p}
                   for p in paths}
            row = [cell([m.get("cpu_gib") for m in sel[p].values()], f2) for p in paths]
            if "user" in paths:
                u = sel["user"]
                for p in others:
                    row.append(ratio_cell([(sel[p][x].get("cpu_gib"), u[x].get("cpu_gib"))
                                           for x in sel[p] if x in u]))
            row += [cell([m.get("mib_s") for m in sel[p].values()], f0) for p in paths]
            print(f"| TLS {suite[:1]}.{suite[1:2]} {suite[3:]} | {d} | " + " | ".join(row) + " |")
        wrong = [r for r in bulk if not r["m"]["path_ok"]]
        if wrong:
            print(f"\n{len(wrong)} bulk run(s) did not take the expected path (TlsTxSw): "
                  + ", ".join(f"{r['path']}/{r['suite']}/{r['dir']}/r{r['round']}" for r in wrong))
        bad = [r for r in bulk if r["m"].get("errors") or r["m"].get("ok") != 1]
        if bad:
            print(f"\n{len(bad)} bulk run(s) had errors and are left out of the table.")
        print()

if __name__ == "__main__":
    main()
