#!/usr/bin/python3
"""Reload latency: how long from `reload` on the control socket until the new
generation serves new connections, for a small and a large configuration
(20 SNI sites, a CRL with 10,000 revoked serials). Prints a Markdown table.

usage: bench/reload_latency.py [--rounds N] [--bin build/ktlsgate]"""
import argparse
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "pki"))
import gen_pki  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402


def ctl(path, cmd):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        s.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            data += s.recv(65536)
    return json.loads(data)


def big_crl(pki, n):
    with open(f"{pki}/intermediate-ca.crt", "rb") as f:
        inter = x509.load_pem_x509_certificate(f.read())
    with open(f"{pki}/intermediate-ca.key", "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    now = datetime.datetime.utcnow()
    b = (x509.CertificateRevocationListBuilder().issuer_name(inter.subject)
         .last_update(now).next_update(now + datetime.timedelta(days=7)))
    for serial in range(1, n + 1):
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial * 7919)
                                      .revocation_date(now).build())
    with open(f"{pki}/big.crl", "wb") as f:
        f.write(b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    with open(f"{pki}/root.crl", "rb") as f:
        root = f.read()
    with open(f"{pki}/big-bundle.pem", "wb") as f:
        f.write(root + open(f"{pki}/big.crl", "rb").read())


def config(pki, port, sites, crl):
    text = f"""listeners:
  - listen: "127.0.0.1:{port}"
    identities:
      - {{ cert: "{pki}/server-ecdsa-chain.crt", key: "{pki}/server-ecdsa.key" }}
    client_ca: "{pki}/client-ca.pem"
    backends: "127.0.0.1:9"
"""
    if crl:
        text += f'    crl: "{pki}/big-bundle.pem"\n    crl_missing: allow\n'
    if sites:
        text += "    sites:\n"
        for i in range(sites):
            text += f'      - {{ names: "site{i}.test", client_ca: "{pki}/client-ca.pem" }}\n'
    return text


def measure(binary, pki, work, sites, crl, rounds):
    port = 20000 + os.getpid() % 10000
    path = os.path.join(work, "c.yaml")
    with open(path, "w") as f:
        f.write(config(pki, port, sites, crl))
    sock = os.path.join(work, "c.sock")
    p = subprocess.Popen([binary, "--config", path, "--control-socket", sock, "--workers", "2"],
                         stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while not os.path.exists(sock) and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        walls = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            r = ctl(sock, "reload")
            assert r["ok"], r
            walls.append((time.perf_counter() - t0) * 1000)
        return walls
    finally:
        p.terminate()
        p.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "build", "ktlsgate"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        pki = os.path.join(work, "pki")
        subprocess.run([sys.executable, os.path.join(HERE, "..", "tests", "pki", "gen_pki.py"), pki],
                       check=True, stdout=subprocess.DEVNULL)
        big_crl(pki, 10000)
        print("| configuration | reloads | median ms | p90 ms | max ms |")
        print("|---|---|---|---|---|")
        for label, sites, crl in (("1 listener, 1 identity, no CRL", 0, False),
                                  ("1 listener, 20 SNI sites", 20, False),
                                  ("1 listener, CRL with 10,000 serials", 0, True),
                                  ("20 SNI sites + 10,000-serial CRL each", 20, True)):
            w = sorted(measure(a.bin, pki, work, sites, crl, a.rounds))
            print(f"| {label} | {len(w)} | {statistics.median(w):.1f} | {w[int(0.9 * len(w)) - 1]:.1f} | {w[-1]:.1f} |")


if __name__ == "__main__":
    main()
