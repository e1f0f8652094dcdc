#!/usr/bin/python3
"""kTLS on both sockets of a backend_tls connection, inside the user-mode-linux
guest (tests/ktls/run-uml.sh; exits 77 on a kernel without kTLS).

A Python ssl upstream with its own PKI requires ktlsgate's client certificate.
Proof that the kernel did TLS on both sockets: /proc/net/tls_stat counts two
new TX and two new RX kTLS sockets per relayed mTLS-in/mTLS-out connection
(the clients and the upstream are userspace OpenSSL, so nothing else adds to
it) and the access log says path=ktls. Also: sha256-checked 64 MiB both ways
(TLS 1.2 and 1.3 upstreams), plain-in/mTLS-out with one new kTLS socket,
resumption towards the upstream through the handoff (TLS 1.3: the handoff
waits for the first ticket), and an upstream refusal after the handoff."""
import hashlib
import os
import socket
import ssl
import subprocess
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "pki"))
import ktls_daemon_test as kt  # noqa: E402  (check, tls_stat, transfer helpers)
import gen_pki  # noqa: E402
import upstream_pki  # noqa: E402

MIB = 1 << 20
TOTAL = int(os.environ.get("KTLS_TEST_MIB", "64")) * MIB


def make_pki(d):
    gen_pki.main(d)  # the client side: root-ca.crt, client-chain.crt, server-ecdsa-*
    upstream_pki.make(d)  # the upstream's: up-root.crt, api.*, kg-client.*


