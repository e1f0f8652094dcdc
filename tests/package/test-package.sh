#!/usr/bin/env bash
# Package test (issue 8): builds the .deb, runs lintian, installs it with apt,
# checks its files, the ktlsgate user and the demo PKI postinst makes; runs the
# installed /etc/ktlsgate/ktlsgate.yaml the way the systemd unit does (user
# ktlsgate, only CAP_NET_BIND_SERVICE, control socket in a RuntimeDirectory-like
# directory), serves the demo client through it, drives it with ktlsgatectl
# (root and ktlsgate may; nobody may not); runs the daemon with a test PKI as
# the unit would and as root with user ktlsgate, serves one mTLS client through
# each, checks its system calls against the unit's filter, then purges the
# package and checks what is left. Exit 0 pass, 1 fail, 77 skip (not root, no
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
		DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 purge -y -q ktlsgate >/dev/null 2>&1
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
# A backend must listen before the first client comes through (5 s at most).
wait_listen() { /usr/bin/python3 -c '
import socket, sys, time
for _ in range(100):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2).close(); sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(1)' "$1"; }
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
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 install -y -q --no-install-recommends "$tmp/$(basename "$deb")" \
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
	/usr/bin/ktlsgatectl /usr/libexec/ktlsgate/make-demo-pki
	/lib/systemd/system/ktlsgate.service /usr/lib/sysusers.d/ktlsgate.conf
	/usr/lib/tmpfiles.d/ktlsgate.conf /usr/lib/modules-load.d/ktlsgate.conf
	/etc/ktlsgate /etc/ktlsgate/ktlsgate.yaml /usr/share/doc/ktlsgate/examples/ktlsgate.yaml
	/usr/share/man/man8/ktlsgate.8.gz /usr/share/man/man5/ktlsgate.yaml.5.gz
	/usr/share/man/man1/ktlsgate-bench.1.gz /usr/share/man/man8/ktlsgatectl.8.gz
	/usr/share/bash-completion/completions/ktlsgatectl)
for f in "${want[@]}"; do
	grep -qxF "$f" "$tmp/files" || fail "not in the package: $f"
done
ok "expected paths are in the package"
dpkg-query -W -f='${Conffiles}\n' ktlsgate | grep -q ' /etc/ktlsgate/ktlsgate.yaml ' &&
	ok "/etc/ktlsgate/ktlsgate.yaml is a conffile" || fail "/etc/ktlsgate/ktlsgate.yaml is not a conffile"
cmp -s "$top/configs/ktlsgate.yaml" /usr/share/doc/ktlsgate/examples/ktlsgate.yaml &&
	ok "configs/ktlsgate.yaml is the installed example" || fail "examples/ktlsgate.yaml differs from configs/"

# postinst's demo PKI (first install): the files the conffile names, keys
# readable by group ktlsgate only, the CA key by root only.
demo=/etc/ktlsgate/demo
demo_ok=1
for f in ca.crt:0644:root ca.crl:0644:root ca.key:0600:root server.crt:0644:root \
	server.key:0640:ktlsgate client.crt:0644:root client.key:0640:ktlsgate; do
	IFS=: read -r name mode grp <<<"$f"
	got=$(stat -c '%a:%U:%G' "$demo/$name" 2>/dev/null)
	[ "$got" = "${mode#0}:root:$grp" ] || { fail "$demo/$name: ${got:-missing}, want ${mode#0}:root:$grp"; demo_ok=0; }
done
[ $demo_ok = 1 ] && ok "postinst made the demo PKI in $demo"
openssl verify -CAfile "$demo/ca.crt" -crl_check -CRLfile "$demo/ca.crl" -purpose sslclient \
	"$demo/client.crt" >/dev/null 2>&1 && ok "demo client certificate verifies against the CA and its CRL" ||
	fail "demo client certificate does not verify"
openssl x509 -in "$demo/server.crt" -noout -ext subjectAltName 2>/dev/null | grep -q "DNS:$(uname -n)" &&
	ok "demo server certificate names this host ($(uname -n))" || fail "demo server certificate lacks DNS:$(uname -n)"
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
for page in ktlsgate ktlsgate.yaml ktlsgatectl ktlsgate-bench; do
	man -w "$page" >/dev/null 2>&1 || echo "man -w $page: not found (no man-db here?)"
