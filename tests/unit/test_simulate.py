"""``triage simulate``: the summary's arithmetic and contract, and a whole run through the CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from triage.cli import main
from triage.errors import ConfigError
from triage.simulation.replay import ReplayConfig, RunResult, planned_steps, step_labels
from triage.simulation.strategies import RANDOM, STRATEGIES, parse_strategies
from triage.simulation.summary import labels_to, mean_curve, on_grid, ratio_interval, summarize, table


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
    summary = summarize("x.npz", [0.9, 0.91], runs, 2, {"margin": RANDOM})
    assert list(summary) == ["dataset", "full_label_accuracy", "seeds", "strategies"]
    assert summary["full_label_accuracy"] == pytest.approx(0.905)
    margin = summary["strategies"]["margin"]
    assert list(margin) == ["curve", "labels_to_target", "labels_to_target_per_seed", "random", "ratio_to_random"]
    assert margin["labels_to_target"] == {"0.95": 40, "0.98": 60}  # targets 0.8598 and 0.8869
    assert margin["random"] == RANDOM
    random = summary["strategies"][RANDOM]
    assert random["labels_to_target"] == {"0.95": 100, "0.98": 100}
    assert random["labels_to_target_per_seed"]["0.98"] == [100, 100]
    assert random["paired_with"] == ["margin"]
    assert margin["ratio_to_random"]["0.95"]["ratio"] == pytest.approx(0.4)
    # Both seeds give the same ratio, so every bootstrap draw does too.
    assert margin["ratio_to_random"]["0.98"]["interval"] == pytest.approx([0.6, 0.6])
    assert all(len(point) == 3 for point in margin["curve"])
    text = table(summary)
    assert "0.40x (0.40-0.40)" in text and "0.60x" in text and "seeds 100-100" in text


def test_the_ratio_interval_is_a_paired_bootstrap_over_seeds() -> None:
    """Seed 0: the strategy needs 40 labels where random needs 100 (0.4x); seed 1: 80 vs 100
    (0.8x). Draws of one seed twice give those ratios; the interval must span them."""
    mine = [RunResult("m", 0, [(20, 0.5), (40, 0.95), (100, 0.95)]), RunResult("m", 1, [(20, 0.5), (80, 0.95), (100, 0.95)])]
    base = [RunResult(RANDOM, s, [(20, 0.5), (100, 0.95)]) for s in range(2)]
    found = ratio_interval(mine, base, [1.0, 1.0], 0.9, resamples=400)
    assert found["interval"] == pytest.approx([0.4, 0.8])
    assert found["draws_missing_a_target"] == 0
    never = [RunResult(RANDOM, s, [(20, 0.5), (100, 0.6)]) for s in range(2)]
    missed = ratio_interval(mine, never, [1.0, 1.0], 0.9, resamples=50)
    assert missed["interval"] is None and missed["draws_missing_a_target"] == 50


def test_random_copies_the_counts_up_to_the_last_short_step() -> None:
    run = RunResult("margin", 0, [(20, 0.5), (45, 0.6), (62, 0.7), (87, 0.8)], full=[True, False, True])
    assert run.counts == [25, 17, 25]
    assert run.schedule_key() == (25, 17)  # after the short step random's nominal counts are the same
    assert RunResult("margin", 0, [(20, 0.5), (45, 0.6)], full=[True]).schedule_key() == ()


def test_steps_grow_with_the_labels_spent() -> None:
    cfg = ReplayConfig(labels_per_round=25, round_size=100, retrain_growth=0.1)
    assert [step_labels(cfg, n) for n in (20, 250, 251, 1000)] == [25, 25, 50, 100]
    assert step_labels(ReplayConfig(retrain_growth=0.0), 5000) == 25
    rate = ReplayConfig(labels_per_round=None, review_rate=0.05, round_size=100, retrain_growth=0.2)
    assert step_labels(rate, 100) == 20  # four rounds of five
    assert planned_steps(ReplayConfig(initial_labels=20, retrain_growth=0.0), 1000, 120) == 4
    assert planned_steps(cfg, 3000, 1500) < planned_steps(ReplayConfig(retrain_growth=0.0), 3000, 1500) / 2


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
    twin = summary["strategies"]["margin-diverse"]["random"]
    assert set(summary["strategies"]) == {"margin-diverse", twin} and twin.startswith(RANDOM)
    assert summary["seeds"] == 2
    random_curve = summary["strategies"][twin]["curve"]
    assert random_curve[-1][0] <= 300  # at most the whole pool (400 rows, 25% test)
    assert summary["strategies"]["margin-diverse"]["curve"][-1][0] <= 80  # --budget
    reached = summary["strategies"][twin]["labels_to_target"]["0.98"]
    assert reached is not None and reached <= random_curve[-1][0]
    assert (out / "learning_curves.png").stat().st_size > 10_000
    config = json.loads((out / "config.json").read_text())
    assert config["labels_per_round"] == 10 and config["round_size"] == 40
    assert sum(config["retrain_outcomes"][twin].values()) > 0
    assert_paired(config)
    assert len(config["full_label_accuracy_per_seed"]) == 2
    assert summary["full_label_accuracy"] == pytest.approx(sum(config["full_label_accuracy_per_seed"]) / 2)
    assert "x random" in printed and "margin-diverse" in printed


def assert_paired(config: dict[str, Any]) -> None:
    """Every strategy's random twin labelled exactly as many samples at every step (retrain)."""
    assert config["compared_with"]
    for name, twin in config["compared_with"].items():
        for counts, copied in zip(config["labels_per_step"][name], config["labels_per_step"][twin], strict=True):
            assert counts and copied[: len(counts)] == counts, (name, twin)


