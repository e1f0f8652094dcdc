#!/bin/sh
# kTLS vs userspace relay (and the DPDK cryptodev engine), measured inside the
# user-mode-linux guest (the only kernel here with kTLS): server RSS per idle
# connection, and server CPU per GiB relayed, for ktlsgate --ktls required,
# --record-engine openssl and --record-engine dpdk side by side in one guest.
#
# On the host:  bench/ktls-guest.sh [options]    (boots the guest via tests/ktls/run-uml.sh)
#   --build DIR       meson build dir with ktlsgate and bench/* [build]
#   --rounds N        rounds; the two paths alternate which goes first [3]
#   --idle "N ..."    idle connection counts [1000 5000] ("" skips the idle test)
#   --bulk SIZE       bytes per bulk run [256M] (0 skips the bulk test)
#   --dirs "down up"  bulk directions (down: backend -> client, i.e. kTLS TX) [down up]
#   --paths "ktls user dpdk"  record engines for bulk (dpdk: EAL --no-huge in the guest;
#                     left out, with a kgb-info line, when the gate cannot start it) [ktls user dpdk]
#   --suites "13-AES128 ..."  bulk suites [13-AES128 13-AES256 12-AES128 12-AES256]
#   --out FILE        also write the markdown report there
# Env: UML_MEM (default 2G here: the load generator holds 5000 client SSL objects),
# UML_TIMEOUT (3600), KTLSGATE_UML_SHIM (default BUILD/tests/uml_xstate_shim.so).
# Output: raw JSON lines on the console ("kgb-result {...}"), then the markdown tables.
# Inside the guest (KTLS_BENCH_GUEST=1) the same script runs the measurements.
set -u
here=$(cd "$(dirname "$0")" && pwd)

# ------------------------------------------------------------------ guest side
guest_main() {
	B=$KTLS_BENCH_BUILD P=$KTLS_BENCH_PKI S=/dev/shm/kgb
	mkdir -p $S
	ulimit -n 65536 || ulimit -n 40000
	echo "kgb-info kernel=$(uname -r) cpus=$(grep -c ^processor /proc/cpuinfo)" \
		"mem_kb=$(sed -n 's/MemTotal: *\([0-9]*\).*/\1/p' /proc/meminfo) nofile=$(ulimit -n)"
	"$B/bench/bench-backend" --listen 127.0.0.1:0 >$S/backend.log 2>&1 &
	backend_pid=$!
	for _ in $(seq 100); do grep -q listening $S/backend.log && break; sleep 0.1; done
	bport=$(sed -n 's/.*:\([0-9]*\)$/\1/p' $S/backend.log)
	[ -n "$bport" ] || { echo "kgb-error backend did not start"; return 1; }
	port=20000
	rc=0
	if [ -n "${KTLS_BENCH_PROFILE:-}" ]; then
		guest_profile || rc=1
		kill $backend_pid
		return $rc
	fi
	[ -n "$KTLS_BENCH_IDLE" ] && { guest_idle || rc=1; }
	[ "$KTLS_BENCH_BULK" != 0 ] && { guest_bulk || rc=1; }
	kill $backend_pid
	return $rc
}

# start_gate ktls|user|dpdk: sets gpid and gport; the gate logs to $S/gate-$gport.log
# (user is the OpenSSL relay: named, or auto would take the DPDK engine when built)
start_gate() {
	port=$((port + 1))
	case $1 in
	ktls) engine="--ktls required --record-engine ktls" ;;
	user) engine="--ktls off --record-engine openssl" ;;
	dpdk) engine="--ktls off --record-engine dpdk" ;;
	esac
	# shellcheck disable=SC2086
	"$B/ktlsgate" --listen 127.0.0.1:$port --cert $P/server-ecdsa-chain.crt \
		--key $P/server-ecdsa.key --client-ca $P/root.crt --crl $P/crls.pem \
		--backend 127.0.0.1:$bport --workers 1 $engine --max-conns 20000 \
		>$S/gate-$port.log 2>&1 &
	gpid=$!
	gport=$port
	for _ in $(seq 100); do
		grep -q "listening\|ready\|accepting" $S/gate-$port.log 2>/dev/null && return 0
		(exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && return 0
		kill -0 $gpid 2>/dev/null || break
		sleep 0.1
	done
	echo "kgb-error ktlsgate ($1) did not start"
	cat $S/gate-$port.log
	return 1
}

stop_gate() {
	kill "$gpid" 2>/dev/null
	wait "$gpid" 2>/dev/null
}

# bench ARGS...: runs the load generator against $gport with the gate's pid
bench() {
	"$B/bench/ktlsgate-bench" --target 127.0.0.1:$gport --cert $P/client-chain.crt \
		--key $P/client.key --ca $P/root.crt --sni localhost --json \
		--server-pid $gpid "$@"
}

kv() { sed -n "s/^$2:[[:space:]]*\([0-9]*\).*/\1/p" "$1"; }

