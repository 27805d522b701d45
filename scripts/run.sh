#!/usr/bin/env bash
# The main job: install triage, then run it on the embedded default.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/triage demo "$@"
