#!/usr/bin/env bash
# Makes sure Debian's Chromium is installed, for the browser test of `cbr ui` (playwright-core drives it: no
# browser download). Idempotent and instant when it is there; installs it as root when it is missing. Exits 3,
# with the command to run, when it is missing and this is not root.
exec bash "$(dirname "$0")/../tools/ensure.sh" chromium
