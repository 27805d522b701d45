#!/usr/bin/env bash
# The test suite from nothing: install what the tier needs, then pytest (tiers: tests/conftest.py).
#   ./scripts/test.sh             everything CI runs (installs Label Studio and the deploy tools too)
#   ./scripts/test.sh fast        the fast tier: in process, no broker, no subprocess
#   ./scripts/test.sh [ARGS]      pytest arguments pass through, e.g. -m "not labelstudio"
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
if [ "${1:-}" = fast ]; then
  shift
  exec .venv/bin/python -m pytest -m fast -n auto "$@"
fi
scripts/setup_labelstudio.sh
scripts/setup_deploytools.sh
# Broker and process tests mostly wait (group joins, subprocess start-up), so more workers than
# cores pays; Label Studio and the exporter zoo each stay on one worker (--dist loadgroup).
exec .venv/bin/python -m pytest -n "${TRIAGE_TEST_WORKERS:-4}" --dist loadgroup "$@"
