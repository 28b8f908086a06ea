#!/usr/bin/env bash
# Installs from Debian's packages the tools cbr's tests and sandbox run, when they are missing: the tools named as
# arguments, or by default the ones every test run needs. Idempotent, and instant when all are there (apt is
# not called). Exits 3, naming the packages to install, when something is missing and this is not root.
#   java      a JDK 17, found under /usr/lib/jvm or $CBR_JAVA_HOME as cbr looks for it (the Cassandra sandbox)
#   mvn       Maven (fetches the Cassandra jars once into ~/.cache/cbr)
#   zstd      the zstd command (a unit test checks cbr's zstd output with it; the benchmarks compare with it)
#   curl      the health checks of deploy/swift and deploy/keystone
#   pkill     procps (the Swift test kills its proxy)
#   chromium  Debian's Chromium (the browser test of `cbr ui`; not by default, its helper asks for it)
set -euo pipefail

package() {
  case $1 in
    java) echo openjdk-17-jdk-headless ;;
    mvn) echo maven ;;
    zstd) echo zstd ;;
    curl) echo curl ;;
    pkill) echo procps ;;
    chromium) echo chromium ;;
    *) echo "unknown tool: $1" >&2; return 2 ;;
  esac
}

present() {
  case $1 in
    # The same test as src/cassandra/java.ts: a java in a JDK directory whose name says 11 or 17.
    java) { [ -n "${CBR_JAVA_HOME:-}" ] && [ -x "$CBR_JAVA_HOME/bin/java" ]; } || compgen -G '/usr/lib/jvm/*1[17]*/bin/java' >/dev/null ;;
    *) command -v "$1" >/dev/null ;;
  esac
}

# apt_get: apt-get waiting for another install's locks.
. "$(dirname "${BASH_SOURCE[0]}")/../lib/apt.sh"

tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(java mvn zstd curl pkill)
need=()
for t in "${tools[@]}"; do
  pkg=$(package "$t")
  present "$t" || need+=("$pkg")
done
if [ ${#need[@]} -eq 0 ]; then
  echo "present: ${tools[*]}"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${need[*]} (run as root: apt-get install ${need[*]})" >&2
  exit 3
fi
echo "installing ${need[*]}"
apt_get update -qq
apt_get install -y -qq "${need[@]}"
for t in "${tools[@]}"; do
  present "$t" || { echo "$t is still missing after installing ${need[*]}" >&2; exit 1; }
done
echo "installed ${need[*]}"