# mem_sample: "rss anon smaps_anon smaps_pss slab unreclaim pagetables memfree" (KiB)
mem_sample() {
	echo "$(kv /proc/$gpid/status VmRSS) $(kv /proc/$gpid/status RssAnon)" \
		"$(kv /proc/$gpid/smaps_rollup Anonymous) $(kv /proc/$gpid/smaps_rollup Pss)" \
		"$(kv /proc/meminfo Slab) $(kv /proc/meminfo SUnreclaim)" \
		"$(kv /proc/meminfo PageTables) $(kv /proc/meminfo MemFree)"
}

# One idle measurement on a fresh gate: the generator holds N connections for
# the hold time; we sample the gate once all of them are relayed (its fd count
# shows it: 2 sockets per connection, plus 4 pipe ends on the kTLS path).
idle_one() {
	path=$1 n=$2 r=$3
	start_gate $path || return 1
	sleep 0.5
	fd0=$(ls /proc/$gpid/fd | wc -l)
	before=$(mem_sample)
	per=2
	[ $path = ktls ] && per=6
	# The hold time covers the handshakes too: 100-500/s in the guest.
	bench --mode idle -c $n -d $((20 + n / 100)) --timeout 300 --tls 1.3 \
		--ciphersuites TLS_AES_128_GCM_SHA256 >$S/idle.json 2>$S/idle.err &
	bpid=$!
	after= fds=0
	while kill -0 $bpid 2>/dev/null; do
		fds=$(ls /proc/$gpid/fd 2>/dev/null | wc -l)
		if [ "$fds" -ge $((fd0 + per * n)) ]; then
			# Idle means idle: the gate returns freed handshake memory
			# within ~1 s of its last handshake (worker tick, malloc_trim).
			sleep 3
			after=$(mem_sample)
			break
		fi
		sleep 0.5
	done
	wait $bpid
	stop_gate
	ktls_conns=$(grep -c "path=ktls" $S/gate-$gport.log)
	echo "kgb-result {\"test\":\"idle\",\"path\":\"$path\",\"n\":$n,\"round\":$r," \
		"\"fds_before\":$fd0,\"fds_held\":$fds,\"mem_before\":\"$before\"," \
		"\"mem_held\":\"$after\",\"access_ktls\":$ktls_conns,\"bench\":$(cat $S/idle.json || echo null)}"
	[ -n "$after" ] || { echo "kgb-error idle $path n=$n: never saw all connections"; cat $S/idle.err; }
}

guest_idle() {
	for r in $(seq "$KTLS_BENCH_ROUNDS"); do
		for n in $KTLS_BENCH_IDLE; do
			order="ktls user"
			[ $((r % 2)) = 0 ] && order="user ktls"
			for path in $order; do
				idle_one $path $n $r || return 1
			done
		done
	done
}

# "TX RX": sessions the kernel has set up in software so far
tls_sw() { awk '$1 == "TlsTxSw" { t = $2 } $1 == "TlsRxSw" { r = $2 } END { print t, r }' /proc/net/tls_stat; }

# Bulk: the gates run side by side for the whole test; each run is one
# connection moving SIZE bytes, checked byte by byte by the generator.
guest_bulk() {
	paths=
	for path in $KTLS_BENCH_PATHS; do
		if ! start_gate $path; then
			[ $path = dpdk ] || return 1
			echo "kgb-info dpdk gate did not start: $(grep -m1 'dpdk' $S/gate-$gport.log)"
			continue
		fi
		eval "pid_$path=$gpid port_$path=$gport"
		paths="$paths $path"
		[ $path = dpdk ] && echo "kgb-info $(grep -m1 dpdk_setup $S/gate-$gport.log)"
	done
	paths=${paths# }
	for r in $(seq "$KTLS_BENCH_ROUNDS"); do
		for suite in $KTLS_BENCH_SUITES; do
			case $suite in
			13-AES128) tls="--tls 1.3 --ciphersuites TLS_AES_128_GCM_SHA256" ;;
			13-AES256) tls="--tls 1.3 --ciphersuites TLS_AES_256_GCM_SHA384" ;;
			12-AES128) tls="--tls 1.2 --ciphers ECDHE-ECDSA-AES128-GCM-SHA256" ;;
			12-AES256) tls="--tls 1.2 --ciphers ECDHE-ECDSA-AES256-GCM-SHA384" ;;
			esac
			for dir in $KTLS_BENCH_DIRS; do
				# Each round starts with another path (rotation).
				order=$paths
				for _ in $(seq $(((r - 1) % $(echo $paths | wc -w)))); do
					order="${order#* } ${order%% *}"
				done
				for path in $order; do
					eval "gpid=\$pid_$path gport=\$port_$path"
					t0=$(tls_sw)
					# shellcheck disable=SC2086
					bench --mode bulk -c 1 --count 1 -w 0 --bulk-size "$KTLS_BENCH_BULK" \
						--bulk-dir $dir --timeout 900 $tls >$S/bulk.json 2>$S/bulk.err
					t1=$(tls_sw)
					echo "kgb-result {\"test\":\"bulk\",\"path\":\"$path\",\"suite\":\"$suite\"," \
						"\"dir\":\"$dir\",\"round\":$r,\"tls_sw_before\":\"$t0\"," \
						"\"tls_sw_after\":\"$t1\",\"bench\":$(cat $S/bulk.json || echo null)}"
				done
			done
		done
	done
	for path in $paths; do
		eval "gpid=\$pid_$path gport=\$port_$path"
		kill $gpid
		wait $gpid 2>/dev/null
		echo "kgb-info access-log lines with path=$path on the $path gate:" \
			"$(grep -c "path=$path" $S/gate-$gport.log)"
	done
}

