#!/bin/bash
# mkpki.sh DIR: a benchmark PKI made with the openssl CLI only.
#   root CA -> intermediate CA -> server (ECDSA P-256 and RSA 2048), client, revoked client
#   other root CA -> other client (must be refused)
#   crls.pem: CRL of the root and CRL of the intermediate (revokes client-revoked)
# Chains (*-chain.crt) are leaf + intermediate: clients and servers send the intermediate,
# trust anchors hold only the roots, so every verifier has to build a two-level chain.
set -euo pipefail
dir=${1:?usage: mkpki.sh DIR}
mkdir -p "$dir"
cd "$dir"
days=30
q() { "$@" 2>/dev/null >/dev/null || { echo "mkpki: failed: $*" >&2; exit 1; }; }

cat > ext.cnf <<'X'
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[inter]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
X

eckey() { q openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key"; }
rsakey() { q openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1.key"; }
selfsign() { # name CN
	q openssl req -new -x509 -key "$1.key" -subj "/CN=$2" -days $days -sha256 \
		-extensions ca -config ext.cnf -out "$1.crt"
}
issue() { # name CN issuer section
	q openssl req -new -key "$1.key" -subj "/CN=$2" -config ext.cnf -out "$1.csr"
	q openssl x509 -req -in "$1.csr" -CA "$3.crt" -CAkey "$3.key" -CAcreateserial \
		-days $days -sha256 -extfile ext.cnf -extensions "$4" -out "$1.crt"
	rm -f "$1.csr"
}
# Minimal `openssl ca` state so that -gencrl and -revoke work for CA $1.
cacnf() {
	: > "$1.index"
	echo 1000 > "$1.crlnum"
	printf '[ca]\ndefault_ca = d\n[d]\ndatabase = %s.index\ncrlnumber = %s.crlnum\ndefault_md = sha256\ndefault_crl_days = %s\n' \
		"$1" "$1" $days > "$1.cnf"
}

# ext.cnf doubles as the req config: req wants a [req] section.
printf '[req]\ndistinguished_name = dn\n[dn]\n' >> ext.cnf

eckey root; selfsign root "ktlsgate bench root CA"
eckey int; issue int "ktlsgate bench intermediate CA" root inter
eckey server-ecdsa; issue server-ecdsa localhost int server
rsakey server-rsa; issue server-rsa localhost int server
eckey client; issue client "bench client" int client
eckey client-revoked; issue client-revoked "bench revoked client" int client
eckey other-root; selfsign other-root "some other root CA"
eckey other-client; issue other-client "bench other client" other-root client

for n in server-ecdsa server-rsa client client-revoked other-client; do
	issuer=int
	[ "$n" = other-client ] && issuer=other-root
	cat "$n.crt" "$issuer.crt" > "$n-chain.crt"
	cat "$n-chain.crt" "$n.key" > "$n-full.pem" # HAProxy wants cert, chain and key in one
done
q openssl pkcs12 -export -in client.crt -certfile int.crt -inkey client.key \
	-passout pass:bench -out client.p12

cacnf root; cacnf int
q openssl ca -config int.cnf -keyfile int.key -cert int.crt -revoke client-revoked.crt
q openssl ca -config root.cnf -keyfile root.key -cert root.crt -gencrl -out root.crl
q openssl ca -config int.cnf -keyfile int.key -cert int.crt -gencrl -out int.crl
cat root.crl int.crl > crls.pem
echo "mkpki: PKI in $dir"
