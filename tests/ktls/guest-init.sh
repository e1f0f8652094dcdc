#!/bin/sh
# PID 1 of the user-mode-linux guest (Debian's user-mode-linux, kernel 6.1um):
# mounts what a test needs, loads the kTLS modules (there is no modprobe in the
# guest and the modules live under /usr/lib/uml), runs the command and reports
# "ktlsgate-uml: EXIT=<code>" on the console before powering off.
# Usage (from run-uml.sh): guest-init.sh ENVFILE COMMAND [ARGS...]
# Scratch space is /dev/shm: /tmp stays the host's (read-only) so a checkout
# under /tmp is still visible.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/dev/shm TMPDIR=/dev/shm
BB=/bin/busybox
$BB mount -t proc proc /proc
$BB mount -t sysfs sys /sys
$BB mkdir -p /dev/shm
$BB mount -t tmpfs -o mode=1777 tmpfs /dev/shm
$BB mount -t tmpfs -o mode=0755 tmpfs /run
M=/usr/lib/uml/modules/$(uname -r)/kernel
# gcm needs ctr and ghash at crypto_alloc time, not as symbol dependencies.
for m in crypto/gf128mul crypto/ghash-generic crypto/ctr crypto/gcm net/tls/tls; do
	$BB insmod "$M/$m.ko" || echo "ktlsgate-uml: insmod $m failed"
done
for m in lib/crypto/libchacha crypto/chacha_generic lib/crypto/libpoly1305 \
	crypto/poly1305_generic crypto/chacha20poly1305; do
	$BB insmod "$M/$m.ko" 2>/dev/null
done
$BB ip link set lo up
envfile=$1
shift
. "$envfile"
echo "ktlsgate-uml: kernel $(uname -r), ulp: $(cat /proc/sys/net/ipv4/tcp_available_ulp), running: $*"
"$@" </dev/null    # the console never sends EOF: never let a test read it
rc=$?
echo "ktlsgate-uml: EXIT=$rc"
$BB sync
$BB poweroff -f
