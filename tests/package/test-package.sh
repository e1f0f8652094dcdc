#!/usr/bin/env bash
# Package test (issue 8): builds the .deb, runs lintian, installs it with apt,
# checks its files and the ktlsgate user, runs the installed daemon the way the
# systemd unit does (user ktlsgate, only CAP_NET_BIND_SERVICE) and as root with
# --user, serves one mTLS client through each, then purges the package and
# checks what is left. Exit 0 pass, 1 fail, 77 skip (not root, no
# dpkg-buildpackage, or a ktlsgate package already installed here).
# Env: KTLSGATE_DEB=FILE tests that .deb instead of building one.
set -uo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)

skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root (apt-get install/purge)"
command -v dpkg-buildpackage >/dev/null || [ -n "${KTLSGATE_DEB:-}" ] ||
	skip "dpkg-buildpackage missing (packaging/install-deps.sh package)"
if dpkg-query -W -f='${Status}' ktlsgate 2>/dev/null | grep -q 'ok installed'; then
	skip "a ktlsgate package is already installed; not replacing it"
fi

tmp=$(mktemp -d /tmp/ktlsgate-pkgtest.XXXXXX)
chmod 0755 "$tmp"
pids=()
installed=0
failures=0
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	if [ "$installed" = 1 ]; then
		DEBIAN_FRONTEND=noninteractive apt-get purge -y -q ktlsgate >/dev/null 2>&1
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

