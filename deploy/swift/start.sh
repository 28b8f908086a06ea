#!/usr/bin/env bash
# A Swift all-in-one on loopback from Debian's packages, for cbr's tests and benchmarks: one device directory,
# rings with one replica, tempauth (test:tester / testing), slo and s3api in the proxy pipeline, memcached.
# Idempotent: a running proxy that answers /healthcheck is left alone. State lives under $CBR_SWIFT_DIR.
set -euo pipefail
DIR=${CBR_SWIFT_DIR:-/var/tmp/cbr-swift}
PORT=${CBR_SWIFT_PORT:-8080}
up() { curl -sf "http://127.0.0.1:${PORT}/healthcheck" >/dev/null 2>&1; }
if up; then echo "Swift answers on ${PORT}"; exit 0; fi

if ! command -v swift-proxy-server >/dev/null || ! command -v memcached >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq swift swift-proxy swift-account swift-container swift-object memcached curl >/dev/null
fi

mkdir -p "$DIR"/{conf,node/sdb1,run,log,cache}
# swift.conf has a fixed path; its hash suffix only has to stay the same for this cluster's life.
if [ ! -f /etc/swift/swift.conf ]; then
  mkdir -p /etc/swift
  printf '[swift-hash]\nswift_hash_path_suffix = cbr-test-suffix\nswift_hash_path_prefix = cbr-test-prefix\n\n[storage-policy:0]\nname = Policy-0\ndefault = yes\n' > /etc/swift/swift.conf
fi

C=$DIR/conf
common() {
  cat <<CONF
[DEFAULT]
devices = $DIR/node
mount_check = false
bind_ip = 127.0.0.1
bind_port = $1
workers = 1
user = root
swift_dir = $C
log_facility = LOG_LOCAL2
disable_fallocate = true
CONF
}
{ common 6202; printf '\n[pipeline:main]\npipeline = account-server\n\n[app:account-server]\nuse = egg:swift#account\n\n[account-replicator]\n[account-auditor]\n[account-reaper]\n'; } > "$C/account-server.conf"
{ common 6201; printf '\n[pipeline:main]\npipeline = container-server\n\n[app:container-server]\nuse = egg:swift#container\n\n[container-replicator]\n[container-updater]\n[container-auditor]\n[container-sync]\n'; } > "$C/container-server.conf"
{ common 6200; printf '\n[pipeline:main]\npipeline = object-server\n\n[app:object-server]\nuse = egg:swift#object\n\n[object-replicator]\n[object-reconstructor]\n[object-updater]\n[object-auditor]\n'; } > "$C/object-server.conf"
cat > "$C/proxy-server.conf" <<CONF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $PORT
workers = 1
user = root
swift_dir = $C
log_facility = LOG_LOCAL1

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
allow_account_management = true
account_autocreate = true

[filter:tempauth]
use = egg:swift#tempauth
user_admin_admin = admin .admin .reseller_admin
user_test_tester = testing .admin
storage_url_scheme = default

[filter:s3api]
use = egg:swift#s3api
location = us-east-1

[filter:slo]
use = egg:swift#slo
max_manifest_segments = 10000

[filter:dlo]
use = egg:swift#dlo

[filter:copy]
use = egg:swift#copy

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:11211

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:proxy-logging]
use = egg:swift#proxy_logging
CONF

if [ ! -f "$C/object.ring.gz" ]; then
  ( cd "$C"
    for spec in account:6202 container:6201 object:6200; do
      name=${spec%%:*}; port=${spec##*:}
      swift-ring-builder "$name.builder" create 10 1 1 >/dev/null
      swift-ring-builder "$name.builder" add "r1z1-127.0.0.1:${port}/sdb1" 100 >/dev/null
      swift-ring-builder "$name.builder" rebalance >/dev/null
    done )
fi

# tempauth answers 503 without memcached.
if ! (exec 3<>/dev/tcp/127.0.0.1/11211) 2>/dev/null; then
  memcached -d -u root -l 127.0.0.1 -p 11211 -P "$DIR/run/memcached.pid"
fi
start() {
  local name=$1
  if [ -f "$DIR/run/$name.pid" ] && kill -0 "$(cat "$DIR/run/$name.pid")" 2>/dev/null; then return; fi
  nohup "swift-$name" "$C/$name.conf" >"$DIR/log/$name.log" 2>&1 &
  echo $! > "$DIR/run/$name.pid"
}
start account-server
start container-server
start object-server
start proxy-server
for _ in $(seq 1 60); do
  if up; then echo "Swift started on ${PORT} (auth: http://127.0.0.1:${PORT}/auth/v1.0, test:tester/testing)"; exit 0; fi
  sleep 0.5
done
echo "Swift did not come up; logs in $DIR/log" >&2
tail -n 20 "$DIR"/log/*.log >&2 || true
exit 1