done
# The installed completion offers the show subcommands.
words=$(bash -c 'source /usr/share/bash-completion/completions/ktlsgatectl &&
	COMP_WORDS=(ktlsgatectl show ""); COMP_CWORD=2; _ktlsgatectl; echo "${COMPREPLY[*]}"' 2>&1)
[[ $words == *"info"*"generation"* ]] && ok "bash completion: ktlsgatectl show <TAB> -> $words" ||
	fail "bash completion of 'ktlsgatectl show': $words"

# -- the installed configuration, as the unit runs it: ExecStartPre= check, then
# ExecStart= with the control socket in a RuntimeDirectory-like directory.
# As the unit: User=ktlsgate, AmbientCapabilities=CAP_NET_BIND_SERVICE, NoNewPrivileges.
as_unit=(setpriv --reuid=ktlsgate --regid=ktlsgate --init-groups --inh-caps=-all,+net_bind_service
	--ambient-caps=-all,+net_bind_service --bounding-set=-all,+net_bind_service --no-new-privs)
port_free() { /usr/bin/python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try: s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError: sys.exit(1)' "$1"; }

step "the installed configuration: /etc/ktlsgate/ktlsgate.yaml"
conf=/etc/ktlsgate/ktlsgate.yaml
dport=8443 dbport=8080
if ! port_free 8443 || ! port_free 8080; then
	# Another daemon (a quickstart demo?) holds the demo's ports: the same file
	# with two free ports instead, so the rest can still be tested.
	dport=$(free_port) dbport=$(free_port)
	sed -e "s/:8443\"/:$dport\"/g" -e "s/127.0.0.1:8080/127.0.0.1:$dbport/" "$conf" >"$tmp/demo.yaml"
	chmod 0644 "$tmp/demo.yaml"
	conf=$tmp/demo.yaml
	echo "ports 8443 or 8080 are in use here: testing a copy on $dport -> $dbport"
fi
if "${as_unit[@]}" /usr/sbin/ktlsgate --check --config "$conf" >"$tmp/demo.check" 2>&1; then
	ok "ktlsgate --check --config $conf (as the unit's ExecStartPre=): $(cat "$tmp/demo.check")"
else
	cat "$tmp/demo.check"; fail "ktlsgate --check --config $conf"
fi
/usr/sbin/ktlsgate --check --config "$conf" >"$tmp/demo.check-root" 2>&1 &&
	ok "the same as root (drops to global.user)" || { cat "$tmp/demo.check-root"; fail "--check as root"; }

mkdir -p "$tmp/demo-www" && echo "hello from the demo configuration" >"$tmp/demo-www/index.html"
chmod -R a+rX "$tmp/demo-www"
/usr/bin/python3 -m http.server "$dbport" --bind 127.0.0.1 --directory "$tmp/demo-www" >"$tmp/demo-backend.log" 2>&1 &
pids+=($!)
wait_listen "$dbport" || fail "demo backend on 127.0.0.1:$dbport never listened"
install -d -o ktlsgate -g ktlsgate -m 0750 "$tmp/run" # RuntimeDirectory=ktlsgate, RuntimeDirectoryMode=0750
sock=$tmp/run/control.sock
(umask 0027 && exec "${as_unit[@]}" /usr/sbin/ktlsgate --config "$conf" --control-socket "$sock") 2>"$tmp/demo.log" &
dpid=$!
pids+=($dpid)
for _ in $(seq 100); do
	grep -q ' ready ' "$tmp/demo.log" && break
	kill -0 "$dpid" 2>/dev/null || break
	sleep 0.1
done
# The subshell execs setpriv, which execs the daemon: $dpid is the daemon.
if grep -q ' ready ' "$tmp/demo.log"; then
	ok "the installed configuration serves (as user $(ps -o user= -p "$dpid"))"
	for url in "https://localhost:$dport/" "https://[::1]:$dport/"; do
		body=$(curl -sS --max-time 10 --cacert $demo/ca.crt --cert $demo/client.crt --key $demo/client.key "$url" 2>&1)
		[ "$body" = "hello from the demo configuration" ] && ok "demo client served at $url" ||
			fail "demo client at $url got: $body"
	done
	curl -sS --max-time 10 --cacert $demo/ca.crt "https://localhost:$dport/" >/dev/null 2>&1 &&
		fail "a client without a certificate got through" || ok "a client without a certificate is refused"
	st=$(stat -c '%a %U %G' "$sock" 2>/dev/null)
	[ "$st" = "660 ktlsgate ktlsgate" ] && ok "control socket $st" || fail "control socket: ${st:-missing}, want 660 ktlsgate ktlsgate"
	if /usr/bin/ktlsgatectl -s "$sock" show info >"$tmp/ctl-info" 2>&1 &&
		grep -q "^config: *$conf\$" "$tmp/ctl-info"; then
		ok "ktlsgatectl show info (root): $(grep -c . "$tmp/ctl-info") lines, config $conf"
	else
		cat "$tmp/ctl-info"; fail "ktlsgatectl show info as root"
	fi
	out=$(/usr/bin/ktlsgatectl -s "$sock" reload 2>&1) && [[ $out == "reloaded: generation 2"* ]] &&
		ok "ktlsgatectl reload (root): $out" || fail "ktlsgatectl reload as root: $out"
	# ExecReload= runs as User=ktlsgate, the socket's owner.
	out=$(setpriv --reuid=ktlsgate --regid=ktlsgate --init-groups /usr/bin/ktlsgatectl -s "$sock" reload 2>&1) &&
		[[ $out == "reloaded: generation 3"* ]] && ok "ktlsgatectl reload (user ktlsgate, as ExecReload=): $out" ||
		fail "ktlsgatectl reload as ktlsgate: $out"
	# Neither root, ktlsgate nor in its group: the directory and the socket's
	# mode keep nobody out; with the socket opened up the daemon refuses too.
	as_nobody=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
	out=$("${as_nobody[@]}" /usr/bin/ktlsgatectl -s "$sock" show info 2>&1); rc=$?
	[ $rc = 3 ] && [[ $out == *"Permission denied"* ]] && ok "nobody cannot connect (exit 3): $out" ||
		fail "nobody: exit $rc: $out"
	chmod 0755 "$tmp/run" && chmod 0666 "$sock"
	# The daemon answers a refused peer at once and closes; ktlsgatectl may still
	# be sending then (EPIPE, exit 4) or read the answer (exit 1): the daemon's
	# log says which uid it refused either way.
	out=$("${as_nobody[@]}" /usr/bin/ktlsgatectl -s "$sock" reload 2>&1); rc=$?
	sleep 0.2
	if { [ $rc = 1 ] || [ $rc = 4 ]; } && grep -q "control_denied.*uid $(id -u nobody) " "$tmp/demo.log"; then
		ok "daemon refuses nobody on an opened-up socket (exit $rc; logged control_denied)"
	else
		fail "nobody on an opened-up socket: exit $rc: $out"
	fi
	chmod 0750 "$tmp/run"
	kill -TERM "$dpid"
	for _ in $(seq 100); do kill -0 "$dpid" 2>/dev/null || break; sleep 0.1; done
	if kill -0 "$dpid" 2>/dev/null; then
		fail "demo: still running 10 s after SIGTERM"
	else
		wait "$dpid"; rc=$?
		[ $rc = 0 ] && ok "demo: stopped (exit 0)" || { tail -5 "$tmp/demo.log"; fail "demo: exit status $rc"; }
	fi
	[ -e "$sock" ] && fail "control socket left behind after stop" || ok "control socket removed on stop"
	[ "$(grep -c 'result=ok' "$tmp/demo.log")" = 2 ] && ok "demo: two access lines result=ok" ||
		{ grep access "$tmp/demo.log"; fail "demo: want two result=ok access lines"; }
else
	cat "$tmp/demo.log"; fail "the installed configuration never became ready"
fi

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
wait_listen "$bport" || fail "backend on 127.0.0.1:$bport never listened"

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
	for _ in $(seq 100); do grep -qs ' ready ' "$tmp/strace.log" && break; sleep 0.1; done
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
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 purge -y -q ktlsgate >"$tmp/purge.log" 2>&1 ||
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