step() { echo "== $*"; }
ok() { echo "ok: $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
die() { echo "FAIL: $*"; exit 1; }
# A free port below 1024: the unit-like start proves CAP_NET_BIND_SERVICE is enough.
low_port() { /usr/bin/python3 -c '
import socket
for p in range(940, 1000):
    try:
        s = socket.socket(); s.bind(("127.0.0.1", p)); s.close(); print(p); break
    except OSError:
        pass'; }
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# -- build and lint
if [ -n "${KTLSGATE_DEB:-}" ]; then
	deb=$KTLSGATE_DEB
else
	step "build the package"
	DEB_BUILD_OPTIONS=nocheck "$top/packaging/build-deb.sh" "$tmp/dist" >"$tmp/build.log" 2>&1 ||
		{ tail -40 "$tmp/build.log"; die "packaging/build-deb.sh failed"; }
	deb=$(ls "$tmp"/dist/ktlsgate_*.deb)
fi
ok "built $(basename "$deb")"

if command -v lintian >/dev/null; then
	step "lintian"
	# lintian warns that it runs as root; that line is not about the package.
	lintian --pedantic "$deb" 2>&1 | grep -v '^running with root privileges' | tee "$tmp/lintian.log"
	if grep -qE '^[EW]: ' "$tmp/lintian.log"; then fail "lintian reports errors or warnings"; else ok "lintian: no errors or warnings"; fi
else
	echo "lintian not installed: not linted"
fi

# -- install
step "apt-get install"
cp "$deb" "$tmp/"
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$tmp/$(basename "$deb")" \
	>"$tmp/install.log" 2>&1 || { tail -30 "$tmp/install.log"; die "apt-get install failed"; }
installed=1
ok "installed"

dpkg -L ktlsgate >"$tmp/files"
missing=0
while IFS= read -r f; do
	[ -e "$f" ] || { fail "listed but missing: $f"; missing=1; }
done <"$tmp/files"
[ $missing = 0 ] && ok "every file dpkg -L lists exists ($(wc -l <"$tmp/files") entries)"

want=(/usr/sbin/ktlsgate /usr/bin/ktlsgate-bench /usr/libexec/ktlsgate/bench-backend
	/lib/systemd/system/ktlsgate.service /usr/lib/sysusers.d/ktlsgate.conf
	/usr/lib/tmpfiles.d/ktlsgate.conf /usr/lib/modules-load.d/ktlsgate.conf /etc/ktlsgate
	/usr/share/man/man8/ktlsgate.8.gz /usr/share/man/man5/ktlsgate.yaml.5.gz
	/usr/share/man/man1/ktlsgate-bench.1.gz)
# Shipped once the other branches land: ktlsgatectl and the YAML config.
[ -d "$top/control/ctl" ] && want+=(/usr/bin/ktlsgatectl /usr/share/man/man8/ktlsgatectl.8.gz
	/usr/share/bash-completion/completions/ktlsgatectl)
for f in "${want[@]}"; do
	grep -qxF "$f" "$tmp/files" || fail "not in the package: $f"
done
ok "expected paths are in the package"
if [ -f "$top/configs/ktlsgate.yaml" ]; then
	dpkg-query -W -f='${Conffiles}\n' ktlsgate | grep -q ' /etc/ktlsgate/ktlsgate.yaml ' &&
		ok "/etc/ktlsgate/ktlsgate.yaml is a conffile" || fail "/etc/ktlsgate/ktlsgate.yaml is not a conffile"
fi
[ "$(cat /usr/lib/modules-load.d/ktlsgate.conf | grep -v '^#')" = tls ] && ok "modules-load.d loads tls" ||
	fail "modules-load.d/ktlsgate.conf does not name tls"

if getent passwd ktlsgate >/dev/null && getent group ktlsgate >/dev/null; then
	ok "user and group ktlsgate: $(getent passwd ktlsgate)"
else
	die "user or group ktlsgate missing after install"
fi
[ -d /var/lib/ktlsgate ] && [ "$(stat -c %U /var/lib/ktlsgate)" = ktlsgate ] &&
	ok "tmpfiles.d made /var/lib/ktlsgate" || fail "/var/lib/ktlsgate missing or not owned by ktlsgate"

if command -v systemd-analyze >/dev/null; then
	if systemd-analyze verify /lib/systemd/system/ktlsgate.service >"$tmp/verify.log" 2>&1; then
		ok "systemd-analyze verify"
	else
		cat "$tmp/verify.log"; fail "systemd-analyze verify"
	fi
	score=$(systemd-analyze security --offline=true /lib/systemd/system/ktlsgate.service 2>/dev/null |
		sed -n 's/^→ Overall exposure level for ktlsgate.service: //p')
	echo "systemd-analyze security: ${score:-?}"
fi
wants=/etc/systemd/system/multi-user.target.wants/ktlsgate.service
[ -L "$wants" ] && ok "service enabled (like nginx)" || fail "service not enabled: $wants missing"
man -w ktlsgate.yaml >/dev/null 2>&1 && ok "man ktlsgate.yaml finds the page" || true

# -- a PKI readable by group ktlsgate only, as the man page says to set up keys
step "run the installed daemon"
/usr/bin/python3 "$top/tests/pki/gen_pki.py" "$tmp/pki" >/dev/null || die "gen_pki.py failed"
pki=$tmp/pki
chgrp -R ktlsgate "$pki" && chmod 0750 "$pki" && chmod 0640 "$pki"/*
mkdir -p "$tmp/www" && echo "hello through the package" >"$tmp/www/index.html"
chmod -R a+rX "$tmp/www"
bport=$(free_port)
/usr/bin/python3 -m http.server "$bport" --bind 127.0.0.1 --directory "$tmp/www" >"$tmp/backend.log" 2>&1 &
pids+=($!)

yaml_supported() { # the config parser lands on another branch
	local out
	out=$(/usr/sbin/ktlsgate --check --config /dev/null 2>&1)
	[[ $out != *"not supported by this version"* ]]
}

# The daemon's arguments for one listener, as YAML config or command line.
# how=root: start as root and drop to ktlsgate (global.user in the file, --user
# on the command line, which --config refuses).
daemon_args() { # port, name, how
	if yaml_supported; then
		{
			echo "global:"
			echo "  workers: 1"
			[ "$3" = root ] && echo "  user: ktlsgate"
			cat <<EOF
listeners:
  - name: $2
    listen: "127.0.0.1:$1"
    identities:
      - cert: $pki/server-ecdsa-chain.crt
        key: $pki/server-ecdsa.key
    client_ca: $pki/client-ca.pem
    crl: $pki/crl-bundle.pem
    backends: "127.0.0.1:$bport"
EOF
		} >"$tmp/$2.yaml"
		chgrp ktlsgate "$tmp/$2.yaml" && chmod 0640 "$tmp/$2.yaml"
		echo "--config $tmp/$2.yaml"
	else
		echo "--listen 127.0.0.1:$1 --cert $pki/server-ecdsa-chain.crt --key $pki/server-ecdsa.key" \
			"--client-ca $pki/client-ca.pem --crl $pki/crl-bundle.pem --backend 127.0.0.1:$bport --workers 1"
		if [ "$3" = root ]; then echo "--user ktlsgate"; fi
	fi
}

# As the unit: User=ktlsgate, AmbientCapabilities=CAP_NET_BIND_SERVICE, NoNewPrivileges.
as_unit=(setpriv --reuid=ktlsgate --regid=ktlsgate --init-groups --inh-caps=-all,+net_bind_service
	--ambient-caps=-all,+net_bind_service --bounding-set=-all,+net_bind_service --no-new-privs)

serve_one() { # name, how ("unit" or "root"), port
	local name=$1 how=$2 port=$3 args log=$tmp/$1.log pid
	read -r -a args <<<"$(daemon_args "$port" "$name" "$how" | tr '\n' ' ')"
	local pre=()
	if [ "$how" = unit ]; then pre=("${as_unit[@]}"); fi
	if "${pre[@]}" /usr/sbin/ktlsgate --check "${args[@]}" >"$tmp/$name.check" 2>&1; then
		ok "$name: ktlsgate --check: $(cat "$tmp/$name.check")"
	else
		cat "$tmp/$name.check"; fail "$name: ktlsgate --check"; return
	fi
	"${pre[@]}" /usr/sbin/ktlsgate "${args[@]}" 2>"$log" &
	pid=$!
	pids+=($pid)
	for _ in $(seq 100); do
		grep -q ' ready ' "$log" && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	grep -q ' ready ' "$log" || { cat "$log"; fail "$name: daemon never became ready"; return; }
	local st uid caps
	st=$(cat /proc/"$pid"/status)
	uid=$(awk '/^Uid:/ {print $2 "," $3 "," $4 "," $5}' <<<"$st")
	caps=$(awk '/^Cap(Prm|Eff|Amb):/ {printf "%s ", $2}' <<<"$st")
	local kuid
	kuid=$(id -u ktlsgate)
	[ "$uid" = "$kuid,$kuid,$kuid,$kuid" ] && ok "$name: runs as ktlsgate" || fail "$name: uids $uid"
	[ "$caps" = "0000000000000000 0000000000000000 0000000000000000 " ] &&
		ok "$name: no capabilities left" || fail "$name: capabilities after start (Prm Eff Amb): $caps"
	# Started as root the daemon empties the bounding set; the unit leaves
	# CAP_NET_BIND_SERVICE there (only CAP_SETPCAP could drop it; no_new_privs
	# keeps it from ever coming back).
	local bnd want_bnd=0000000000000000
	bnd=$(awk '/^CapBnd:/ {print $2}' <<<"$st")
	[ "$how" = unit ] && want_bnd=0000000000000400
	[ "$bnd" = $want_bnd ] && ok "$name: bounding set $bnd" || fail "$name: bounding set $bnd, want $want_bnd"
	local body
	body=$(curl -sS --max-time 10 --cacert "$pki/root-ca.crt" --cert "$pki/client-chain.crt" \
		--key "$pki/client.key" "https://localhost:$port/" 2>&1)
	[ "$body" = "hello through the package" ] && ok "$name: mTLS client served" ||
		fail "$name: curl got: $body"
	if curl -sS --max-time 10 --cacert "$pki/root-ca.crt" --cert "$pki/client-revoked-chain.crt" \
		--key "$pki/client-revoked.key" "https://localhost:$port/" >/dev/null 2>&1; then
		fail "$name: revoked client got through"
	else
		ok "$name: revoked client refused"
	fi
	kill -TERM "$pid"
	for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	if kill -0 "$pid" 2>/dev/null; then
		fail "$name: still running 10 s after SIGTERM"
	else
		wait "$pid"
		local rc=$?
		[ $rc = 0 ] && ok "$name: stopped (exit 0)" || { tail -5 "$log"; fail "$name: exit status $rc"; }
	fi
	grep -q 'result=ok' "$log" && ok "$name: access log line" || fail "$name: no access log line"
}

# Every system call the daemon makes while starting, serving and draining
# must pass the unit's SystemCallFilter= (an unlisted one kills it in production).
expand_filter() { # @group or name... -> syscall names, one per line
	local x
	for x in "$@"; do
		case $x in
		@*) expand_filter $(systemd-analyze syscall-filter "$x" 2>/dev/null | sed -n 's/^ \{4\}\([@a-z0-9_-]*\)$/\1/p') ;;
		*) echo "$x" ;;
		esac
	done
}

syscall_check() { # port
	local port=$1 args tracer daemon
	read -r -a args <<<"$(daemon_args "$port" strace unit | tr '\n' ' ')"
	# strace runs as ktlsgate (as the unit would run the daemon): its own directory.
	install -d -o ktlsgate -g ktlsgate "$tmp/trace"
	"${as_unit[@]}" strace -f -qq -o "$tmp/trace/strace.txt" /usr/sbin/ktlsgate "${args[@]}" 2>"$tmp/strace.log" &
	tracer=$!
	pids+=($tracer)
	for _ in $(seq 100); do grep -q ' ready ' "$tmp/strace.log" && break; sleep 0.1; done
	grep -q ' ready ' "$tmp/strace.log" || { cat "$tmp/strace.log"; tail -5 "$tmp/trace/strace.txt"; fail "syscalls: traced daemon not ready"; return; }
	curl -sS --max-time 10 --cacert "$pki/root-ca.crt" --cert "$pki/client-chain.crt" \
		--key "$pki/client.key" "https://localhost:$port/" >/dev/null 2>&1
	curl -sS --max-time 10 --cacert "$pki/root-ca.crt" --cert "$pki/client-revoked-chain.crt" \
		--key "$pki/client-revoked.key" "https://localhost:$port/" >/dev/null 2>&1
	daemon=$(pgrep -P "$tracer" | head -1)
	[ -n "$daemon" ] && kill -TERM "$daemon"
	wait "$tracer"
	local filter
	filter=$(sed -n 's/^SystemCallFilter=//p' /lib/systemd/system/ktlsgate.service | grep -v '^~' | head -1)
	expand_filter $filter | sort -u >"$tmp/allowed.txt"
	sed -n 's/^[0-9]* *\([a-z0-9_]*\)(.*/\1/p' "$tmp/trace/strace.txt" | sort -u >"$tmp/used.txt"
	local outside
	outside=$(comm -23 "$tmp/used.txt" "$tmp/allowed.txt" | tr '\n' ' ')
	if [ -z "$outside" ]; then
		ok "syscalls: all $(wc -l <"$tmp/used.txt") used are allowed by SystemCallFilter=$filter"
	else
		fail "syscalls outside the unit's SystemCallFilter: $outside"
	fi
}

serve_one unit-like unit "$(low_port)"
serve_one root-user root "$(free_port)"
if command -v strace >/dev/null && command -v systemd-analyze >/dev/null; then
	syscall_check "$(free_port)"
else
	echo "strace or systemd-analyze missing: SystemCallFilter not checked"
fi

# -- purge
step "apt-get purge"
DEBIAN_FRONTEND=noninteractive apt-get purge -y -q ktlsgate >"$tmp/purge.log" 2>&1 ||
	{ tail -20 "$tmp/purge.log"; die "apt-get purge failed"; }
installed=0
dpkg-query -W -f='${Status}' ktlsgate 2>/dev/null | grep -q 'ok installed' && fail "still installed after purge"
left=()
while IFS= read -r f; do
	[ -e "$f" ] || continue
	[ -d "$f" ] && ! [[ $f == */ktlsgate || $f == */ktlsgate/* ]] && continue # shared dirs: /usr/bin, ...
	left+=("$f")
done <"$tmp/files"
for d in /etc/ktlsgate /var/lib/ktlsgate /var/log/ktlsgate /run/ktlsgate /usr/libexec/ktlsgate "$wants"; do
	if [ -e "$d" ] || [ -L "$d" ]; then left+=("$d"); fi
done
if [ ${#left[@]} -eq 0 ]; then ok "nothing of the package left"; else fail "left after purge: ${left[*]}"; fi
# Debian keeps system users on purge (their files may still exist; uids must not be reused).
getent passwd ktlsgate >/dev/null && ok "user ktlsgate kept, as policy wants"

if [ $failures -gt 0 ]; then
	echo "test-package: $failures failure(s)"
	exit 1
fi
echo "test-package: all passed"
exit 0
