#!/bin/sh
# Runs one command inside a user-mode-linux guest whose kernel has kTLS (the
# host kernel may not), with the host's / mounted read-only, and exits with the
# command's exit code: 0 pass, 1 fail, 77 skip; 125 when the guest never reported.
# Usage: tests/ktls/run-uml.sh COMMAND [ARGS...]   (COMMAND: absolute host path)
# Env passed into the guest: KTLSGATE_BIN and any KTLS_* variable.
# Env for the runner: UML_MEM (512M), UML_TIMEOUT (seconds, 600),
# KTLSGATE_UML_SHIM (the xstate shim, set by meson).
set -u
here=$(cd "$(dirname "$0")" && pwd)
if ! command -v linux.uml >/dev/null 2>&1; then
	echo "SKIP: linux.uml not installed (apt-get install user-mode-linux busybox-static)"
	exit 77
fi
if [ ! -x /bin/busybox ]; then
	echo "SKIP: /bin/busybox (busybox-static) is needed as the guest's toolbox"
	exit 77
fi
# Not under /tmp: the guest mounts its own tmpfs there and must read the env file.
work=$(mktemp -d /var/tmp/ktlsgate-uml.XXXXXX)
trap 'rm -rf "$work"' EXIT
# The guest reads this file from the host fs: a way to pass the environment
# and the working directory without the kernel command line (which mangles
# anything with a dot in it).
{
	echo "cd '$PWD'"
	env | grep -E '^(KTLSGATE_BIN|KTLS_[A-Z_]*)=' | sed "s/'/'\\\\''/g; s/=\(.*\)/='\1'/; s/^/export /"
} >"$work/env"
# On CPUs with AMX the host's ptrace wants the full XSAVE size that UML 6.1 does
# not know; the shim (tests/ktls/uml_xstate_shim.c) bridges that.
preload=
if [ -n "${KTLSGATE_UML_SHIM:-}" ] && [ -f "$KTLSGATE_UML_SHIM" ]; then
	preload="$KTLSGATE_UML_SHIM"
fi
# root=98:0 console=tty0 are UML's defaults, given so UML does not append them
# after "--" into init's argv; pty.legacy_count=0 saves ~3 s of boot.
LD_PRELOAD="$preload" timeout "${UML_TIMEOUT:-600}" linux.uml mem="${UML_MEM:-512M}" uml_dir="$work" \
	root=98:0 rootfstype=hostfs rootflags=/ ro console=tty0 quiet pty.legacy_count=0 \
	con0=fd:0,fd:1 con=null \
	init="$here/guest-init.sh" -- "$work/env" "$@" </dev/null >"$work/console" 2>&1
cat "$work/console"
rc=$(sed -n 's/.*ktlsgate-uml: EXIT=\([0-9]*\).*/\1/p' "$work/console" | tail -1)
if [ -z "$rc" ]; then
	echo "ktlsgate-uml: the guest did not report an exit code (boot failure or timeout)"
	exit 125
fi
exit "$rc"
