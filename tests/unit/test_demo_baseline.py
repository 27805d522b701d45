"""The demo's random-selection baseline: several seeds, a mean with a band, the same label
counts as the active loop, different draws per seed; its CLI option and its plot."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits

import consumers.demo as demo
from consumers.demo import DemoConfig, closing_line, draw_seeds, random_baseline, random_orders, verdict
from triage.cli import build_parser
from triage.errors import ConfigError
from triage.report import write_report

INITIAL = 30
ACTIVE = [  # what _version_rows gives for promoted versions: human labels on top of the initial ones
    {"version": "v1", "status": "previous", "human_labels": 0, "labels_used": INITIAL, "accuracy": 0.80},
    {"version": "v2", "status": "previous", "human_labels": 20, "labels_used": INITIAL + 20, "accuracy": 0.85},
    {"version": "v4", "status": "current", "human_labels": 60, "labels_used": INITIAL + 60, "accuracy": 0.90},
]


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    """Digits split like the demo: a stratified initial set, a stream, a held-out eval set."""
    X, y = load_digits(return_X_y=True)
    y = y.astype(str)
    rng = np.random.default_rng(7)
    order = rng.permutation(len(X))
    init = np.concatenate([order[y[order] == c][:3] for c in sorted(set(y))])  # 3 per class: 30
    rest = np.setdiff1d(order, init)
    return {"X_init": X[init], "y_init": y[init], "X_stream": X[rest[:300]], "y_stream": y[rest[:300]],
            "X_eval": X[rest[300:700]], "y_eval": y[rest[300:700]]}


def _run(data: dict[str, np.ndarray], seeds: list[int]) -> list[dict[str, Any]]:
    return random_baseline(ACTIVE, data["X_init"], data["y_init"], data["X_stream"], data["y_stream"],
                           data["X_eval"], data["y_eval"], family="logreg", seeds=seeds, train_seed=0)


@pytest.fixture(scope="module")
def five(data: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    return _run(data, draw_seeds(0, 5))


def test_one_row_per_active_row_with_the_same_label_counts(five: list[dict[str, Any]]) -> None:
    assert [r["labels_used"] for r in five] == [a["labels_used"] for a in ACTIVE]
    assert [r["human_labels"] for r in five] == [a["human_labels"] for a in ACTIVE]
    assert [r["version"] for r in five] == ["random-v1", "random-v2", "random-v4"]


def test_every_row_has_one_accuracy_per_seed(five: list[dict[str, Any]]) -> None:
    assert all(len(r["accuracy_per_seed"]) == 5 for r in five)


def test_accuracy_is_the_mean_of_the_seeds_and_the_band_contains_it(five: list[dict[str, Any]]) -> None:
    for r in five:
        per_seed = np.array(r["accuracy_per_seed"])
        assert r["accuracy"] == pytest.approx(per_seed.mean())
        assert r["accuracy_std"] == pytest.approx(per_seed.std(ddof=1))
        assert r["accuracy_min"] == per_seed.min() and r["accuracy_max"] == per_seed.max()
        assert r["accuracy_min"] <= r["accuracy"] <= r["accuracy_max"]
        assert 0.0 < r["accuracy"] <= 1.0


def test_no_human_labels_means_no_spread(five: list[dict[str, Any]]) -> None:
    # v1 trains on the initial labels only: every seed trains the same set, so the band is a point.
    assert five[0]["accuracy_min"] == five[0]["accuracy_max"] and five[0]["accuracy_std"] == 0.0


def test_each_seed_trains_on_a_different_random_subset(data: dict[str, np.ndarray],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Spy on the real trainer: per label count, one training set per seed, all different,
    each the initial labels plus the right number of stream rows."""
    seen: list[np.ndarray] = []
    real = demo.train_model

    def spy(X: np.ndarray, y: np.ndarray, **kw: Any) -> Any:
        seen.append(np.asarray(X).copy())
        return real(X, y, **kw)

    monkeypatch.setattr(demo, "train_model", spy)
    _run(data, draw_seeds(0, 4))
    # v1 (no human labels) is trained once and shared; v2 and v4 once per seed.
    assert [len(X) for X in seen] == [INITIAL] + [INITIAL + 20] * 4 + [INITIAL + 60] * 4
    for group in (seen[1:5], seen[5:9]):
        sets = {X[INITIAL:].tobytes() for X in group}
        assert len(sets) == 4, "two seeds drew the same subset"
        assert all(np.array_equal(X[:INITIAL], data["X_init"]) for X in group)


