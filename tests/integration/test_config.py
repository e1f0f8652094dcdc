"""The global section of the YAML file does what it says: worker CPUs, the
log file (and reopening it on SIGUSR1), per-listener kTLS mode, timeouts."""
import glob
import os
import signal
import subprocess
import time

import pytest

import tlsclient
from conftest import BIN

CONFIG = """
global:
  workers: {workers}
  cpus: [{cpu}]
  log: {{ file: "{log}", format: json }}
  timeouts: {{ handshake: 700ms }}
listeners:
  - listen: "127.0.0.1:{port}"
    ktls: off
    identities:
      - {{ cert: "{pki}/server-ecdsa-chain.crt", key: "{pki}/server-ecdsa.key" }}
    client_ca: "{pki}/client-ca.pem"
    backends: "{backend}"
"""


def last_cpu():
    return max(os.sched_getaffinity(0))


def test_workers_pinned_to_configured_cpus(pki, echo_backend, tmp_path, start_config):
    cpu = last_cpu()
    log = tmp_path / "kg.log"
    d, port, _ = start_config(CONFIG, ready=False, workers=1, cpu=cpu, log=log, backend=echo_backend.addr)
    deadline = time.time() + 10
    while time.time() < deadline and (not log.exists() or '"event":"ready"' not in log.read_text()):
        time.sleep(0.05)
    affinities = set()
    for status in glob.glob(f"/proc/{d.proc.pid}/task/*/status"):
        with open(status) as f:
            text = f.read()
        name = [l for l in text.splitlines() if l.startswith("Name:")][0]
        allowed = [l for l in text.splitlines() if l.startswith("Cpus_allowed_list:")][0]
        affinities.add((name.split()[-1], allowed.split()[-1]))
    assert ("ktlsgate-w0", str(cpu)) in affinities or any(a == str(cpu) for _, a in affinities), affinities


def test_log_file_json_and_reopen_on_sigusr1(pki, echo_backend, tmp_path, start_config):
    log = tmp_path / "kg.log"
    d, port, _ = start_config(CONFIG, ready=False, workers=1, cpu=last_cpu(), log=log,
                              backend=echo_backend.addr)
    deadline = time.time() + 10
    while time.time() < deadline and (not log.exists() or '"event":"ready"' not in log.read_text()):
        time.sleep(0.05)
    assert '"event":"ready"' in log.read_text()
    assert d.text() == "", "nothing on stderr once the log file is open"
    os.rename(log, tmp_path / "kg.log.1")
    d.proc.send_signal(signal.SIGUSR1)
    deadline = time.time() + 5
    while time.time() < deadline and not log.exists():
        time.sleep(0.05)
    assert tlsclient.echo_transfer(tlsclient.context(pki), port, 100)[0]
    deadline = time.time() + 5
    while time.time() < deadline and '"event":"access"' not in log.read_text():
        time.sleep(0.05)
    text = log.read_text()
    assert '"event":"log_reopen"' in text and '"event":"access"' in text and \
        ('"path":"user"' in text or '"path":"dpdk"' in text)
    assert '"event":"access"' not in (tmp_path / "kg.log.1").read_text()


def test_handshake_timeout_from_the_file(pki, echo_backend, tmp_path, start_config):
    import socket
    log = tmp_path / "kg.log"
    d, port, _ = start_config(CONFIG, ready=False, workers=1, cpu=last_cpu(), log=log,
                              backend=echo_backend.addr)
    time.sleep(0.3)
    s = socket.create_connection(("127.0.0.1", port))
    start = time.time()
    s.settimeout(10)
    assert s.recv(1) == b""
    assert time.time() - start < 5
    s.close()
    deadline = time.time() + 5
    while time.time() < deadline and "\"event\":\"access\"" not in log.read_text():
        time.sleep(0.05)
    assert "no complete handshake within 700 ms" in log.read_text(), (port, start, time.time(), d.text())


def test_unavailable_cpu_is_a_startup_error(pki, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.format(workers=1, cpu=1000, log=tmp_path / "l", port=1, pki=pki,
                                  backend="127.0.0.1:2"))
    r = subprocess.run([BIN, "--config", str(path)], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().endswith("global.cpus: CPU 1000 is not available to this process"), r.stderr


def test_unwritable_log_file_is_a_startup_error(pki, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.format(workers=1, cpu=0, log="/proc/nope/kg.log", port=1, pki=pki,
                                  backend="127.0.0.1:2"))
    r = subprocess.run([BIN, "--config", str(path)], capture_output=True, text=True)
    assert r.returncode == 2 and "log.file /proc/nope/kg.log:" in r.stderr, r.stderr