def test_under_a_review_rate_random_labels_what_each_strategy_labelled(tmp_path: Path) -> None:
    """With --review-rate a strategy labels every review request, so its counts vary by step;
    random used to label the whole round instead."""
    out = tmp_path / "report"
    assert main(["simulate", "--data", "sklearn:iris", "--strategies", "margin,entropy", "--seeds", "2",
                 "--initial-labels", "6", "--round-size", "20", "--review-rate", "0.2", "--min-new-labels", "1",
                 "--retrain-growth", "0.5", "--budget", "40", "--jobs", "1", "--report-dir", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert_paired(config)
    steps = [c for name in ("margin", "entropy") for seed in config["labels_per_step"][name] for c in seed]
    assert len(set(steps)) > 1  # every review request answered: the counts vary by step
    summary = json.loads((out / "summary.json").read_text())
    for name in ("margin", "entropy"):
        assert summary["strategies"][name]["random"] == config["compared_with"][name]


def test_a_busy_report_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("x")
    assert main(["simulate", "--data", "sklearn:iris", "--report-dir", str(tmp_path)]) == 2


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_shows_rate_and_eta_never_steps_back_and_ends_at_100() -> None:
    from triage.simulation.runner import ProgressBar

    out = Terminal()
    bar = ProgressBar(10, out)
    bar.advance(5, "a")
    bar.advance(-3, "a strategy stopped after more rounds than planned")
    assert bar.done == 5
    line = out.getvalue().split("\r")[-1]
    assert "5/10 rounds" in line and "/s" in line and "ETA" in line
    bar.extend(10)
    bar.advance(30, "b")
    assert bar.done == 20 and "100%" in out.getvalue().split("\r")[-1]


def test_the_progress_bar_is_silent_off_a_terminal_or_when_turned_off() -> None:
    from triage.simulation.runner import ProgressBar

    piped = io.StringIO()
    ProgressBar(10, piped).advance(10, "a")
    off = Terminal()
    ProgressBar(10, off, enabled=False).advance(10, "a")
    assert piped.getvalue() == "" and off.getvalue() == ""


def test_a_bootstrap_of_four_labels_runs(tmp_path: Path) -> None:
    """A handful of initial labels leaves 3 base rows: no cross-fit, no refusal."""
    out = tmp_path / "report"
    assert main(["simulate", "--data", "sklearn:breast_cancer", "--strategies", "margin", "--seeds", "1",
                 "--initial-labels", "4", "--round-size", "20", "--labels-per-round", "4", "--min-new-labels", "4",
                 "--budget", "16", "--jobs", "1", "--report-dir", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["strategies"]["margin"]["curve"][0][0] == 4


def test_the_stop_rule_stops_extra_rounds_after_the_mean_first_reaches_the_target() -> None:
    from triage.simulation.runner import EXTRA_ROUNDS, StopRule, trim

    a = [(20, 0.5), (45, 0.7), (70, 0.9), (95, 0.9), (120, 0.91), (145, 0.92), (170, 0.93)]
    b = [(20, 0.5), (45, 0.8), (70, 0.8), (95, 0.95), (120, 0.95)]  # done after 4 steps
    runs = [RunResult("m", 0, a, retrains=["promoted"] * 6, full=[True] * 6),
            RunResult("m", 1, b, retrains=["rejected"] * 4, full=[True] * 4)]
    assert StopRule().last_round([a, b], 0.9) == 3 + EXTRA_ROUNDS  # the mean first reaches 0.9 at 95 labels
    cut = trim(runs, 0.9)
    assert [len(r.curve) for r in cut] == [6, 5] and cut[0].curve == a[:6] and cut[1] == runs[1]
    assert cut[0].retrains == ["promoted"] * 5 and cut[0].full == [True] * 5 and cut[0].outcomes == {"promoted": 5}
    assert trim(runs, 0.99) == runs  # never reached: every step stays
    rule = StopRule()
    assert rule.last_round([a[:3], b[:3]], 0.9) is None and rule.last_round([a, b], 0.9) == 5  # checked as they grow


class LateTarget(dict):  # type: ignore[type-arg]
    """The target as a worker sees it when the full-label accuracy arrives after a few rounds."""

    def __init__(self, target: float, after: int) -> None:
        super().__init__(target=target)
        self.after = after

    def get(self, key: str, default: Any = None) -> Any:
        self.after -= 1
        return None if self.after >= 0 else super().get(key, default)


def test_a_group_that_learns_the_target_late_reports_what_it_would_have_with_it() -> None:
    """Full-label accuracy runs beside the first groups: a group may step past its stop before
    it knows the target, and ``trim`` must leave exactly the runs it would have stopped with."""
    from triage.simulation.datasets import load_labelled
    from triage.simulation.runner import TARGET, run_strategy, trim

    X, y = load_labelled("sklearn:iris")
    cfg = ReplayConfig(initial_labels=6, round_size=20, labels_per_round=4, budget=60, retrain_growth=0.0)
    flat = {"min_new_labels": 1}
    margin = STRATEGIES["margin"]
    on_time = run_strategy(margin, 2, X, y, 0.25, cfg, flat, {TARGET: 0.8})
    late = run_strategy(margin, 2, X, y, 0.25, cfg, flat, LateTarget(0.8, after=6))
    assert len(late[0].curve) > len(on_time[0].curve)  # it stepped past the stop
    assert [(r.curve, r.retrains, r.full) for r in trim(late, 0.8)] == [(r.curve, r.retrains, r.full) for r in on_time]
