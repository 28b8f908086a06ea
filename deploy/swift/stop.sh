#!/usr/bin/env bash
# Stops the Swift all-in-one started by start.sh (memcached too). Data stays under $CBR_SWIFT_DIR.
DIR=${CBR_SWIFT_DIR:-/var/tmp/cbr-swift}
for name in proxy-server object-server container-server account-server memcached; do
  pid_file="$DIR/run/$name.pid"
  [ -f "$pid_file" ] && kill "$(cat "$pid_file")" 2>/dev/null
  rm -f "$pid_file"
done
exit 0