class Upstream:
    def __init__(self, pki, version=None):
        self.ctx = upstream_pki.server_context(pki, version=version)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.resumed = []
        threading.Thread(target=self.loop, daemon=True).start()

    def loop(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        try:
            s = self.ctx.wrap_socket(c, server_side=True)
            self.resumed.append(s.session_reused)
            while True:
                d = s.recv(1 << 16)
                if not d:
                    break
                s.sendall(d)
            s.unwrap().shutdown(socket.SHUT_WR)
        except (ssl.SSLError, OSError):
            pass
        finally:
            c.close()


CONFIG = """global:
  workers: 1
listeners:
  - listen: "127.0.0.1:{port}"
    identities: [{{ cert: {pki}/server-ecdsa-chain.crt, key: {pki}/server-ecdsa.key }}]
    client_ca: {pki}/client-ca.pem
    backends: "127.0.0.1:{up}"
    backend_tls:
      client_cert: {pki}/kg-client.crt
      client_key: {pki}/kg-client.key
      ca: {pki}/up-root.crt
      verify_name: api.internal
  - listen: "127.0.0.1:{egress}"
    listen_tls: false
    backends: "127.0.0.1:{up}"
    backend_tls:
      client_cert: {pki}/kg-client.crt
      client_key: {pki}/kg-client.key
      ca: {pki}/up-root.crt
      verify_name: api.internal
  - listen: "127.0.0.1:{nocert}"
    identities: [{{ cert: {pki}/server-ecdsa-chain.crt, key: {pki}/server-ecdsa.key }}]
    client_ca: {pki}/client-ca.pem
    backends: "127.0.0.1:{up}"
    backend_tls: {{ ca: {pki}/up-root.crt, verify_name: api.internal }}
  - listen: "127.0.0.1:{perbe}"
    identities: [{{ cert: {pki}/server-ecdsa-chain.crt, key: {pki}/server-ecdsa.key }}]
    client_ca: {pki}/client-ca.pem
    backends:
      - address: "127.0.0.1:{up}"
        tls: {{ client_cert: {pki}/kg-client.crt, client_key: {pki}/kg-client.key,
               ca: {pki}/up-root.crt, verify_name: other.internal }}
      - address: "127.0.0.1:{up}"
        tls: {{ client_cert: {pki}/kg-client.crt, client_key: {pki}/kg-client.key,
               ca: {pki}/up-root.crt, verify_name: api.internal, session_cache: 0 }}
"""


def client_ctx(pki):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(f"{pki}/root-ca.crt")
    ctx.load_cert_chain(f"{pki}/client-chain.crt", f"{pki}/client.key")
    return ctx


def plain_echo(port, nbytes):
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    tx, rx, got = hashlib.sha256(), hashlib.sha256(), []

    def reader():
        n = 0
        while True:
            b = s.recv(1 << 16)
            if not b:
                break
            rx.update(b)
            n += len(b)
        got.append(n)
    t = threading.Thread(target=reader)
    t.start()
    chunk = os.urandom(1 << 16)
    sent = 0
    while sent < nbytes:
        piece = chunk[:min(len(chunk), nbytes - sent)]
        s.sendall(piece)
        tx.update(piece)
        sent += len(piece)
    s.shutdown(socket.SHUT_WR)
    t.join(120)
    s.close()
    return got == [nbytes] and tx.digest() == rx.digest()


def run(pki, work):
    ups = {v: Upstream(pki, v) for v in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2)}
    naccess = 0
    for version, up in ups.items():
        port, egress, nocert, perbe = (kt.free_port() for _ in range(4))
        log_path = f"{work}/ktlsgate-{version.name}.log"
        cfg = f"{work}/ktlsgate-{version.name}.yaml"
        with open(cfg, "w") as f:
            f.write(CONFIG.format(pki=pki, port=port, up=up.port, egress=egress, nocert=nocert,
                                  perbe=perbe))
        log = open(log_path, "w")
        d = subprocess.Popen([kt.BIN, "--config", cfg], stderr=log)
        try:
            kt.check(kt.wait_ready(log_path), f"{version.name}: daemon started")
            kt.check("kTLS: available" in open(log_path).read(), "kTLS available in the guest")
            name = f"upstream {version.name}"

            before = kt.tls_stat()
            ok, info = kt.transfer(client_ctx(pki), port, TOTAL)
            after = kt.tls_stat()
            lines = kt.wait_access(log_path, 1)
            last = lines[-1] if lines else ""
            kt.check(ok, f"{name}: mTLS in -> mTLS out, {TOTAL >> 20} MiB both ways, sha256 equal")
            kt.check("path=ktls" in last and "result=ok" in last and
                     f"bytes_in={TOTAL}" in last and f"bytes_out={TOTAL}" in last,
                     f"{name}: access log path=ktls with every byte: {last[-260:]}")
            kt.check(after["TlsTxSw"] - before["TlsTxSw"] == 2 and
                     after["TlsRxSw"] - before["TlsRxSw"] == 2,
                     f"{name}: kTLS TX and RX on both sockets (tls_stat {before} -> {after})")

            before = kt.tls_stat()
            ok = plain_echo(egress, 8 * MIB)
            after = kt.tls_stat()
            last = kt.wait_access(log_path, 2)[-1]
            kt.check(ok and "path=ktls" in last and "result=ok" in last,
                     f"{name}: plain in -> mTLS out through kTLS, 8 MiB both ways: {last[-200:]}")
            kt.check(after["TlsTxSw"] - before["TlsTxSw"] == 1 and
                     after["TlsRxSw"] - before["TlsRxSw"] == 1,
                     f"{name}: plain in: one kTLS socket, the backend's")

            # Resumption towards the upstream: the first connection waited
            # for a TLS 1.3 ticket before its handoff, the next ones resume.
            for _ in range(2):
                kt.transfer(client_ctx(pki), port, 1000)
            lines = kt.wait_access(log_path, 4)
            kt.check(all("upstream_resumed=1" in l and "path=ktls" in l for l in lines[-2:]),
                     f"{name}: resumed upstream sessions handed off too")
            kt.check(up.resumed[-2:] == [True, True], f"{name}: the upstream saw them resumed")

            # No client certificate for an upstream that requires one: the
            # TLS 1.3 refusal arrives after the handoff, as a kernel alert.
            s = socket.create_connection(("127.0.0.1", nocert), timeout=10)
            c = client_ctx(pki).wrap_socket(s, server_hostname="localhost")
            c.sendall(b"hello")
            try:
                got = c.recv(10)
            except (ssl.SSLError, OSError) as e:
                got = repr(e)
            c.close()
            last = kt.wait_access(log_path, 5)[-1]
            kt.check(got == b"" and "result=upstream_no_client_cert" in last,
                     f"{name}: upstream wants a certificate we lack: {got!r} {last[-300:]}")

            # Per-backend tls blocks: the first names the wrong host, the
            # second (session_cache: 0) serves; one of two consecutive
            # clients starts at the first and fails over. Both relay on kTLS.
            before = kt.tls_stat()
            oks = [kt.transfer(client_ctx(pki), perbe, 1 * MIB)[0] for _ in range(2)]
            after = kt.tls_stat()
            lines = kt.wait_access(log_path, 7)[-2:]
            kt.check(all(oks) and all("path=ktls" in l and "result=ok" in l and
                                      "upstream_resumed=0" in l for l in lines),
                     f"{name}: per-backend tls, failover, kTLS both sockets: {lines}")
            kt.check(after["TlsTxSw"] - before["TlsTxSw"] == 4 and
                     after["TlsRxSw"] - before["TlsRxSw"] == 4,
                     f"{name}: per-backend tls: kTLS TX and RX on both sockets, twice")
            kt.check(open(log_path).read().count("reason=upstream_name_mismatch") == 1,
                     f"{name}: exactly one failed attempt (name mismatch) before failover")
            naccess += 7
        finally:
            d.terminate()
            try:
                d.wait(10)
            except subprocess.TimeoutExpired:
                d.kill()
            log.close()
            print(open(log_path).read()[-int(os.environ.get("KTLS_LOG_TAIL", "3000")):])


def main():
    dirs = kt.guest_workdir("ktlsgate-up-", make_pki)
    if dirs is None:
        return 77
    work, pki = dirs
    run(pki, work)
    return kt.summary()


if __name__ == "__main__":
    sys.exit(main())
