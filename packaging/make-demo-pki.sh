#!/bin/sh
# make-demo-pki DIR [GROUP]: a throw-away PKI for ktlsgate's demo configuration,
# in the spirit of ssl-cert's snakeoil certificate. The package's postinst runs
# it once, on first install, for /etc/ktlsgate/demo; nothing else overwrites it.
#
#   ca.crt ca.key     root CA "ktlsgate demo CA (HOST)"; the key stays root's (0600)
#   ca.crl            the CA's CRL, empty
#   server.crt .key   server certificate for HOST, its FQDN and localhost,
#                     127.0.0.1, ::1 (EKU serverAuth)
#   client.crt .key   one client certificate, CN=ktlsgate demo client (EKU clientAuth)
#
# ktlsgate's keys are 0640 root:GROUP (default ktlsgate) so that the service
# user can read them. Everything is made in a temporary directory next to DIR
# and renamed into place at the end: DIR is either complete or absent. DIR must
# not exist. Valid for 10 years (the CRL too): a demo, not a PKI to keep.
set -eu

dir=${1:?usage: make-demo-pki DIR [GROUP]}
group=${2:-ktlsgate}
days=3650

if [ -e "$dir" ] || [ -L "$dir" ]; then
	echo "make-demo-pki: $dir exists; not touching it" >&2
	exit 1
fi
command -v openssl >/dev/null || { echo "make-demo-pki: openssl(1) not found" >&2; exit 1; }
getent group "$group" >/dev/null || { echo "make-demo-pki: no group $group" >&2; exit 1; }

host=$(uname -n)
fqdn=$(hostname --fqdn 2>/dev/null || true)
san="DNS:localhost,IP:127.0.0.1,IP:::1"
valid_name() { printf '%s' "$1" | grep -Eq '^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$'; }
valid_name "$host" && [ "$host" != localhost ] && san="DNS:$host,$san"
if [ -n "$fqdn" ] && [ "$fqdn" != "$host" ] && [ "$fqdn" != localhost ] && valid_name "$fqdn"; then
	san="DNS:$fqdn,$san"
fi

parent=$(dirname "$dir")
mkdir -p "$parent"
tmp=$(mktemp -d "$parent/.demo-pki.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
umask 077
cd "$tmp"

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

key ca.key
openssl req -x509 -new -key ca.key -sha256 -days "$days" -subj "/O=ktlsgate demo/CN=ktlsgate demo CA ($host)" \
	-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
	-addext "subjectKeyIdentifier=hash" -out ca.crt

leaf() { # name, subject, extended key usage, subjectAltName or ""
	key "$1.key"
	openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
	{
		echo "basicConstraints=critical,CA:FALSE"
		echo "keyUsage=critical,digitalSignature"
		echo "extendedKeyUsage=$3"
		echo "subjectKeyIdentifier=hash"
		echo "authorityKeyIdentifier=keyid"
		[ -z "$4" ] || echo "subjectAltName=$4"
	} >"$1.ext"
	openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days "$days" \
		-extfile "$1.ext" -out "$1.crt" 2>/dev/null
	rm -f "$1.csr" "$1.ext"
}
leaf server "/O=ktlsgate demo/CN=$host" serverAuth "$san"
leaf client "/O=ktlsgate demo/CN=ktlsgate demo client" clientAuth ""

# An empty CRL needs openssl ca's bookkeeping: an empty index, a CRL number.
: >index.txt
echo 01 >crlnumber
cat >ca.cnf <<EOF
[ca]
default_ca = demo
[demo]
database = $tmp/index.txt
crlnumber = $tmp/crlnumber
default_md = sha256
default_crl_days = $days
crl_extensions = crl_ext
[crl_ext]
authorityKeyIdentifier = keyid
EOF
openssl ca -config ca.cnf -gencrl -keyfile ca.key -cert ca.crt -out ca.crl 2>/dev/null
rm -f index.txt* crlnumber* ca.cnf ca.srl

chmod 0644 ca.crt ca.crl server.crt client.crt
chmod 0600 ca.key
chgrp "$group" server.key client.key
chmod 0640 server.key client.key
chmod 0755 "$tmp"
cd /
mv "$tmp" "$dir"
trap - EXIT
echo "make-demo-pki: $dir: CA, server certificate for ${san}, client certificate, CRL"
