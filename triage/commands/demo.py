"""``triage demo``: the active-learning loop end to end on the embedded broker."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from triage.commands.base import subcommand
from triage.settings import Settings


def _at_least_one(text: str) -> int:
    """argparse type for --baseline-seeds: an integer >= 1, with a message that says so."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of random seeds (at least 1), got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (random draws behind the baseline), got {value}")
    return value


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", type=int, default=1200, help="production samples to stream (ends the demo)")
    p.add_argument("--duration", type=float, help="stop after this many seconds instead")
    p.add_argument("--rate", type=float, default=40.0, help="samples per second streamed")
    p.add_argument("--initial-labels", type=int, default=30, help="static bootstrap size")
    p.add_argument("--strategy", default="stratified-kmeans", help="static selection strategy for the bootstrap")
    p.add_argument("--labels-per-minute", type=float, default=360.0, help="simulated annotator budget")
    p.add_argument("--annotator-delay", type=float, default=0.5, help="seconds before a request is answered")
    p.add_argument("--retrain-every", type=float, default=3.0, help="seconds between retrain runs")
    p.add_argument("--report-dir", type=Path, help="where summary.json and the plot go (default: a fresh folder)")
    p.add_argument("--demo-seed", type=int, default=0)
    p.add_argument("--baseline-seeds", type=_at_least_one, default=5,
                   help="random draws for the random-selection baseline (reported as mean and min-max band; "
                        "at least 1)")


@subcommand("demo", "Run the whole loop: embedded broker, v1 from a static bootstrap, a live stream, a "
            "simulated annotator, periodic retrain and hot-swap, and a random-selection baseline.", ("policy",), _args,
            fields=("outlier_quantile",))
def run(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.demo import DemoConfig, run_demo

    report_dir = args.report_dir or Path(f"demo-report-{time.strftime('%Y%m%d-%H%M%S')}")
    if report_dir.exists() and any(report_dir.iterdir()):
        from triage.errors import ConfigError

        raise ConfigError(f"--report-dir {report_dir} is not empty; pick a new folder")
    cfg = DemoConfig(samples=args.samples, duration_s=args.duration, rate=args.rate, initial_labels=args.initial_labels,
                     strategy=args.strategy, labels_per_minute=args.labels_per_minute,
                     annotator_delay_s=args.annotator_delay, retrain_every_s=args.retrain_every,
                     seed=args.demo_seed, report_dir=report_dir, baseline_seeds=args.baseline_seeds)
    run_demo(cfg, settings)
    return 0
