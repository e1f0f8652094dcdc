"""The verification cache (DESIGN §6): a returning client's chain comes from
the worker's cache, and anything that makes a new generation (a CRL commit, a
policy change) empties it, so a revoked or newly forbidden client is refused
with its exact alert and reason. Expiry is unit-tested (test_verify_cache.c)."""
import ssl

import tlsclient
from test_control import crl_bundle, load, parse_prometheus

V13 = ssl.TLSVersion.TLSv1_3
V12 = ssl.TLSVersion.TLSv1_2


def hello(pki, port, cert="client", version=V13):
    """One full handshake (no session given) and an echo."""
    s = tlsclient.connect(tlsclient.context(pki, cert=cert, version=version), port)
    s.sendall(b"hi")
    assert s.recv(2) == b"hi"
    s.close()


def stats(d):
    return d.ctl("show stats")


def expected_hits(st):
    """Each worker verifies a chain in full once, then serves it from its cache."""
    return sum(w["handshakes_ok"] - 1 for w in st["workers"] if w["handshakes_ok"])


def test_returning_client_is_served_from_the_cache(pki, echo_backend, start_daemon):
    d, port = start_daemon(echo_backend.addr, "--crl", f"{pki}/crl-bundle.pem")
    for i in range(8):
        hello(pki, port, version=V13 if i % 2 else V12)
    st = stats(d)
    assert st["total"]["handshakes_ok"] == 8 and st["total"]["resumed"] == 0
    assert st["total"]["verify_cache_hits"] == expected_hits(st) >= 6, st["total"]
    # The access log still carries the peer facts of a cached client.
    last = d.wait_access(8)[-1]
    assert 'subject="CN=client.demo' in last and "result=ok" in last, last
    families, _ = parse_prometheus(d.ctl("metrics")["text"])
    assert dict(families["ktlsgate_verify_cache_hits_total"])[""] == st["total"]["verify_cache_hits"]


def test_crl_commit_stops_a_cached_client(pki, echo_backend, start_daemon):
    d, port = start_daemon(echo_backend.addr, "--crl", f"{pki}/crl-bundle.pem")
    for _ in range(6):
        hello(pki, port)
    before = stats(d)["total"]["verify_cache_hits"]
    assert before >= 4
    crl_file = f"{pki}/crl-bundle.pem"
    assert d.ctl("crl begin", name=crl_file)["ok"]
    assert d.ctl("crl set", name=crl_file, pem=crl_bundle(pki, revoke=[load(pki, "client.crt")]))["ok"]
    assert d.ctl("crl commit", name=crl_file)["ok"]
    for _ in range(4):
        err = tlsclient.refusal(tlsclient.context(pki, version=V13), port)
        assert "CERTIFICATE_REVOKED" in err.upper().replace(" ", "_"), err
    assert all("result=certificate_revoked" in l for l in d.wait_access(10)[-4:])
    # Refusals are never cached, and the old generation's verdicts are gone.
    assert stats(d)["total"]["verify_cache_hits"] == before
    # Another client is verified afresh in the new generation, then cached.
    for _ in range(4):
        hello(pki, port, cert="client-wild")
    assert stats(d)["total"]["verify_cache_hits"] >= before + 2


def test_policy_change_stops_a_cached_client(pki, echo_backend, start_daemon):
    d, port = start_daemon(echo_backend.addr)
    for _ in range(6):
        hello(pki, port)
    before = stats(d)["total"]["verify_cache_hits"]
    assert before >= 4
    r = d.ctl("policy set", listener="default", deny=[{"name": "no-client-demo", "cn": "client.demo"}])
    assert r["ok"] and r["generation"] == 2, r
    for _ in range(4):
        err = tlsclient.refusal(tlsclient.context(pki, version=V13), port)
        assert "ACCESS_DENIED" in err.upper().replace(" ", "_"), err
    lines = d.wait_access(10)[-4:]
    assert all("result=access_denied" in l and "rule=no-client-demo" in l for l in lines), lines
    # The rules run on every handshake, from the cache or not.
    st = stats(d)
    assert st["total"]["handshakes_refused"] == 4
    hello(pki, port, cert="client-wild")
