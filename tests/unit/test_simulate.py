"""``triage simulate``: the summary's arithmetic and contract, and a whole run through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from triage.cli import main
from triage.errors import ConfigError
from triage.simulation.replay import RunResult
from triage.simulation.strategies import RANDOM, STRATEGIES, parse_strategies
from triage.simulation.summary import labels_to, mean_curve, on_grid, summarize, table


def test_on_grid_is_the_model_served_after_spending_that_many_labels() -> None:
    curve = [(20, 0.5), (45, 0.7), (70, 0.8)]
    assert on_grid(curve, np.array([20, 44, 45, 69, 70, 90])).tolist() == [0.5, 0.5, 0.7, 0.7, 0.8, 0.8]


def test_mean_curve_stops_where_the_shortest_seed_stops() -> None:
    runs = [RunResult("m", 0, [(20, 0.5), (45, 0.7), (70, 0.9)]), RunResult("m", 1, [(20, 0.6), (44, 0.8)])]
    curve = mean_curve(runs)
    assert [c[0] for c in curve] == [20, 44]
    assert curve[1][1] == pytest.approx((0.5 + 0.8) / 2)  # seed 0 still serves its 20-label model at 44
    assert curve[1][2] == pytest.approx(0.15)


def test_labels_to_target_is_the_first_count_where_the_mean_reaches_it() -> None:
    curve = [[20, 0.5, 0.0], [45, 0.93, 0.0], [70, 0.97, 0.0]]
    assert labels_to(curve, 0.93) == 45
    assert labels_to(curve, 0.96) == 70
    assert labels_to(curve, 0.99) is None


def test_summary_has_exactly_the_documented_shape() -> None:
    runs = [RunResult(RANDOM, s, [(20, 0.5), (60, 0.8), (100, 0.9 + s / 100)]) for s in range(2)]
    runs += [RunResult("margin", s, [(20, 0.5), (40, 0.88), (60, 0.9)]) for s in range(2)]
    summary = summarize("x.npz", 0.905, runs, 2)
    assert list(summary) == ["dataset", "full_label_accuracy", "seeds", "strategies"]
    assert summary["full_label_accuracy"] == pytest.approx(0.905)
    margin = summary["strategies"]["margin"]
    assert list(margin) == ["curve", "labels_to_target"]
    assert margin["labels_to_target"] == {"0.95": 40, "0.98": 60}  # targets 0.8598 and 0.8869
    assert summary["strategies"][RANDOM]["labels_to_target"] == {"0.95": 100, "0.98": 100}
    assert all(len(point) == 3 for point in margin["curve"])
    text = table(summary)
    assert "0.40x" in text and "0.60x" in text


def test_strategies_parse_and_random_is_always_compared() -> None:
    assert [s.name for s in parse_strategies("margin")] == ["margin", RANDOM]
    assert len(parse_strategies("all")) == len(STRATEGIES)
    with pytest.raises(ConfigError, match="unknown nope"):
        parse_strategies("margin,nope")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=400, n_features=8, n_informative=5, n_classes=3, random_state=0)
    data = tmp_path_factory.mktemp("sim") / "data.npz"
    np.savez(data, X=X, y=np.array(["a", "b", "c"])[y])
    out = tmp_path_factory.mktemp("sim") / "report"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["simulate", "--data", str(data), "--strategies", "margin-diverse", "--seeds", "2",
                     "--initial-labels", "12", "--round-size", "40", "--labels-per-round", "10",
                     "--budget", "80", "--jobs", "1", "--report-dir", str(out), "--min-new-labels", "5"])
    assert code == 0
    return out, buf.getvalue()


def test_a_run_writes_the_summary_the_plot_and_prints_the_table(report: tuple[Path, str]) -> None:
    out, printed = report
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["strategies"]) == {"margin-diverse", RANDOM}
    assert summary["seeds"] == 2
    random_curve = summary["strategies"][RANDOM]["curve"]
    assert random_curve[-1][0] <= 300  # at most the whole pool (400 rows, 25% test)
    assert summary["strategies"]["margin-diverse"]["curve"][-1][0] <= 80  # --budget
    reached = summary["strategies"][RANDOM]["labels_to_target"]["0.98"]
    assert reached is not None and reached <= random_curve[-1][0]
    assert (out / "learning_curves.png").stat().st_size > 10_000
    config = json.loads((out / "config.json").read_text())
    assert config["labels_per_round"] == 10 and config["round_size"] == 40
    assert sum(config["retrain_outcomes"][RANDOM].values()) > 0
    assert len(config["full_label_accuracy_per_seed"]) == 2
    assert summary["full_label_accuracy"] == pytest.approx(sum(config["full_label_accuracy_per_seed"]) / 2)
    assert "x random" in printed and "margin-diverse" in printed


def test_a_busy_report_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("x")
    assert main(["simulate", "--data", "sklearn:iris", "--report-dir", str(tmp_path)]) == 2


def test_the_progress_bar_never_steps_back_and_ends_at_100() -> None:
    import io

    from triage.simulation.runner import ProgressBar

    out = io.StringIO()
    bar = ProgressBar(10, out)
    bar.advance(5, "a")
    bar.advance(-3, "a strategy stopped after more rounds than planned")
    assert bar.done == 5
    bar.advance(20, "b")
    assert bar.done == 10 and "100%" in out.getvalue().splitlines()[-1]


def test_a_bootstrap_of_four_labels_runs(tmp_path: Path) -> None:
    """A handful of initial labels leaves 3 base rows: no cross-fit, no refusal."""
    out = tmp_path / "report"
    assert main(["simulate", "--data", "sklearn:breast_cancer", "--strategies", "margin", "--seeds", "1",
                 "--initial-labels", "4", "--round-size", "20", "--labels-per-round", "4", "--min-new-labels", "4",
                 "--budget", "16", "--jobs", "1", "--report-dir", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["strategies"]["margin"]["curve"][0][0] == 4
