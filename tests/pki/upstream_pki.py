"""The backends' own PKIs for the backend_tls tests: one module for the
integration tests (tests/integration/test_upstream.py) and the kTLS guest
test (tests/ktls/ktls_upstream_test.py), so both verify the same shapes.

make(d) writes into d:
- up-root.crt (+ up-root.crl revoking revoked.crt): the "api" backends' root;
  api, revoked, wrong-name (other.internal), expired, unknown-ca (signed by a
  stranger root): server certificate + key, all naming api.internal but
  wrong-name;
- kg-client.crt/.key (+ kg-client.p12, passphrase in kg-pass.txt): ktlsgate's
  client certificate under up-root, CN ktlsgate.gateway;
- db-root.crt, db.crt/.key (db.internal), kg-db-client.crt/.key (CN
  ktlsgate.db-client): a second, unrelated PKI for a second backend.

server_context(d, ...) is an ssl server context for one of those backends
that requires a client certificate from its root."""
import ssl

import gen_pki
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

SERVER = [ExtendedKeyUsageOID.SERVER_AUTH]
PASSPHRASE = b"upstream secret"


def _root(out, fname, cn, org):
    key = gen_pki.ec_key()
    cert = gen_pki.build(gen_pki.name(cn, org), key, None, None, ca=True)
    if fname:
        out.cert(fname, cert)
    return cert, key


def _server(out, fname, cn, issuer, issuer_key, **kw):
    key = gen_pki.ec_key()
    cert = gen_pki.build(gen_pki.name(cn, "upstream"), key, issuer, issuer_key, eku=SERVER,
                         sans=(x509.DNSName(cn),), **kw)
    out.cert(f"{fname}.crt", cert)
    out.key(f"{fname}.key", key)
    return cert


def make(d):
    out = gen_pki.Out(d)
    root, root_key = _root(out, "up-root.crt", "upstream root CA", "upstream")
    other, other_key = _root(out, None, "stranger root CA", "elsewhere")
    _server(out, "api", "api.internal", root, root_key)
    revoked = _server(out, "revoked", "api.internal", root, root_key)
    out.crl("up-root.crl", root, root_key, revoked=(revoked.serial_number,))
    _server(out, "wrong-name", "other.internal", root, root_key)
    _server(out, "unknown-ca", "api.internal", other, other_key)
    _server(out, "expired", "api.internal", root, root_key,
            not_before=gen_pki.NOW - 40 * gen_pki.DAY, not_after=gen_pki.NOW - gen_pki.DAY)
    kg = gen_pki.client_leaf(out, "kg-client", "ktlsgate.gateway", root, root_key)
    with open(f"{d}/kg-client.key", "rb") as f:
        kg_key = serialization.load_pem_private_key(f.read(), None)
    out.pkcs12("kg-client.p12", kg_key, kg, [], PASSPHRASE)
    with open(f"{d}/kg-pass.txt", "w") as f:
        f.write(PASSPHRASE.decode() + "\n")
    db_root, db_key = _root(out, "db-root.crt", "db root CA", "database")
    _server(out, "db", "db.internal", db_root, db_key)
    gen_pki.client_leaf(out, "kg-db-client", "ktlsgate.db-client", db_root, db_key)
    return d


def server_context(d, cert="api", ca="up-root", version=None):
    """A TLS server with cert that requires a client certificate under ca."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(f"{d}/{cert}.crt", f"{d}/{cert}.key")
    ctx.load_verify_locations(f"{d}/{ca}.crt")
    ctx.verify_mode = ssl.CERT_REQUIRED
    if version:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx
