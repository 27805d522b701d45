"""`triage demo` end to end, small: it finishes by itself and writes an honest report."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures import REPO


def test_demo_runs_to_completion_and_improves(tmp_path: Path) -> None:
    report = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "triage", "demo", "--samples", "500", "--rate", "100", "--labels-per-minute", "900",
         "--retrain-every", "2", "--baseline-seeds", "3", "--report-dir", str(report)],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    summary = json.loads((report / "summary.json").read_text())
    versions = summary["model_versions"]
    assert versions[0]["version"] == "v1" and len(versions) >= 2
    promoted = [v for v in versions if v["status"] in ("current", "previous")]
    assert max(v["accuracy"] for v in promoted[1:]) > versions[0]["accuracy"]
    assert all({"version", "labels_used", "accuracy"} <= set(v) for v in versions)
    baseline = summary["baseline"]["model_versions"]
    assert [b["labels_used"] for b in baseline] == [v["labels_used"] for v in promoted]
    # Random over several seeds: a mean (still under "accuracy") inside its min-max band.
    assert summary["baseline"]["seeds"] == 3 and len(summary["baseline"]["draw_seeds"]) == 3
    for b in baseline:
        assert len(b["accuracy_per_seed"]) == 3
        assert b["accuracy"] == pytest.approx(sum(b["accuracy_per_seed"]) / 3)
        assert b["accuracy_min"] <= b["accuracy"] <= b["accuracy_max"] and b["accuracy_std"] >= 0
    last = baseline[-1]
    assert f"{last['accuracy']:.3f} ({last['accuracy_min']:.3f}-{last['accuracy_max']:.3f} over 3 seeds)" in done.stdout
    assert re.search(r"active v\d+ \d\.\d{3} is (above|inside|below) the band", done.stdout), done.stdout[-2000:]
    routes = summary["routes"]
    assert routes["predictions"] + routes["review"] + routes["dlq"] == summary["streamed"]
    assert summary["dlq"] == 8 and summary["reasons"]["outlier"] >= 10
    assert (report / "accuracy_vs_labels.png").stat().st_size > 10_000
    assert "report:" in done.stdout
