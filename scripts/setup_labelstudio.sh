#!/usr/bin/env bash
# Create .venv-labelstudio (if missing) with Label Studio for the integration tests
# (tests/labelstudio.py). Label Studio lives in its own virtualenv so its pins never touch
# triage's .venv. Idempotent: returns at once when the pinned version is already installed.
# Fails (non-zero, with pip's output) if the install fails: the tests must not be skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
version="1.23.2"
venv=".venv-labelstudio"
installed() {
  [ -x "$venv/bin/label-studio" ] && "$venv/bin/python" - "$version" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if version("label-studio") == sys.argv[1] else 1)
PY
}
if installed; then
  exit 0
fi
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! { "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip \
       && "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "label-studio==$version"; } \
     >"$log" 2>&1; then
  grep -v "is ignored: it is neither a file nor a directory" "$log" >&2 || true
  echo "setup_labelstudio.sh: installing label-studio==$version into $venv failed" >&2
  exit 1
fi
installed || { echo "setup_labelstudio.sh: label-studio==$version not importable after install" >&2; exit 1; }
