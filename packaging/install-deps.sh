#!/usr/bin/env bash
# Installs what ktlsgate needs from Debian 12, only when something is missing.
# Usage: packaging/install-deps.sh SET...   SET: build, test, package (the .deb
# build and its test); every set includes build.
set -euo pipefail

build_pkgs=(build-essential meson ninja-build pkg-config libssl-dev liburing-dev
	libjansson-dev libkmod-dev libsystemd-dev libfyaml-dev libnl-3-dev libmicrohttpd-dev openssl python3 python3-cryptography curl ca-certificates)
# clang + its sanitizer and libFuzzer runtimes (only Recommended by clang-14):
# tests/fuzz/run-all.sh, KTLSGATE_FUZZ_SECONDS in run-tests.sh.
# libdpdk-dev + the aesni_mb crypto PMD: the DPDK record engine's tests run
# instead of skipping (-Ddpdk=auto finds it).
test_pkgs=(python3-pytest user-mode-linux busybox-static iproute2 clang libclang-rt-14-dev
	libdpdk-dev librte-crypto-ipsec-mb23)
# dpkg-buildpackage with debhelper, man pages (scdoc), lintian, and what
# tests/package/test-package.sh runs: setpriv (util-linux), systemd-analyze, strace.
package_pkgs=(dpkg-dev debhelper fakeroot scdoc lintian util-linux systemd man-db strace)

want=("${build_pkgs[@]}")
for set in "${@:-build}"; do
	case $set in
	build) ;;
	test) want+=("${test_pkgs[@]}") ;;
	package) want+=("${package_pkgs[@]}") ;;
	*) echo "install-deps: unknown set '$set' (build, test, package)" >&2; exit 2 ;;
	esac
done

missing=()
for p in "${want[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null; then SUDO=sudo; else
		echo "install-deps: missing packages (${missing[*]}) and not root; install them with apt-get" >&2
		exit 1
	fi
fi
echo "install-deps: installing ${missing[*]}"
${SUDO:-} apt-get update -q
DEBIAN_FRONTEND=noninteractive ${SUDO:-} apt-get install -y -q --no-install-recommends "${missing[@]}"
