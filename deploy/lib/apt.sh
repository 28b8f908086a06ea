# Sourced by the deploy/*/ensure.sh scripts: apt-get that waits for another install holding apt's locks (a test's
# service script, an operator) rather than failing.
apt_get() {
  local out
  for _ in $(seq 1 120); do
    if out=$(DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@" 2>&1); then return 0; fi
    case $out in
      *"Could not get lock"* | *"Unable to lock"* | *"Unable to acquire"*) sleep 5 ;;
      *) echo "$out" >&2; return 1 ;;
    esac
  done
  echo "$out" >&2
  return 1
}
