"""Label efficiency on four datasets of three kinds: ``triage simulate`` on each, one table.

digits (images, 10 classes; every strategy, the simulator's defaults), a synthetic tabular
task (``make_classification``: 1,500 rows, 20 features, 4 classes; margin, budget up to the
whole pool), and two small real tabular sets, breast cancer (2 classes) and wine (3 classes),
where 20 labels already reach 98% of full-label accuracy, so they start from 10 labels and
label a few per round (margin). Every run goes through the service's own loop (see
``triage.simulation``). Writes ``bench/results/label_efficiency/<dataset>/`` (summary.json,
config.json, learning_curves.png) and ``bench/results/label_efficiency.md`` (the README's table).

    .venv/bin/python -m bench.label_efficiency [--seeds 5] [--jobs 2] [--only digits,wine]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from triage.settings import Settings
from triage.simulation.datasets import load_labelled
from triage.simulation.replay import ReplayConfig
from triage.simulation.runner import simulate
from triage.simulation.strategies import STRATEGIES, parse_strategies
from triage.simulation.summary import TARGETS, ratio_text

OUT = Path(__file__).resolve().parent / "results"
SYNTHETIC = {"n_samples": 1500, "n_features": 20, "n_informative": 8, "n_redundant": 4, "n_classes": 4,
             "n_clusters_per_class": 2, "class_sep": 1.0, "flip_y": 0.01, "random_state": 0}


def synthetic(path: Path) -> Path:
    from sklearn.datasets import make_classification

    X, y = make_classification(**SYNTHETIC)  # type: ignore[arg-type]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, X=X, y=y)
    return path


@dataclass(frozen=True)
class Case:
    source: str
    strategies: str
    config: ReplayConfig
    settings: dict[str, Any] = field(default_factory=dict)


def cases(out: Path) -> dict[str, Case]:
    every_row = 10**9  # the budget is capped at the pool
    return {
        "digits": Case("sklearn:digits", ",".join(STRATEGIES), ReplayConfig()),
        "synthetic": Case(str(synthetic(out / "synthetic-4class.npz")), "margin", ReplayConfig(budget=every_row)),
        "breast_cancer": Case("sklearn:breast_cancer", "margin",
                              ReplayConfig(initial_labels=10, round_size=50, labels_per_round=5), {"min_new_labels": 5}),
        "wine": Case("sklearn:wine", "margin",
                     ReplayConfig(initial_labels=10, round_size=20, labels_per_round=3), {"min_new_labels": 3}),
    }


def render(summaries: dict[str, dict[str, Any]]) -> str:
    rows = ["| dataset | strategy | labels to 95% of full | × random (95% interval; random: its seeds) "
            "| labels to 98% of full | × random (95% interval; random: its seeds) |",
            "|---|---|---|---|---|---|"]
    for name, summary in summaries.items():
        for strategy, s in summary["strategies"].items():
            cells = []
            for t in (f"{t:.2f}" for t in TARGETS):
                n = s["labels_to_target"][t]
                cells += [str(n) if n is not None else "not reached", ratio_text(summary, strategy, t).replace("x", "×")]
            rows.append(f"| {name} | {strategy} | " + " | ".join(cells) + " |")
    notes = [f"{name}: full-label accuracy {s['full_label_accuracy']:.4f}, {s['seeds']} seeds"
             for name, s in summaries.items()]
    return "\n".join(rows) + "\n\n" + "; ".join(notes) + ".\n"


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--only", help="comma-separated datasets (digits, synthetic, breast_cancer, wine)")
    p.add_argument("--strategies", help="instead of each dataset's own list")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    chosen = cases(args.out)
    if args.only:
        chosen = {k: v for k, v in chosen.items() if k in args.only.split(",")}
    summaries: dict[str, dict[str, Any]] = {}
    for name, case in chosen.items():
        X, y = load_labelled(case.source)
        report = args.out / "label_efficiency" / name
        shutil.rmtree(report, ignore_errors=True)
        sys.stdout.write(f"\n== {name} ({len(X)} rows, {X.shape[1]} features, {len(np.unique(y))} classes)\n")
        summaries[name] = simulate(name, X, y, parse_strategies(args.strategies or case.strategies), args.seeds,
                                   case.config, Settings(**case.settings), jobs=args.jobs, test_fraction=0.25,
                                   report_dir=report)
    md = render(summaries)
    (args.out / "label_efficiency.md").write_text(md)
    print(md)
    return summaries


if __name__ == "__main__":
    main()
