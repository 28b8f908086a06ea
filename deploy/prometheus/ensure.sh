#!/usr/bin/env bash
# Installs Debian's `prometheus` package when promtool or prometheus is missing (promtool comes with it). The
# packaged service is not started, ever: tests start their own prometheus with a temp config, data dir and port.
# Idempotent, and instant when both are there (apt is not called). Exits 3, naming the package, when it is missing
# and this is not root. Prints where the two binaries are.
set -euo pipefail

present() { command -v prometheus >/dev/null && command -v promtool >/dev/null; }

# apt_get: apt-get waiting for another install's locks.
. "$(dirname "${BASH_SOURCE[0]}")/../lib/apt.sh"

if ! present; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian package: prometheus (run as root: apt-get install --no-install-recommends prometheus)" >&2
    exit 3
  fi
  # invoke-rc.d asks policy-rc.d whether a package may start its service; 101 says no. Docker images ship one
  # already; elsewhere one is put there for the install and removed after it.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  echo "installing prometheus"
  apt_get update -qq
  apt_get install -y -qq --no-install-recommends prometheus
  # Where systemd runs, the unit may still have been enabled or started: this host's tests run their own.
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
  present || { echo "prometheus or promtool is still missing after installing the package" >&2; exit 1; }
fi
echo "prometheus: $(command -v prometheus)"
echo "promtool: $(command -v promtool)"
