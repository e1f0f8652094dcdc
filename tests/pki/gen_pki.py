#!/usr/bin/python3
"""Demo and test PKI for ktlsgate: gen_pki.py OUTDIR

root CA -> intermediate CA -> server (ECDSA and RSA) and client leaves, with
the awkward cases an mTLS gateway must refuse: expired, not yet valid,
revoked, under a revoked intermediate, from another CA, serverAuth-only; and
for the policy and per-SNI tests: SPIFFE, wildcard-DNS and e-mail SANs, server
identities for two names (alpha.test, *.beta.test), an encrypted key and a
PKCS#12 bundle (passphrase in server-pass.txt). Uses python3-cryptography so
validity periods can be backdated. Keys are unencrypted PKCS#8, mode 0600."""
import datetime
import ipaddress
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
DAY = datetime.timedelta(days=1)


def name(cn, org="ktlsgate demo"):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


def build(subject, key, issuer, issuer_key, *, ca=False, pathlen=None, eku=None, sans=(),
          not_before=None, not_after=None, serial=None):
    b = (x509.CertificateBuilder().subject_name(subject)
         .issuer_name(issuer.subject if issuer else subject)
         .public_key(key.public_key())
         .serial_number(serial or x509.random_serial_number())
         .not_valid_before(not_before or NOW - DAY)
         .not_valid_after(not_after or NOW + 365 * DAY)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=pathlen), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if issuer:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer_key.public_key()), critical=False)
    if ca:
        b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                          False), critical=True)
    else:
        b = b.add_extension(x509.KeyUsage(True, False, isinstance(key, rsa.RSAPrivateKey),
                                          False, False, False, False, False, False), critical=True)
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return b.sign(issuer_key or key, hashes.SHA256())


class Out:
    def __init__(self, d):
        self.d = d
        os.makedirs(d, exist_ok=True)

    def cert(self, fname, *certs):
        with open(os.path.join(self.d, fname), "wb") as f:
            for c in certs:
                f.write(c.public_bytes(serialization.Encoding.PEM))

    def key(self, fname, key):
        path = os.path.join(self.d, fname)
        with open(path, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        os.chmod(path, 0o600)

    def encrypted_key(self, fname, key, passphrase):
        path = os.path.join(self.d, fname)
        with open(path, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.BestAvailableEncryption(passphrase)))
        os.chmod(path, 0o600)

    def pkcs12(self, fname, key, cert, cas, passphrase):
        path = os.path.join(self.d, fname)
        with open(path, "wb") as f:
            f.write(pkcs12.serialize_key_and_certificates(
                b"ktlsgate", key, cert, cas, serialization.BestAvailableEncryption(passphrase)))
        os.chmod(path, 0o600)

    def crl(self, fname, issuer, issuer_key, revoked=()):
        b = (x509.CertificateRevocationListBuilder().issuer_name(issuer.subject)
             .last_update(NOW - datetime.timedelta(hours=1)).next_update(NOW + 30 * DAY)
             .add_extension(x509.CRLNumber(1), critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                 issuer_key.public_key()), critical=False))
        for serial in revoked:
            b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial)
                                          .revocation_date(NOW - DAY).build())
        crl = b.sign(issuer_key, hashes.SHA256())
        data = crl.public_bytes(serialization.Encoding.PEM)
        with open(os.path.join(self.d, fname), "wb") as f:
            f.write(data)
        return data


def client_leaf(out, fname, cn, inter, inter_key, **kw):
    key = ec_key()
    sans = kw.pop("sans", (x509.DNSName(cn),))
    eku = kw.pop("eku", [ExtendedKeyUsageOID.CLIENT_AUTH])
    cert = build(name(cn), key, inter, inter_key, eku=eku, sans=sans, **kw)
    out.cert(f"{fname}.crt", cert)
    out.cert(f"{fname}-chain.crt", cert, inter)
    out.key(f"{fname}.key", key)
    return cert


def server_identities_for_sni(out, inter, inter_key):
    """alpha.test (ECDSA, its key encrypted) and *.beta.test (PKCS#12 bundle)."""
    passphrase = b"correct horse battery staple"
    with open(os.path.join(out.d, "server-pass.txt"), "wb") as f:
        f.write(passphrase + b"\n")
    os.chmod(os.path.join(out.d, "server-pass.txt"), 0o600)  # a secret, like the keys
    alpha_key = ec_key()
    alpha = build(name("alpha.test"), alpha_key, inter, inter_key,
                  eku=[ExtendedKeyUsageOID.SERVER_AUTH], sans=(x509.DNSName("alpha.test"),))
    out.cert("server-alpha-chain.crt", alpha, inter)
    out.encrypted_key("server-alpha.key", alpha_key, passphrase)
    beta_key = ec_key()
    beta = build(name("beta.test"), beta_key, inter, inter_key,
                 eku=[ExtendedKeyUsageOID.SERVER_AUTH], sans=(x509.DNSName("*.beta.test"),))
    out.pkcs12("server-beta.p12", beta_key, beta, [inter], passphrase)


