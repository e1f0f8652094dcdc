#!/usr/bin/env bash
# Checks that debian/control's Build-Depends are complete: builds the package
# (with its unit tests) in a fresh Debian 12 chroot that has only
# build-essential and the Build-Depends, as a buildd would. Root; needs
# mmdebstrap and a Debian mirror; about 3 minutes.
# Usage: packaging/clean-build.sh [OUTDIR]   (default: ./dist-clean)
# Env: KTLSGATE_MIRROR (default http://deb.debian.org/debian)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$top/dist-clean}
mirror=${KTLSGATE_MIRROR:-http://deb.debian.org/debian}
[ "$(id -u)" -eq 0 ] || { echo "clean-build: needs root (chroot)" >&2; exit 1; }
command -v mmdebstrap >/dev/null || { echo "clean-build: apt-get install mmdebstrap" >&2; exit 1; }

# Build-Depends, without version constraints; debhelper-compat and
# dh-sequence-* are provided by debhelper.
deps=$(sed -n '/^Build-Depends:/,/^[A-Za-z-]*:/{/^Build-Depends:/!{/^[A-Za-z-]*:/d}; p}' \
	"$top/packaging/debian/control" | sed 's/^Build-Depends://' | tr ',' '\n' |
	sed 's/([^)]*)//; s/^[[:space:]]*//; s/[[:space:]]*$//' | grep -v '^$' |
	sed 's/^debhelper-compat$/debhelper/; /^dh-sequence-/d' | sort -u | paste -sd, -)
echo "clean-build: Build-Depends: $deps"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ktlsgate-clean.XXXXXX")
root=$tmp/root
cleanup() {
	umount "$root/proc" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
mmdebstrap --variant=buildd --include="$deps" bookworm "$root" "deb $mirror bookworm main" \
	>"$tmp/mmdebstrap.log" 2>&1 || { tail -20 "$tmp/mmdebstrap.log"; exit 1; }

version=$(dpkg-parsechangelog -l "$top/packaging/debian/changelog" -S Version)
src=$root/src/ktlsgate-$version
mkdir -p "$src"
(cd "$top" && git ls-files -z --cached --others --exclude-standard |
	while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
	xargs -0 -r cp --parents -a -t "$src")
rm -rf "$src/debian"
cp -a "$top/packaging/debian" "$src/debian"
# A buildd has localhost in /etc/hosts (the unit tests resolve it).
cp /etc/hosts "$root/etc/hosts"
mount -t proc proc "$root/proc"
chroot "$root" sh -c "cd /src/ktlsgate-$version && dpkg-buildpackage -us -uc -b" >"$tmp/build.log" 2>&1 ||
	{ tail -40 "$tmp/build.log"; echo "clean-build: dpkg-buildpackage failed in the clean chroot" >&2; exit 1; }
mkdir -p "$out"
cp "$root"/src/ktlsgate_"$version"_*.deb "$out"/
grep -E '^(Ok|Fail|Skipped): ' "$tmp/build.log" | tr -s ' ' | paste -sd' ' - | sed 's/^/clean-build: unit tests: /'
ls "$out"/ktlsgate_"$version"_*.deb | sed 's/^/clean-build: /'
