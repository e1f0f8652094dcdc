#!/usr/bin/env bash
# Runs every ktlsgate test: installs test dependencies from Debian, builds the
# normal and the ASan+UBSan variant, then runs the C unit tests, the kTLS tests
# (inside a user-mode-linux guest; skipped where linux.uml is missing) and the
# integration suite against both builds, and the control-socket tests against a
# ThreadSanitizer build. With KTLSGATE_PACKAGE_TEST=1 (CI sets it) also the
# Debian package test: build, lintian, install, serve, purge. Opt-in (CI sets
# both): KTLSGATE_FUZZ_SECONDS=N fuzzes every harness N s (clang);
# KTLSGATE_SOAK_MINUTES=N runs tests/soak/soak.py for N minutes.
set -euo pipefail
cd "$(dirname "$0")"

if [ "${KTLSGATE_PACKAGE_TEST:-0}" = 1 ]; then
	packaging/install-deps.sh test package
else
	packaging/install-deps.sh test
fi

build() { # dir, extra meson options...
	local dir=$1; shift
	[ -f "$dir/build.ninja" ] || meson setup "$dir" "$@" >/dev/null
	ninja -C "$dir"
}

pytest_run() { # binary, extra pytest args...
	local bin=$1; shift
	KTLSGATE_BIN="$PWD/$bin" /usr/bin/python3 -m pytest tests/integration -q -p no:cacheprovider "$@"
}

build build
build build-asan -Db_sanitize=address,undefined -Db_lundef=false

echo "== C unit and kTLS tests (normal build)"
meson test -C build --print-errorlogs --no-rebuild
echo "== C unit tests (ASan+UBSan build)"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	meson test -C build-asan --print-errorlogs --no-rebuild --suite unit

echo "== integration suite (ASan+UBSan build)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	KTLSGATE_SANITIZED=1 pytest_run build-asan/ktlsgate
echo "== control socket + workers under ThreadSanitizer"
[ -f build-tsan/build.ninja ] || meson setup build-tsan -Db_sanitize=thread -Db_lundef=false >/dev/null
ninja -C build-tsan ktlsgate
TSAN_OPTIONS="halt_on_error=0 exitcode=66 suppressions=$PWD/tests/tsan.supp" \
	KTLSGATE_SANITIZED=1 KTLSGATE_BIN="$PWD/build-tsan/ktlsgate" \
	/usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integration/test_control.py
echo "== integration suite (normal build)"
pytest_run build/ktlsgate

if [ "${KTLSGATE_FUZZ_SECONDS:-0}" -gt 0 ]; then
	echo "== fuzzing: every harness ${KTLSGATE_FUZZ_SECONDS}s"
	tests/fuzz/run-all.sh "$KTLSGATE_FUZZ_SECONDS"
fi
if [ "${KTLSGATE_SOAK_MINUTES:-0}" -gt 0 ]; then
	echo "== soak: ${KTLSGATE_SOAK_MINUTES} min"
	/usr/bin/python3 tests/soak/soak.py --bin build/ktlsgate --minutes "$KTLSGATE_SOAK_MINUTES"
fi

if [ "${KTLSGATE_PACKAGE_TEST:-0}" = 1 ]; then
	echo "== package test (build the .deb, lintian, install, serve, purge)"
	rc=0
	tests/package/test-package.sh || rc=$?
	case $rc in
	0) ;;
	77) echo "package test skipped" ;;
	*) exit "$rc" ;;
	esac
fi
