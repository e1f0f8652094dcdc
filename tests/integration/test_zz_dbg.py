import ssl, tlsclient
from conftest import resumption_args
V13 = ssl.TLSVersion.TLSv1_3
def test_chain(pki, echo_backend, start_daemon, resumption):
    d, port = start_daemon(echo_backend.addr, *resumption_args(resumption))
    ctx = tlsclient.context(pki, version=V13)
    ok, info = tlsclient.echo_transfer(ctx, port, 64)
    res = []
    for i in range(4):
        ok, info = tlsclient.echo_transfer(ctx, port, 64, session=info["session"])
        res.append(info["reused"])
    assert res == [True]*4, res
