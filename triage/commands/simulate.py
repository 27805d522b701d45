"""``triage simulate``: how many labels would the loop save on my data? Replays a labelled
dataset through the service's own code, every strategy against random, over seeds."""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
import time
from pathlib import Path
from typing import Any

from triage.commands.base import subcommand
from triage.errors import ConfigError
from triage.extras import require_extra
from triage.settings import Settings


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {value}")
    return value


def _growth(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True,
                   help="labelled data: npz with X and y, CSV with a y/label/target column, or sklearn:digits "
                        "(also sklearn:wine, sklearn:iris, sklearn:breast_cancer)")
    p.add_argument("--strategies", default="all",
                   help="comma-separated strategies to compare (random is always added) [default: all]")
    p.add_argument("--seeds", type=_positive, default=5, help="repetitions with different splits and stream orders")
    p.add_argument("--initial-labels", type=_positive, default=20, help="static bootstrap size (labels before v1)")
    p.add_argument("--round-size", type=_positive, default=100, help="samples streamed between retrains")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--labels-per-round", type=_positive, default=None,
                        help="labels the annotator gives per round, in priority order [default: 25]")
    budget.add_argument("--review-rate", dest="sim_review_rate", type=_rate, default=None,
                        help="instead: the policy's review share, every review request labelled")
    p.add_argument("--budget", type=_positive, default=None,
                   help="total labels per run, initial included [default: half the pool]; random may "
                        "spend the whole pool, so that both targets are reached. Every strategy stops once "
                        "its mean curve has held 98%% of full-label accuracy for two more rounds")
    p.add_argument("--retrain-growth", type=_growth, default=None,
                   help="retrain once the new labels reach this share of those already spent (whole rounds, at "
                        "least one); 0 retrains after every round. Random is given the same counts "
                        "[default: 0.1]")
    p.add_argument("--test-fraction", type=_rate, default=0.25, help="share of the data never streamed, for accuracy")
    p.add_argument("--report-dir", type=Path, help="where summary.json, config.json and learning_curves.png go "
                   "[default: a new simulate-report-<time> folder]")
    p.add_argument("--jobs", type=_positive, default=os.cpu_count() or 1, help="parallel processes [default: all cores]")
    p.add_argument("--shift", choices=("covariate", "prior", "concept"), default=None,
                   help="instead of the learning curves: replay the held-out rows through the monitor's core "
                        "with this shift (docs/guide/monitoring.md) and report estimate error, detection delay "
                        "and false alarms")
    p.add_argument("--shift-at", type=_positive, default=20_000,
                   help="with --shift: samples streamed before the shift (the drift reference included)")
    p.add_argument("--stream-length", type=_positive, default=None,
                   help="with --shift: samples streamed in all [default: twice --shift-at]")
    p.add_argument("--annotators", type=_positive, default=None,
                   help="instead of the strategy comparison: this many simulated annotators with noise, and the "
                        "label-quality arms (latest_wins, one arm per quality step, shipped) on the same seeds and "
                        "budget of human actions (docs/guide/label-quality.md)")
    p.add_argument("--annotator-noise", default=None,
                   help="with --annotators: each annotator's chance of a wrong label, e.g. 0.1,0.2,0.4 (one for all)")
    p.add_argument("--annotator-confusion", type=Path, default=None,
                   help="with --annotators: instead of noise, a JSON file {\"classes\": [...], \"matrices\": [one "
                        "row-stochastic matrix per annotator, rows true class]}")
    p.add_argument("--quality-arms", default="all",
                   help="with --annotators: comma-separated arms besides latest_wins and shipped [default: all]")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar on stderr (it is shown only on a terminal anyway)")


@subcommand("simulate", "Replay a labelled dataset through the loop (bootstrap, scoring, policy, label budget, "
            "retrain, promotion gate) and compare every strategy with random over seeds; no broker.",
            ("policy", "retrain", "quality"), _args, fields=("outlier_quantile", "monitor_window", "drift_ert_samples",
                                         "drift_reference_samples", "drift_k", "estimate_level"))
