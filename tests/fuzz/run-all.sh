#!/usr/bin/env bash
# Builds the libFuzzer harnesses with clang and runs each for N seconds
# (default 60) on a scratch copy of its seed corpus. Exit 1 on a finding: the
# crashing input is kept under $OUT/artifacts and its path printed.
# Usage: tests/fuzz/run-all.sh [SECONDS]   (env: KTLSGATE_FUZZ_BUILD, default build-fuzz)
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-60}
build=${KTLSGATE_FUZZ_BUILD:-build-fuzz}
targets=(fuzz_ctl fuzz_config fuzz_policy fuzz_proxy_v2 fuzz_sockdiag)

if ! command -v clang >/dev/null; then
	echo "fuzz: clang missing (packaging/install-deps.sh test)" >&2
	exit 2
fi
[ -f "$build/build.ninja" ] || CC=clang meson setup "$build" -Dfuzz=true >/dev/null
ninja -C "$build" "${targets[@]/#/tests/fuzz/}"

out=$(mktemp -d /tmp/ktlsgate-fuzz.XXXXXX)
mkdir -p "$out/artifacts"
failed=()
for t in "${targets[@]}"; do
	name=${t#fuzz_}
	corpus="$out/corpus-$name"
	mkdir -p "$corpus"
	args=(-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
	      -artifact_prefix="$out/artifacts/$t-")
	[ -f "tests/fuzz/$name.dict" ] && args+=(-dict="tests/fuzz/$name.dict")
	echo "== $t: ${secs}s"
	if ! "$build/tests/fuzz/$t" "${args[@]}" "$corpus" "tests/fuzz/corpus/$name" \
		>"$out/$t.log" 2>&1; then
		failed+=("$t")
		grep -E "ERROR|SUMMARY|Test unit written" "$out/$t.log" >&2 || tail -20 "$out/$t.log" >&2
	fi
	grep -E "^stat::number_of_executed_units|^stat::new_units_added" "$out/$t.log" | tr '\n' ' '
	echo
done
if [ ${#failed[@]} -ne 0 ]; then
	echo "fuzz: findings in ${failed[*]}; inputs and logs under $out" >&2
	exit 1
fi
rm -rf "$out"
echo "fuzz: ${#targets[@]} targets, ${secs}s each, no finding"
