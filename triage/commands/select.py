"""``triage select``: static active learning — choose a pool subset to label first."""

from __future__ import annotations

import argparse
from pathlib import Path

from triage.commands.base import subcommand
from triage.errors import ConfigError
from triage.lifecycle.selection import STRATEGIES  # numpy only: the choices of --strategy
from triage.settings import Settings


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path, help="the pool: npz with X (y optional) or CSV")
    p.add_argument("--budget", required=True, type=int, help="how many samples to choose")
    p.add_argument("--strategy", default="kcenter", choices=sorted(STRATEGIES))
    p.add_argument("--model", dest="select_model", type=Path,
                   help="ONNX classifier: select in its probability space (embedding) instead of raw features")
    p.add_argument("--out", type=Path, default=Path("selected.txt"), help="file of chosen row indices, one per line")
    p.add_argument("--subset-out", type=Path, help="also write the chosen rows (npz with X, y, index)")
    p.add_argument("--seed", dest="select_seed", type=int, default=0)


@subcommand("select", "Choose N samples from a pool for the initial training set (static active learning).", (), _args)
def run(settings: Settings, args: argparse.Namespace) -> int:
    import numpy as np

    from triage.lifecycle.data import load_dataset
    from triage.lifecycle.selection import coverage_radius, select
    from triage.model import OnnxClassifier

    X, y = load_dataset(args.data)
    space = X
    if args.select_model is not None:
        clf = OnnxClassifier(args.select_model, feature_count=X.shape[1])
        if clf.spec.feature_count != X.shape[1]:
            raise ConfigError(f"the model takes {clf.spec.feature_count} features; {args.data} has {X.shape[1]}")
        space = clf.predict_proba(X)
    # Stratification uses labels when the pool has them (kcenter and random ignore them).
    chosen = select(space, args.budget, args.strategy, seed=args.select_seed, y=y)
    args.out.write_text("\n".join(str(int(i)) for i in chosen) + "\n")
    if args.subset_out is not None:
        extra = {"y": y[chosen]} if y is not None else {}
        np.savez_compressed(args.subset_out, X=X[chosen], index=chosen, **extra)
    classes = f", {len(np.unique(y[chosen]))} classes" if y is not None else ""
    print(f"chose {len(chosen)} of {len(X)} with {args.strategy} (coverage radius "
          f"{coverage_radius(space, chosen):.2f}{classes}) -> {args.out}"
          + (f", {args.subset_out}" if args.subset_out else ""))
    return 0
