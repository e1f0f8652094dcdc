#!/usr/bin/python3
"""Server CPU per GiB relayed, per record engine, as one picture:
  host  (bench/compare JSON): ktlsgate OpenSSL path, ktlsgate DPDK engine, nginx
  guest (bench/ktls-guest.sh output, its kgb-result lines): kTLS + splice,
        OpenSSL path, DPDK engine, in the one-vCPU user-mode-linux guest
Bars are medians over rounds, whiskers min-max; every engine of a panel was
measured side by side in the same run.

  bench/plot-engines.py --host bench/results/DATE.json \\
      --guest bench/results/engines-guest-DATE.txt --out bench/plots/engines.png
Needs python3-matplotlib (Debian)."""
import argparse
import importlib.util
import json
import os
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
COLORS = {"ktls": "#4c72b0", "openssl": "#dd8452", "dpdk": "#55a868", "nginx": "#8172b3"}
LABELS = {"ktls": "kTLS + splice", "openssl": "ktlsgate OpenSSL path",
          "dpdk": "ktlsgate DPDK cryptodev", "nginx": "nginx 1.22 stream"}


def guest_report():
    """ktls-guest-report.py's parsing, so both read a run the same way."""
    spec = importlib.util.spec_from_file_location("kgr", os.path.join(HERE, "ktls-guest-report.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def host_series(path):
    """{group: {engine: (median, min, max)}} from bench/compare's summary."""
    with open(path) as f:
        summary = json.load(f)["summary"]
    names = {"ktlsgate-openssl": "openssl", "ktlsgate-dpdk": "dpdk", "nginx": "nginx"}
    out = {}
    for row, group in (("bulk-aes128", "AES-128-GCM\ndown"), ("bulk-aes256", "AES-256-GCM\ndown")):
        peers = summary.get(row, {}).get("peers", {})
        out[group] = {names[p]: (v["median"], v["min"], v["max"])
                      for p, v in peers.items() if p in names}
    return out


def guest_series(path):
    kgr = guest_report()
    runs = []
    with open(path) as f:
        for line in f:
            if line.startswith("kgb-result "):
                r = json.loads(line[len("kgb-result "):])
                if r["test"] == "bulk":
                    runs.append(dict(r, m=kgr.bulk_metrics(r)))
    names = {"ktls": "ktls", "user": "openssl", "dpdk": "dpdk"}
    out = {}
    for r in runs:
        group = f"{r['suite'][:1]}.{r['suite'][1:2]} {r['suite'][3:]}\n{r['dir']}"
        v = r["m"].get("cpu_gib")
        if v is not None:
            out.setdefault(group, {}).setdefault(names[r["path"]], []).append(v)
    return {g: {e: (statistics.median(v), min(v), max(v)) for e, v in es.items()}
            for g, es in out.items()}


def panel(ax, series, engines, title, log):
    groups = list(series)
    width = 0.8 / len(engines)
    for i, e in enumerate(engines):
        xs, meds, lo, hi = [], [], [], []
        for g, es in enumerate(groups):
            if e in series[es]:
                m, a, b = series[es][e]
                xs.append(g - 0.4 + width * (i + 0.5))
                meds.append(m)
                lo.append(m - a)
                hi.append(b - m)
        bars = ax.bar(xs, meds, width, yerr=[lo, hi], capsize=2, color=COLORS[e], label=LABELS[e])
        for bar, m in zip(bars, meds):
            ax.annotate(f"{m:.2f}", (bar.get_x() + bar.get_width() / 2, m), ha="center",
                        va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, fontsize=8)
    ax.set_ylabel("server CPU s per GiB relayed")
    if log:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)
    ax.grid(axis="y", alpha=0.3)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", required=True, help="bench/compare JSON (bulk rows)")
    ap.add_argument("--guest", required=True, help="bench/ktls-guest.sh output (kgb-result lines)")
    ap.add_argument("--out", default=os.path.join(HERE, "plots", "engines.png"))
    a = ap.parse_args()
    host, guest = host_series(a.host), guest_series(a.guest)
    fig, (h, g) = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [1, 2.4]})
    panel(h, host, ["openssl", "dpdk", "nginx"],
          "host (kernel without kTLS), 1 worker on CPU 0, TLS 1.3", False)
    panel(g, guest, ["ktls", "openssl", "dpdk"],  # groups: TLS version, cipher, direction
          "user-mode-linux guest, 1 vCPU (log scale: its kTLS is portable-C AES-GCM)", True)
    fig.suptitle("ktlsgate record engines: server CPU per GiB (lower is better; "
                 "median, whiskers min–max over rounds)", fontsize=11)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    fig.savefig(a.out, dpi=110)
    print(a.out)


if __name__ == "__main__":
    main()