def main(outdir):
    out = Out(outdir)
    root_key = ec_key()
    root = build(name("ktlsgate demo root CA"), root_key, None, None, ca=True,
                 not_after=NOW + 3650 * DAY)
    inter_key = ec_key()
    inter = build(name("ktlsgate demo intermediate CA"), inter_key, root, root_key, ca=True,
                  pathlen=0, not_after=NOW + 1825 * DAY)
    other_key = ec_key()
    other = build(name("unrelated root CA", "elsewhere"), other_key, None, None, ca=True)
    out.cert("root-ca.crt", root)
    out.key("root-ca.key", root_key)
    out.cert("intermediate-ca.crt", inter)
    out.key("intermediate-ca.key", inter_key)
    out.cert("other-ca.crt", other)
    out.key("other-ca.key", other_key)
    out.cert("client-ca.pem", root)

    server_sans = (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                   x509.IPAddress(ipaddress.ip_address("::1")))
    for kind, key in (("ecdsa", ec_key()), ("rsa", rsa.generate_private_key(65537, 2048))):
        cert = build(name("localhost"), key, inter, inter_key,
                     eku=[ExtendedKeyUsageOID.SERVER_AUTH], sans=server_sans)
        out.cert(f"server-{kind}.crt", cert)
        out.cert(f"server-{kind}-chain.crt", cert, inter)
        out.key(f"server-{kind}.key", key)
    exp_key = ec_key()
    out.cert("expired-server.crt", build(name("localhost"), exp_key, inter, inter_key,
                                         eku=[ExtendedKeyUsageOID.SERVER_AUTH], sans=server_sans,
                                         not_before=NOW - 40 * DAY, not_after=NOW - DAY))
    out.key("expired-server.key", exp_key)
    out.key("wrong-key.key", ec_key())

    client_leaf(out, "client", "client.demo", inter, inter_key,
                sans=(x509.DNSName("client.demo"),
                      x509.UniformResourceIdentifier("spiffe://demo.test/client")))
    client_leaf(out, "client-expired", "expired.demo", inter, inter_key,
                not_before=NOW - 40 * DAY, not_after=NOW - DAY)
    client_leaf(out, "client-notyet", "notyet.demo", inter, inter_key,
                not_before=NOW + 10 * DAY, not_after=NOW + 40 * DAY)
    revoked = client_leaf(out, "client-revoked", "revoked.demo", inter, inter_key)
    client_leaf(out, "client-serveronly", "serveronly.demo", inter, inter_key,
                eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    client_leaf(out, "client-other", "other.demo", other, other_key)
    root_client_key = ec_key()
    root_client = build(name("client-root.demo"), root_client_key, root, root_key,
                        eku=[ExtendedKeyUsageOID.CLIENT_AUTH], sans=(x509.DNSName("client-root.demo"),))
    out.cert("client-root.crt", root_client)
    out.key("client-root.key", root_client_key)

    bad_inter_key = ec_key()
    bad_inter = build(name("ktlsgate revoked intermediate CA"), bad_inter_key, root, root_key,
                      ca=True, pathlen=0)
    out.cert("revoked-intermediate-ca.crt", bad_inter)
    client_leaf(out, "client-under-revoked", "underrevoked.demo", bad_inter, bad_inter_key)
    client_leaf(out, "client-payments", "payments.demo", inter, inter_key,
                sans=(x509.UniformResourceIdentifier("spiffe://demo.test/payments/api"),))
    client_leaf(out, "client-wild", "wild.demo", inter, inter_key,
                sans=(x509.DNSName("*.wild.demo"),))
    client_leaf(out, "client-mail", "mail.demo", inter, inter_key,
                sans=(x509.RFC822Name("ops@Example.COM"),))
    server_identities_for_sni(out, inter, inter_key)

    bundle = out.crl("root.crl", root, root_key, revoked=(bad_inter.serial_number,))
    bundle += out.crl("intermediate.crl", inter, inter_key, revoked=(revoked.serial_number,))
    # Its own CRL is clean: what refuses its leaves is the root revoking it.
    bundle += out.crl("revoked-intermediate.crl", bad_inter, bad_inter_key)
    with open(os.path.join(outdir, "crl-bundle.pem"), "wb") as f:
        f.write(bundle)
    print(f"pki written to {outdir}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: gen_pki.py OUTDIR")
    main(sys.argv[1])
