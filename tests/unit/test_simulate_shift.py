"""``triage simulate --shift``: the monitor's core on shifted replays, against the truth.

The outputs are synthetic and calibrated by construction (a row with confidence p is right with
probability p), so what is asserted is the monitor's behaviour, not a model's."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from triage.cli import main
from triage.monitoring.state import MonitorConfig
from triage.simulation.monitoring import Outputs, aggregate, replay, shifted_stream

CLASSES = np.array(["a", "b", "c", "d"])
CONFIG = MonitorConfig(window=1000, ert=100_000.0, reference=3000)


def _outputs(n: int = 10_000, seed: int = 0) -> tuple[Outputs, np.ndarray]:
    """Rows whose first feature (the high-variance one, so the first principal component) sets the
    confidence: a covariate shift along it changes accuracy and what the model outputs."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.normal(0, 3, n), rng.normal(0, 0.1, n)])
    conf = 0.55 + 0.44 / (1 + np.exp(-X[:, 0]))
    truth = CLASSES[rng.integers(0, 4, n)]
    right = rng.random(n) < conf
    wrong = CLASSES[(np.searchsorted(CLASSES, truth) + rng.integers(1, 4, n)) % 4]
    predicted = np.where(right, truth, wrong)
    margin = conf - (1 - conf) / 3
    return Outputs(conf, margin, np.full(n, np.nan), predicted, truth), X


def _run(shift: str, seed: int, strength: float = 4.0) -> dict:
    outputs, X = _outputs(seed=seed)
    stream = shifted_stream(outputs, X, shift, 8000, 16000, np.random.default_rng(seed), strength)
    return replay(outputs, stream, CONFIG, shift=shift, seed=seed).summary()


@pytest.mark.parametrize("shift", ["covariate", "prior"])
def test_a_shift_in_what_the_model_sees_is_detected_and_the_estimate_follows(shift: str) -> None:
    runs = [_run(shift, seed) for seed in range(3)]
    for s in runs:
        assert s["delay"] is not None and 0 < s["delay"] <= 4000, s
        assert s["mae_before"] < 0.03 and s["mae_after"] < 0.04, s  # window noise: ~0.012
    if shift == "covariate":  # the tilt is toward unsure rows: accuracy drops and the estimate follows
        assert max(s["realized_after"] - s["realized_before"] for s in runs) < -0.05


def test_concept_drift_is_invisible_to_the_estimate_and_detectors_but_leaves_the_band() -> None:
    s = _run("concept", 0)
    assert s["realized_after"] < s["realized_before"] - 0.2
    assert s["mae_after"] > 0.2 and s["mae_before"] < 0.03
    assert s["outside_band_after"] == 1.0 and s["outside_band_before"] <= 0.25
    assert s["delay"] is None  # the outputs did not change: only labels can see it


def test_false_alarms_count_only_in_distribution_samples_and_pool_over_seeds() -> None:
    outputs, X = _outputs()
    stream = shifted_stream(outputs, X, "prior", 8000, 8000, np.random.default_rng(1))
    assert len(stream.rows) == 8000  # no shifted part at all
    report = replay(outputs, stream, CONFIG, shift="prior", seed=1)
    report.alarms = [(4000, "confidence"), (8000, "margin")]  # two in-distribution alarms
    s = report.summary()
    assert s["false_alarms"] == 2 and s["in_distribution_samples"] == 5000
    assert s["false_alarms_per_million"] == pytest.approx(400.0) and s["configured_per_million"] == 10.0
    agg = aggregate([s, {**s, "false_alarms": 0}])
    assert agg["false_alarms_per_million"] == pytest.approx(200.0) and agg["detected"] == 0


def test_an_unknown_shift_is_refused() -> None:
    outputs, X = _outputs()
    with pytest.raises(ValueError, match="covariate, prior, concept"):
        shifted_stream(outputs, X, "label", 10, 20, np.random.default_rng(0))


def test_a_shift_inside_the_reference_is_refused_with_the_fix(tmp_path: Path) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["simulate", "--data", "sklearn:iris", "--shift", "covariate", "--shift-at", "100",
                     "--report-dir", str(tmp_path / "r")])
    assert code == 2
    assert "--drift-reference-samples" in err.getvalue()


def test_the_cli_writes_the_report_and_prints_the_table(tmp_path: Path) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["simulate", "--data", "sklearn:iris", "--shift", "concept", "--shift-at", "1200",
                     "--stream-length", "2400", "--seeds", "1", "--monitor-window", "400",
                     "--drift-reference-samples", "400", "--drift-ert-samples", "10000",
                     "--report-dir", str(tmp_path / "r")])
    assert code == 0
    report = json.loads((tmp_path / "r" / "monitoring.json").read_text())
    run = report["runs"][0]
    assert run["summary"]["shift"] == "concept" and len(run["windows"]) == 6
    assert [w["phase"] for w in run["windows"]] == ["before"] * 3 + ["after"] * 3
    assert report["aggregate"]["mae_after"] > report["aggregate"]["mae_before"]
    assert "| concept |" in out.getvalue()


def test_review_labels_settle_their_samples_only_once_they_come_back() -> None:
    """Every sample reviewed: labels at once make every window's estimate its realized accuracy
    (a zero-width band); labels a window late settle nothing, so the estimate is the label-free one."""
    outputs, X = _outputs(seed=1)
    stream = shifted_stream(outputs, X, "covariate", 8000, 12_000, np.random.default_rng(1))
    everything = np.ones(len(stream.rows), dtype=bool)
    at_once = replay(outputs, stream, CONFIG, shift="covariate", seed=1, reviewed=everything)
    late = replay(outputs, stream, CONFIG, shift="covariate", seed=1, reviewed=everything, label_delay=CONFIG.window)
    free = replay(outputs, stream, CONFIG, shift="covariate", seed=1)
    assert all(w.estimate == pytest.approx(w.realized) and w.lower == w.upper for w in at_once.windows)
    assert [w.estimate for w in late.windows] == pytest.approx([w.estimate for w in free.windows])
