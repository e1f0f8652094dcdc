#!/usr/bin/env bash
# Quickstart on a fresh Debian 12 machine: installs build dependencies, builds
# ktlsgate, generates a demo PKI, starts a demo HTTP backend and ktlsgate in the
# foreground, and shows one curl that gets through and ones that are refused.
# Env: KTLSGATE_DEMO_DIR (default ./demo), KTLSGATE_DEMO_PORT (8443),
#      KTLSGATE_DEMO_BACKEND_PORT (8080), KTLSGATE_DEMO_NO_WAIT=1 (stop after the demo).
set -euo pipefail
cd "$(dirname "$0")"
top=$PWD
demo=${KTLSGATE_DEMO_DIR:-$top/demo}
port=${KTLSGATE_DEMO_PORT:-8443}
backend_port=${KTLSGATE_DEMO_BACKEND_PORT:-8080}

packaging/install-deps.sh build
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >/dev/null

mkdir -p "$demo/www"
/usr/bin/python3 tests/pki/gen_pki.py "$demo/pki"
echo "Hello from the ktlsgate demo backend" > "$demo/www/index.html"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

/usr/bin/python3 -m http.server "$backend_port" --bind 127.0.0.1 --directory "$demo/www" \
	>"$demo/backend.log" 2>&1 &
pids+=($!)

pki=$demo/pki
build/ktlsgate --listen "127.0.0.1:$port" --listen "[::1]:$port" \
	--cert "$pki/server-ecdsa-chain.crt" --key "$pki/server-ecdsa.key" \
	--cert "$pki/server-rsa-chain.crt" --key "$pki/server-rsa.key" \
	--client-ca "$pki/client-ca.pem" --crl "$pki/crl-bundle.pem" \
	--backend "127.0.0.1:$backend_port" --control-socket "$demo/control.sock" \
	2> >(tee "$demo/ktlsgate.log" >&2) &
pids+=($!)

for _ in $(seq 50); do
	grep -q ' ready ' "$demo/ktlsgate.log" 2>/dev/null && break
	sleep 0.1
done

demo_curl() { # title, cert, key
	echo
	echo "\$ curl --cacert $pki/root-ca.crt --cert $2 --key $3 https://localhost:$port/"
	curl -sS --max-time 5 --cacert "$pki/root-ca.crt" --cert "$2" --key "$3" \
		"https://localhost:$port/" && echo "   ^ $1" || echo "   ^ $1 (curl exit $?)"
}

echo
echo "=== ktlsgate is listening on https://localhost:$port (demo state in $demo)"
demo_curl "accepted: good client certificate with its intermediate" \
	"$pki/client-chain.crt" "$pki/client.key"
demo_curl "refused: expired client certificate" \
	"$pki/client-expired-chain.crt" "$pki/client-expired.key"
demo_curl "refused: certificate from another CA" \
	"$pki/client-other-chain.crt" "$pki/client-other.key"
echo
echo "curl without a client certificate is refused too:"
echo "\$ curl --cacert $pki/root-ca.crt https://localhost:$port/"
curl -sS --max-time 5 --cacert "$pki/root-ca.crt" "https://localhost:$port/" || true
echo
echo "The control socket answers ktlsgatectl (see README, Control socket):"
echo "\$ build/ktlsgatectl -s $demo/control.sock show stats"
build/ktlsgatectl -s "$demo/control.sock" show stats | head -12 || true
echo
echo "Access log: $demo/ktlsgate.log. Press Ctrl-C to stop."
[ -n "${KTLSGATE_DEMO_NO_WAIT:-}" ] && exit 0
wait "${pids[1]}"
