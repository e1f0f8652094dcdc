#!/bin/bash
# bench-smoke: ktlsgate-bench against a real ktlsgate, so the tool can't silently rot.
#   1. a good client completes handshakes (ok > 0, nothing refused),
#   2. a client from another CA is counted as refused, never ok,
#   3. a revoked client is refused (the CRL bundle is in effect),
#   4. a backend that corrupts data gives checksum errors, never ok.
# usage: smoke.sh KTLSGATE KTLSGATE-BENCH BENCH-BACKEND BENCH-SRCDIR; exit 0 / 1 / 77 (skip)
set -u
gate=$1 bench=$2 backend=$3 src=$4
command -v openssl >/dev/null || { echo "skip: no openssl CLI"; exit 77; }
tmp=$(mktemp -d /tmp/bench-smoke.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$tmp"/*.log; do echo "== $f"; tail -5 "$f"; done; exit 1; }

"$src/mkpki.sh" "$tmp/pki" >/dev/null || fail "PKI generation"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The start_* helpers set globals rather than print: a $(...) subshell would lose the pid
# that cleanup must kill.
# start_backend LOG [--corrupt]: sets bport
start_backend() {
	local log=$1; shift
	"$backend" --listen 127.0.0.1:0 "$@" > "$log" 2>&1 &
	pids+=($!)
	for _ in $(seq 50); do
		grep -q listening "$log" && { bport=$(sed -n 's/.*:\([0-9]*\)$/\1/p' "$log"); return; }
		sleep 0.1
	done
	fail "backend did not start"
}

# start_gate BACKEND-PORT: sets gport once ktlsgate accepts
start_gate() {
	local port; port=$(free_port)
	"$gate" --listen 127.0.0.1:$port --cert "$tmp/pki/server-ecdsa-chain.crt" \
		--key "$tmp/pki/server-ecdsa.key" --client-ca "$tmp/pki/root.crt" \
		--crl "$tmp/pki/crls.pem" --backend 127.0.0.1:$1 --workers 1 \
		>> "$tmp/gate.log" 2>&1 &
	pids+=($!)
	for _ in $(seq 50); do
		(exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && { gport=$port; return; }
		sleep 0.1
	done
	fail "ktlsgate did not start"
}

# run NAME CLIENT [bench args...]: JSON result in $tmp/NAME.json
run() {
	local name=$1 client=$2; shift 2
	"$bench" --target 127.0.0.1:$gport --cert "$tmp/pki/$client-chain.crt" \
		--key "$tmp/pki/$client.key" --ca "$tmp/pki/root.crt" --sni localhost \
		--json --label "$name" "$@" > "$tmp/$name.json" 2> "$tmp/$name.log" ||
		fail "$name: ktlsgate-bench exited $?"
	cat "$tmp/$name.json"
}
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$tmp/$1.json" "$2"; }

start_backend "$tmp/backend.log"
start_gate "$bport"
run good client --mode handshake -c 4 -d 2 -w 0.3
[ "$(field good ok)" -gt 0 ] || fail "good client: no handshake counted ok"
[ "$(field good refused)" -eq 0 ] || fail "good client: refusals counted"

for tls in 1.3 1.2; do
	run other$tls other-client --mode handshake --tls $tls -c 2 -d 0.5 -w 0
	[ "$(field other$tls ok)" -eq 0 ] || fail "other-CA client counted ok (TLS $tls)"
	[ "$(field other$tls refused)" -gt 0 ] || fail "other-CA client not counted refused (TLS $tls)"
done
run revoked client-revoked --mode handshake -c 2 -d 0.5 -w 0
[ "$(field revoked ok)" -eq 0 ] || fail "revoked client counted ok"
[ "$(field revoked refused)" -gt 0 ] || fail "revoked client not counted refused"

start_backend "$tmp/corrupt.log" --corrupt
start_gate "$bport"
run corrupt client --mode bulk --bulk-size 1M -c 2 -d 0.5 -w 0
[ "$(field corrupt ok)" -eq 0 ] || fail "corrupted bulk data counted ok"
[ "$(field corrupt errors)" -gt 0 ] || fail "corrupted bulk data not counted as error"
echo "bench-smoke: ok"