def run(settings: Settings, args: argparse.Namespace) -> int:
    from triage.simulation.datasets import load_labelled
    from triage.simulation.runner import simulate
    from triage.simulation.strategies import parse_strategies

    report_dir = args.report_dir or Path(f"simulate-report-{time.strftime('%Y%m%d-%H%M%S')}")
    if report_dir.exists() and any(report_dir.iterdir()):
        raise ConfigError(f"--report-dir {report_dir} is not empty; pick a new folder")
    X, y = load_labelled(args.data)
    if args.shift is not None:
        return _shifted(settings, args, X, y, report_dir)
    if args.annotators is not None:
        return _label_quality(settings, args, X, y, report_dir)
    strategies = parse_strategies(args.strategies)
    cfg = _config(args, len(X) - int(round(len(X) * args.test_fraction)))
    simulate(str(args.data), X, y, strategies, args.seeds, cfg, settings, jobs=args.jobs,
             test_fraction=args.test_fraction, report_dir=report_dir, show_progress=False if args.no_progress else None)
    return 0


def _config(args: argparse.Namespace, pool: int) -> Any:
    from triage.simulation.replay import ReplayConfig

    if args.initial_labels >= pool:
        raise ConfigError(f"--initial-labels {args.initial_labels} leaves nothing to stream: the pool has {pool} rows")
    per_round = None if args.sim_review_rate is not None else (args.labels_per_round or 25)
    if per_round is not None and per_round > args.round_size:
        raise ConfigError(f"--labels-per-round {per_round} is more than --round-size {args.round_size}")
    cfg = ReplayConfig(initial_labels=args.initial_labels, round_size=args.round_size, labels_per_round=per_round,
                       review_rate=args.sim_review_rate, budget=args.budget)
    return replace(cfg, retrain_growth=args.retrain_growth) if args.retrain_growth is not None else cfg


def _label_quality(settings: Settings, args: argparse.Namespace, X: Any, y: Any, report_dir: Path) -> int:
    import numpy as np

    from triage.simulation.annotators import AnnotatorPanel, load_confusion, parse_noise
    from triage.simulation.quality import ARMS, SHIPPED, arm_from_settings, parse_arms
    from triage.simulation.quality_report import simulate_quality

    if (args.annotator_noise is None) == (args.annotator_confusion is None):
        raise ConfigError("--annotators needs --annotator-noise or --annotator-confusion (one of them)")
    require_extra("quality", "triage simulate --annotators")
    classes = tuple(str(c) for c in np.unique(y))
    if args.annotator_noise is not None:
        panel = AnnotatorPanel(classes, noise=parse_noise(args.annotator_noise, args.annotators))
    else:
        matrices = load_confusion(args.annotator_confusion, classes)
        if len(matrices) != args.annotators:
            raise ConfigError(f"--annotator-confusion has {len(matrices)} matrices for --annotators {args.annotators}")
        panel = AnnotatorPanel(classes, confusion=matrices)
    shipped = arm_from_settings(SHIPPED, settings.quality, "the quality settings as given (the shipped defaults)")
    arms = [shipped if n == SHIPPED else ARMS[n] for n in parse_arms(args.quality_arms)]
    cfg = _config(args, len(X) - int(round(len(X) * args.test_fraction)))
    simulate_quality(str(args.data), X, y, arms, panel, args.seeds, cfg, settings, jobs=args.jobs,
                     test_fraction=args.test_fraction, report_dir=report_dir)
    return 0


def _shifted(settings: Settings, args: argparse.Namespace, X: Any, y: Any, report_dir: Path) -> int:
    import json
    import tempfile

    import numpy as np

    from triage.simulation.datasets import split
    from triage.simulation.monitoring import aggregate, monitor_config, replay, score_outputs, shifted_stream, table, \
        to_json

    config = monitor_config(settings)
    if args.shift_at <= config.reference:
        raise ConfigError(f"--shift-at {args.shift_at} is within the drift reference ({config.reference} samples, "
                          "--drift-reference-samples): shift later or use a shorter reference")
    length = args.stream_length or 2 * args.shift_at
    if length <= args.shift_at:
        raise ConfigError(f"--stream-length {length} ends before --shift-at {args.shift_at}")
    runs = []
    for seed in range(args.seeds):
        parts = split(X, y, seed, args.test_fraction)
        with tempfile.TemporaryDirectory(prefix="triage-shift-") as root:
            outputs = score_outputs(parts, settings.replace(seed=seed), Path(root))
        stream = shifted_stream(outputs, parts.X_test, args.shift, args.shift_at, length, np.random.default_rng(seed))
        runs.append(to_json(replay(outputs, stream, config, shift=args.shift, seed=seed,
                                   audit_rate=settings.policy.audit_rate)))
    agg = aggregate([r["summary"] for r in runs])
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "monitoring.json").write_text(json.dumps({"aggregate": agg, "runs": runs}, indent=1))
    print(table(args.shift, agg))
    print(f"report: {report_dir / 'monitoring.json'}")
    return 0
