#!/usr/bin/env bash
# The Debian tools the deploy tests run: promtool and prometheus (package prometheus) and
# docker-compose v1 (package docker-compose). Idempotent: returns at once when all are on PATH.
# Fails (non-zero, with apt-get's output) when they cannot be installed: the tests must not skip.
set -euo pipefail
missing=()
command -v promtool >/dev/null && command -v prometheus >/dev/null || missing+=(prometheus)
command -v docker-compose >/dev/null || missing+=(docker-compose)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "setup_deploytools.sh: need root to install ${missing[*]}: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
lock=(-o DPkg::Lock::Timeout=300)  # another apt may hold the lock
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! { DEBIAN_FRONTEND=noninteractive apt-get "${lock[@]}" update -qq \
       && DEBIAN_FRONTEND=noninteractive apt-get "${lock[@]}" install -y -qq --no-install-recommends "${missing[@]}"; } \
     >"$log" 2>&1; then
  tail -50 "$log" >&2
  echo "setup_deploytools.sh: apt-get install ${missing[*]} failed" >&2
  exit 1
fi
