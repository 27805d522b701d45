#!/usr/bin/env bash
# The whole test suite, from nothing: install triage with its test extras, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
scripts/setup_labelstudio.sh
exec .venv/bin/python -m pytest "$@"
