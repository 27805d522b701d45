"""The example messages shipped in ``examples/`` and shown in the README follow the contracts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from triage.contracts import decode_prediction, decode_sample

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["sample.json", "sample-uncertain.json"])
def test_example_samples_decode(name: str) -> None:
    sample = decode_sample((REPO / "examples" / name).read_bytes(), 64, 1_000_000)
    assert sample.id.startswith("order-") and len(sample.features) == 64


def test_readme_prediction_example_decodes() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("On `triage.predictions`:", 1)[1]
    record = re.search(r"```json\n(.*?)\n```", section, flags=re.S).group(1)  # type: ignore[union-attr]
    prediction = decode_prediction(record.encode(), 1_000_000)
    assert prediction.id == "order-7731" and prediction.label == "7"