def test_draws_differ_across_seeds_and_are_nested_within_one() -> None:
    orders = random_orders(300, draw_seeds(0, 5))
    assert orders.shape == (5, 300)
    assert all(sorted(o) == list(range(300)) for o in orders.tolist())  # permutations of the stream
    firsts = {frozenset(o[:20]) for o in orders.tolist()}
    assert len(firsts) == 5


def test_draws_are_reproducible_and_adding_seeds_keeps_the_earlier_ones() -> None:
    assert draw_seeds(0, 3) == [1, 2, 3] and draw_seeds(10, 2) == [11, 12]
    assert np.array_equal(random_orders(50, draw_seeds(0, 5))[:2], random_orders(50, draw_seeds(0, 2)))


def test_one_seed_is_allowed_and_has_a_zero_width_band(data: dict[str, np.ndarray]) -> None:
    rows = _run(data, [1])
    assert all(len(r["accuracy_per_seed"]) == 1 and r["accuracy_std"] == 0.0 for r in rows)
    assert all(r["accuracy_min"] == r["accuracy"] == r["accuracy_max"] for r in rows)


def test_zero_seeds_is_refused(data: dict[str, np.ndarray]) -> None:
    with pytest.raises(ConfigError, match="at least one seed"):
        _run(data, [])


def test_demo_config_refuses_fewer_than_one_seed() -> None:
    assert DemoConfig().baseline_seeds == 5
    with pytest.raises(ConfigError, match="at least 1"):
        DemoConfig(baseline_seeds=0)


def _demo_parser() -> argparse.ArgumentParser:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices["demo"]
    raise AssertionError("no subcommands")


def test_cli_option_defaults_to_five_and_refuses_zero(capsys: pytest.CaptureFixture[str]) -> None:
    parser = _demo_parser()
    assert parser.parse_args([]).baseline_seeds == 5
    assert parser.parse_args(["--baseline-seeds", "2"]).baseline_seeds == 2
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["--baseline-seeds", "0"])
    assert exited.value.code == 2
    assert "--baseline-seeds: must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("accuracy,where", [(0.95, "above"), (0.92, "inside"), (0.91, "inside"), (0.90, "below")])
def test_verdict_against_the_band(accuracy: float, where: str) -> None:
    row = {"accuracy": 0.92, "accuracy_min": 0.91, "accuracy_max": 0.93, "labels_used": 90}
    assert verdict(accuracy, row) == where
    line = closing_line({"version": "v4", "accuracy": accuracy}, row, 5)
    assert f"is {where} the band" in line
    assert "0.920 (0.910-0.930 over 5 seeds)" in line


def _summary(baseline: list[dict[str, Any]], seeds: int | None) -> dict[str, Any]:
    return {"model_versions": ACTIVE + [{"version": "v3", "status": "rejected", "labels_used": 70, "accuracy": 0.84}],
            "baseline": {"seeds": seeds, "model_versions": baseline}}


def test_report_writes_summary_and_plot_with_a_band(tmp_path: Path, five: list[dict[str, Any]]) -> None:
    summary_path, plot_path = write_report(tmp_path, _summary(five, 5))
    assert summary_path.read_text().count('"accuracy_per_seed"') == 3
    assert plot_path.stat().st_size > 10_000


def test_report_still_plots_an_old_single_draw_summary(tmp_path: Path) -> None:
    old = [{"version": f"random-{a['version']}", "labels_used": a["labels_used"], "accuracy": 0.8} for a in ACTIVE]
    _, plot_path = write_report(tmp_path, _summary(old, None))
    assert plot_path.stat().st_size > 10_000
