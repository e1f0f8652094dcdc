#!/usr/bin/env bash
# Builds the Debian package from this tree: copies the sources (tracked and
# new files, not build directories) to a temporary directory, puts
# packaging/debian there as ./debian and runs dpkg-buildpackage.
# Usage: packaging/build-deb.sh [OUTDIR]   (default: ./dist)
# Leaves OUTDIR/ktlsgate_VERSION_ARCH.deb (and the .buildinfo/.changes).
# Env: DEB_BUILD_OPTIONS as usual (nocheck skips the unit tests).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$top/dist}
mkdir -p "$out"
out=$(cd "$out" && pwd)

for tool in dpkg-buildpackage dh; do
	command -v "$tool" >/dev/null || {
		echo "build-deb: $tool missing; run packaging/install-deps.sh package" >&2
		exit 1
	}
done

version=$(dpkg-parsechangelog -l "$top/packaging/debian/changelog" -S Version)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ktlsgate-deb.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
src=$tmp/ktlsgate-$version
mkdir "$src"

# The working tree as git sees it (committed or not), minus ignored files such
# as build*/ and demo/; a tree without .git is copied without build dirs.
if git -C "$top" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	(cd "$top" && git ls-files -z --cached --others --exclude-standard |
		while IFS= read -r -d '' f; do
			# Deleted but not yet committed: nothing to copy.
			if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
		done | xargs -0 -r cp --parents -a -t "$src")
else
	tar -C "$top" --exclude='./build*' --exclude=./demo --exclude=./dist -cf - . | tar -C "$src" -xf -
fi
rm -rf "$src/debian"
cp -a "$top/packaging/debian" "$src/debian"

jobs=$(nproc 2>/dev/null || echo 1)
export DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:+$DEB_BUILD_OPTIONS }parallel=$jobs"
(cd "$src" && dpkg-buildpackage -us -uc -b)

shopt -s nullglob
built=("$tmp"/ktlsgate_"$version"_*.deb)
[ ${#built[@]} -gt 0 ] || { echo "build-deb: no .deb produced" >&2; exit 1; }
cp "$tmp"/ktlsgate_"$version"_*.{deb,buildinfo,changes} "$out"/ 2>/dev/null || true
for f in "${built[@]}"; do echo "build-deb: $out/$(basename "$f")"; done
