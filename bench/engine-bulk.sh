#!/bin/bash
# One bulk run through one record engine, server on CPU 0, client and backend on CPU 1:
#   bench/engine-bulk.sh ENGINE up|down|both SUITE [BUILD] [PKI]
# ENGINE: openssl | dpdk | ktls | auto; PKI from bench/mkpki.sh. Prints the server's
# CPU seconds and CPU per GiB carried in each direction (256 MiB each way).
set -eu
eng=$1; dir=$2; suite=$3; B=${4:-build}; P=${5:-/tmp/bpki}
taskset -c 1 $B/bench/bench-backend --listen 127.0.0.1:19600 >/dev/null 2>&1 & bp=$!
taskset -c 0 $B/ktlsgate --listen 127.0.0.1:19601 --cert $P/server-ecdsa-chain.crt --key $P/server-ecdsa.key --client-ca $P/root.crt --crl $P/crls.pem --backend 127.0.0.1:19600 --workers 1 --record-engine $eng --control-socket /tmp/kgb.sock >/tmp/kgb.log 2>&1 & kp=$!
sleep 1.5
taskset -c 1 $B/bench/ktlsgate-bench --target 127.0.0.1:19601 --cert $P/client-chain.crt --key $P/client.key --ca $P/root.crt --sni localhost --json --mode bulk -c 1 --count 1 -w 0 --bulk-size 256M --bulk-dir $dir --timeout 120 --tls 1.3 --ciphersuites $suite --server-pid $kp | python3 -c "import json,sys; r=json.load(sys.stdin); print('$eng $dir $suite cpu_s', r['server']['cpu_s'], 'per_GiB_each_way', round(r['server']['cpu_s']/0.25,2), 'ok', r['ok'], r['errors'])"
kill $kp $bp; wait $kp $bp 2>/dev/null || true
