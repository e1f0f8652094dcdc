#!/bin/bash
# Where an idle connection's memory goes: heaptrack on the daemon while the
# generator holds N proven idle connections, then SIGKILL (nothing is freed at
# exit) and the still-live heap grouped by who allocated it, per connection.
# Fixed costs (pools, caches, start-up) are divided by N too: use N >= 500.
#
#   bench/idle-heap.sh [-n N] [-b BUILD] [-- DAEMON ARGS...]
#   bench/idle-heap.sh -n 500 -- --record-engine openssl     # the userspace relay
#   KTLSGATE=/tmp/old-ktlsgate bench/idle-heap.sh ...         # another daemon binary
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
N=500 BUILD=$HERE/../build
while [ $# -gt 0 ]; do
	case $1 in
	-n) N=$2; shift 2 ;;
	-b) BUILD=$2; shift 2 ;;
	--) shift; break ;;
	*) echo "usage: $0 [-n N] [-b BUILD] [-- DAEMON ARGS...]" >&2; exit 2 ;;
	esac
done
KTLSGATE=${KTLSGATE:-$BUILD/ktlsgate}
command -v heaptrack >/dev/null || { echo "idle-heap: apt-get install heaptrack" >&2; exit 2; }
OUT=$(mktemp -d /tmp/idle-heap.XXXXXX)
P=$OUT/pki
"$HERE/mkpki.sh" "$P" >/dev/null 2>&1
ulimit -n $((2 * N + 200))
"$BUILD/bench/bench-backend" --listen 127.0.0.1:0 >"$OUT/backend" &
BPID=$!
sleep 0.3
BPORT=$(head -1 "$OUT/backend" | sed 's/.*://')
PORT=$(python3 -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])")
heaptrack -o "$OUT/ht" "$KTLSGATE" --listen 127.0.0.1:$PORT \
	--cert "$P/server-ecdsa-chain.crt" --key "$P/server-ecdsa.key" --client-ca "$P/root.crt" \
	--crl "$P/crls.pem" --backend 127.0.0.1:$BPORT --workers 1 --max-conns 40000 \
	--control-socket "$OUT/ctl.sock" "$@" 2>"$OUT/log" >"$OUT/heaptrack.out" &
HPID=$!
for _ in $(seq 50); do [ -S "$OUT/ctl.sock" ] && break; sleep 0.2; done
KPID=$(for p in $(pgrep -f -- "$OUT/ctl.sock"); do
	[ "$(readlink /proc/$p/exe)" = "$(readlink -f "$KTLSGATE")" ] && echo $p; done | head -1)
"$BUILD/bench/ktlsgate-bench" --target 127.0.0.1:$PORT --cert "$P/client-chain.crt" \
	--key "$P/client.key" --ca "$P/root.crt" --sni localhost --mode idle -c "$N" -d 30 \
	--timeout 120 --tls 1.3 --ciphersuites TLS_AES_128_GCM_SHA256 >"$OUT/bench" &
GEN=$!
for _ in $(seq 240); do
	[ "$(ls /proc/$KPID/fd | wc -l)" -ge $((2 * N)) ] && break
	sleep 0.5
done
sleep 2 # a worker tick: idle connections trim their TLS state
kill -9 "$KPID"
wait "$HPID" || true
kill "$GEN" "$BPID" 2>/dev/null || true
wait 2>/dev/null || true
heaptrack_print -f "$OUT/ht.zst" --print-leaks 0 --print-peaks 0 --print-allocators 0 \
	--print-temporary 0 \
	--print-flamegraph "$OUT/live.folded" --flamegraph-cost-type leaked >/dev/null
python3 - "$OUT/live.folded" "$N" <<'EOF'
import collections, sys
# First match wins: (label, a frame name that identifies the allocation).
RULES = [("SSL object (SSL_new)", "SSL_new"),
         ("relay buffers (kg_buf_ensure; now only the worker spare list)", "kg_buf_ensure"),
         ("verification cache (fixed)", "kg_vcache"),
         ("parsed client certificates", "X509_new"), ("parsed client certificates", "d2i_"),
         ("parsed client certificates", "ASN1_item_d2i"),
         ("record ciphers (EVP_CipherInit)", "EVP_CipherInit"),
         ("session (SSL_SESSION_new)", "SSL_SESSION_new"),
         ("key share keys (EVP_PKEY_generate)", "EVP_PKEY_generate"),
         ("memory BIOs", "BIO_new"), ("memory BIOs", "BUF_MEM"),
         ("DPDK engine buffers and state", "kg_dpdk_hand_off"),
         ("access-log strings", "kg_peer")]
path, n = sys.argv[1], int(sys.argv[2])
tot = collections.Counter()
for line in open(path):
    stack, cost = line.rsplit(" ", 1)
    frames = stack.split(";")
    for label, key in RULES:
        if any(key in f for f in frames):
            break
    else:
        hs = any("kg_hs_" in f for f in frames)
        label = "other handshake state" if hs else "other (start-up, worker)"
    tot[label] += int(cost)
for label, v in tot.most_common():
    print(f"{v / n:8.0f} B/conn  {label}")
print(f"{sum(tot.values()) / n:8.0f} B/conn  live heap in all")
EOF
echo "heaptrack data: $OUT/ht.zst (heaptrack --analyze)"
