"""``triage train``: the first model version from labelled data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from triage.commands.base import registry_arg, subcommand
from triage.errors import ConfigError
from triage.settings import Settings


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path,
                   help="labelled data: npz with X and y, CSV with a y/label column, or sklearn:digits")
    p.add_argument("--if-empty", action="store_true",
                   help="do nothing (exit 0) when the registry already has a current model (for init jobs)")
    p.add_argument("--unlabelled", type=Path,
                   help="optional unlabelled data from the same distribution (npz X or CSV), kept in the registry "
                        "and used to fit the outlier detector")
    registry_arg(p)


@subcommand("train", "Train the first model from labelled data and register it as current.", ("retrain",), _args)
def run(settings: Settings, args: argparse.Namespace) -> int:
    from triage.lifecycle.bundles import train_initial
    from triage.lifecycle.data import load_dataset
    from triage.lifecycle.registry import registry_from

    registry = registry_from(settings.serving)
    if args.if_empty and (current := registry.current()) is not None:
        print(f"registry {registry.location} already serves {current}; nothing to do", file=sys.stderr)
        return 0
    X, y = load_dataset(args.data)
    if y is None:
        raise ConfigError(f"{args.data} has no labels: an npz needs `y`, a CSV a y/label/target column")
    reference = load_dataset(args.unlabelled)[0] if args.unlabelled else None
    if reference is not None and reference.shape[1] != X.shape[1]:
        raise ConfigError(f"--unlabelled has {reference.shape[1]} features; --data has {X.shape[1]}")
    train_initial(X, y, registry, retrain=settings.retrain, policy=settings.policy,
                  outlier_quantile=settings.serving.outlier_quantile,
                  progress=lambda m: print(m, file=sys.stderr, flush=True), reference=reference)
    return 0