# For bench/ktls-guest-perf.sh: the guest kernel's symbols go to a host
# directory (hostfs, writable), then one gate relays bulk transfers while the
# host samples the UML kernel process; "ready" and "done" files mark the window.
guest_profile() {
	o=$S/out
	mkdir -p $o
	mount -t hostfs -o "$KTLS_BENCH_PROFILE" none $o || { echo "kgb-error hostfs mount"; return 1; }
	echo 0 >/proc/sys/kernel/kptr_restrict
	cat /proc/kallsyms >$o/kallsyms
	start_gate "$KTLS_BENCH_PROFILE_PATH" || return 1
	case $KTLS_BENCH_PROFILE_SUITE in
	13-AES128) tls="--tls 1.3 --ciphersuites TLS_AES_128_GCM_SHA256" ;;
	13-AES256) tls="--tls 1.3 --ciphersuites TLS_AES_256_GCM_SHA384" ;;
	12-AES128) tls="--tls 1.2 --ciphers ECDHE-ECDSA-AES128-GCM-SHA256" ;;
	*) tls="--tls 1.2 --ciphers ECDHE-ECDSA-AES256-GCM-SHA384" ;;
	esac
	: >$o/ready
	for _ in $(seq "$KTLS_BENCH_ROUNDS"); do
		# shellcheck disable=SC2086
		bench --mode bulk -c 1 --count 1 -w 0 --bulk-size "$KTLS_BENCH_BULK" \
			--bulk-dir "$KTLS_BENCH_DIRS" --timeout 900 $tls >$S/bulk.json 2>&1
		echo "kgb-profile $(cat $S/bulk.json)"
	done
	: >$o/done
	stop_gate
	umount $o
}

if [ "${KTLS_BENCH_GUEST:-}" = 1 ]; then
	guest_main
	exit $?
fi

# ------------------------------------------------------------------ host side
build=build rounds=3 idle="1000 5000" bulk=256M dirs="down up" out=
paths="ktls user dpdk" suites="13-AES128 13-AES256 12-AES128 12-AES256"
while [ $# -gt 0 ]; do
	case $1 in
	--build) build=$2; shift ;;
	--rounds) rounds=$2; shift ;;
	--idle) idle=$2; shift ;;
	--bulk) bulk=$2; shift ;;
	--dirs) dirs=$2; shift ;;
	--paths) paths=$2; shift ;;
	--suites) suites=$2; shift ;;
	--out) out=$2; shift ;;
	*) sed -n '2,21p' "$0" >&2; exit 2 ;;
	esac
	shift
done
build=$(cd "$build" && pwd) || exit 2
for f in ktlsgate bench/ktlsgate-bench bench/bench-backend; do
	[ -x "$build/$f" ] || { echo "ktls-guest: $build/$f missing: ninja -C $build" >&2; exit 2; }
done
# The guest sees the host's / read-only: the PKI is made here, under /var/tmp.
tmp=$(mktemp -d /var/tmp/ktlsgate-bench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
"$here/mkpki.sh" "$tmp/pki" >/dev/null || exit 1
export KTLS_BENCH_GUEST=1 KTLS_BENCH_BUILD="$build" KTLS_BENCH_PKI="$tmp/pki"
export KTLS_BENCH_ROUNDS="$rounds" KTLS_BENCH_IDLE="$idle" KTLS_BENCH_BULK="$bulk"
export KTLS_BENCH_DIRS="$dirs" KTLS_BENCH_PATHS="$paths" KTLS_BENCH_SUITES="$suites"
export UML_MEM="${UML_MEM:-2G}" UML_TIMEOUT="${UML_TIMEOUT:-3600}"
export KTLSGATE_UML_SHIM="${KTLSGATE_UML_SHIM:-$build/tests/uml_xstate_shim.so}"
# The commit is taken now: the tree may move on during a long run.
commit=$(git -C "$here" rev-parse --short HEAD 2>/dev/null)
dirty=$(git -C "$here" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo "+dirty")
"$here/../tests/ktls/run-uml.sh" "$here/ktls-guest.sh" >"$tmp/console" 2>&1
rc=$?
grep '^kgb-' "$tmp/console"
if [ $rc != 0 ]; then
	echo "ktls-guest: the guest run failed (exit $rc); console:" >&2
	tail -40 "$tmp/console" >&2
fi
/usr/bin/python3 "$here/ktls-guest-report.py" --commit "$commit$dirty" --uml-mem "$UML_MEM" \
	<"$tmp/console" | if [ -n "$out" ]; then tee "$out"; else cat; fi
exit $rc
