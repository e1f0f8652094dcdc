#!/bin/bash
# Installs the servers bench/compare measures ktlsgate against, from Debian only.
# Debian's packages start their services on install; stop them so that nothing else
# listens or burns CPU during benchmarks.
set -e
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends nginx-core libnginx-mod-stream haproxy stunnel4 \
	python3-matplotlib openssl
for s in nginx haproxy stunnel4; do
	service "$s" stop >/dev/null 2>&1 || true
done
