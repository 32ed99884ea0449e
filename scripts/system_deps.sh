#!/usr/bin/env bash
# System packages the test suite uses (Debian): Chromium for the browser UI tests (driven by Playwright
# with executable_path=/usr/bin/chromium) and PostgreSQL for the production-storage tests.
# Idempotent and quick when everything is present; never fatal (tests that need a missing package skip
# with a message naming this script).
set -uo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null 2>&1; then
  echo "system_deps: missing ${need[*]} and no root/sudo to install them; the tests needing them will skip" >&2
  exit 0
fi
SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo -n"
echo "system_deps: installing ${need[*]} (Debian packages)" >&2
export DEBIAN_FRONTEND=noninteractive
{ $SUDO apt-get update -q && $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"; } >/tmp/rdtf-system-deps.log 2>&1 \
  || { echo "system_deps: apt-get failed (log: /tmp/rdtf-system-deps.log); the tests needing ${need[*]} will skip" >&2; }
exit 0
