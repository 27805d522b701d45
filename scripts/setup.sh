#!/usr/bin/env bash
# Create .venv (if missing) and install triage into it (editable) with the given extras.
#   scripts/setup.sh                 the core: serve a prepared model from a registry
#   scripts/setup.sh train           + scikit-learn, skl2onnx (train, retrain, simulate)
#   scripts/setup.sh demo            + train, matplotlib and the embedded broker (triage demo)
#   scripts/setup.sh quality         + train, crowd-kit, cleanlab, krippendorff (simulate --annotators)
#   scripts/setup.sh test            everything the test suite needs
#   scripts/setup.sh train,exporters several extras: comma- or space-separated
set -euo pipefail
cd "$(dirname "$0")/.."
extras="$(printf '%s' "$*" | tr -s ' ' ',')"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extras:+[$extras]}"
