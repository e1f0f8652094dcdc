#!/bin/sh
# Where the server's CPU goes inside the UML guest: samples the UML kernel
# (a host process) with the host's perf while one ktlsgate relays bulk
# transfers in the guest, and names the samples with the guest's kallsyms
# (linux.uml is stripped; its kernel and module addresses are host virtual
# addresses of that process). Samples of guest user processes are not in it;
# host-side time of the UML process itself (its ptrace-based system call
# switching) is shown apart.
# Usage: bench/ktls-guest-perf.sh [--build DIR] [--path ktls|user] [--suite 13-AES128]
#                                 [--dir down|up] [--size 1G] [--runs 2] [--top 25]
set -u
here=$(cd "$(dirname "$0")" && pwd)
build=build path=ktls suite=13-AES128 dir=down size=1G runs=2 top=25
while [ $# -gt 0 ]; do
	case $1 in
	--build) build=$2 ;; --path) path=$2 ;; --suite) suite=$2 ;; --dir) dir=$2 ;;
	--size) size=$2 ;; --runs) runs=$2 ;; --top) top=$2 ;;
	*) sed -n '2,9p' "$0" >&2; exit 2 ;;
	esac
	shift 2
done
command -v perf >/dev/null || { echo "ktls-guest-perf: perf not installed" >&2; exit 2; }
build=$(cd "$build" && pwd) || exit 2
tmp=$(mktemp -d /var/tmp/ktlsgate-perf.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/out"
"$here/mkpki.sh" "$tmp/pki" >/dev/null || exit 1
export KTLS_BENCH_GUEST=1 KTLS_BENCH_BUILD="$build" KTLS_BENCH_PKI="$tmp/pki"
export KTLS_BENCH_PROFILE="$tmp/out" KTLS_BENCH_PROFILE_PATH="$path"
export KTLS_BENCH_PROFILE_SUITE="$suite" KTLS_BENCH_ROUNDS="$runs" KTLS_BENCH_BULK="$size"
export KTLS_BENCH_DIRS="$dir" KTLS_BENCH_IDLE=
export UML_MEM="${UML_MEM:-1G}" UML_TIMEOUT="${UML_TIMEOUT:-1800}"
export KTLSGATE_UML_SHIM="${KTLSGATE_UML_SHIM:-$build/tests/uml_xstate_shim.so}"
"$here/../tests/ktls/run-uml.sh" "$here/ktls-guest.sh" >"$tmp/console" 2>&1 &
runner=$!
while [ ! -e "$tmp/out/ready" ]; do
	kill -0 $runner 2>/dev/null || { cat "$tmp/console"; exit 1; }
	sleep 0.2
done
# The UML kernel: the linux.uml process whose parent is run-uml's timeout.
to=$(pgrep -P $runner -x timeout)
uml=$(pgrep -P "$to" -x linux.uml | head -1)
[ -n "$uml" ] || { echo "ktls-guest-perf: no linux.uml process" >&2; exit 1; }
perf record -q -o "$tmp/perf.data" -p "$uml" 2>/dev/null &
perfpid=$!
while [ ! -e "$tmp/out/done" ] && kill -0 $runner 2>/dev/null; do sleep 0.2; done
kill -INT $perfpid
wait $perfpid
wait $runner
grep '^kgb-profile' "$tmp/console"
perf script -i "$tmp/perf.data" -F ip 2>/dev/null >"$tmp/ips"
/usr/bin/python3 - "$tmp/out/kallsyms" "$tmp/ips" "$top" "$path $suite $dir" <<'PY'
import bisect, collections, sys
syms = []
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) >= 3 and f[1].lower() in "tw":
        syms.append((int(f[0], 16), f[2] + (" " + f[3] if len(f) > 3 else "")))
syms.sort()
addrs = [a for a, _ in syms]
count = collections.Counter()
total = 0
for line in open(sys.argv[2]):
    line = line.strip()
    if not line:
        continue
    ip = int(line, 16)
    total += 1
    i = bisect.bisect_right(addrs, ip) - 1
    if ip >= 0xffff800000000000:
        name = "[host kernel: ptrace/signals/page faults of UML itself]"
    elif i >= 0 and ip - addrs[i] < 1 << 20:
        name = syms[i][1]
    else:
        name = "[host user space: linux.uml outside its kernel image, libc]"
    count[name] += 1
print(f"### UML guest kernel profile ({sys.argv[4]}): {total} samples of the UML kernel process\n")
print("| % | guest kernel symbol |\n|---:|---|")
for name, n in count.most_common(int(sys.argv[3])):
    print(f"| {100 * n / total:.1f} | `{name}` |")
PY
