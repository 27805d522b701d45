"""``triage train``: the first model version from labelled data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from triage.cli import subcommand
from triage.data import load_dataset
from triage.errors import ConfigError
from triage.registry import Registry
from triage.settings import Settings
from triage.training import class_counts, evaluate, fit_bundle_routing, manifest_for, register, train_model


def registry_arg(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--registry", dest="registry", required=required, default=argparse.SUPPRESS,
                   metavar="DIR", help="model registry directory [env TRIAGE_REGISTRY]")


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path,
                   help="labelled data: npz with X and y, CSV with a y/label column, or sklearn:digits")
    p.add_argument("--if-empty", action="store_true",
                   help="do nothing (exit 0) when the registry already has a current model (for init jobs)")
    p.add_argument("--unlabelled", type=Path,
                   help="optional unlabelled data from the same distribution (npz X or CSV), kept in the registry "
                        "and used to fit the outlier detector")
    registry_arg(p)


def train_initial(X: np.ndarray, y: np.ndarray, registry: Registry, settings: Settings,
                  progress: Callable[[str], None] = print,
                  holdout: Optional[tuple[np.ndarray, np.ndarray]] = None,
                  reference: Optional[np.ndarray] = None) -> dict[str, Any]:
    """Split a fixed holdout (or take the given one), train, calibrate, evaluate, register
    as v1 and make it current."""
    from sklearn.model_selection import train_test_split

    y = np.asarray(y).astype(str)
    if holdout is not None:
        X_base, y_base = X, y
        X_hold, y_hold = holdout[0], np.asarray(holdout[1]).astype(str)
    else:
        counts = np.unique(y, return_counts=True)[1]
        stratify = y if counts.min() >= 2 else None
        X_base, X_hold, y_base, y_hold = train_test_split(
            X, y, test_size=settings.retrain.holdout_fraction, random_state=settings.policy.seed, stratify=stratify)
    registry.data_dir.mkdir(parents=True, exist_ok=True)
    if registry.current() is not None:
        raise ConfigError(f"registry {registry.root} already has a current model ({registry.current()}); "
                          "use `triage retrain` to improve it, or a new --registry directory")
    np.savez_compressed(registry.data_dir / "base.npz", X=X_base, y=y_base)
    np.savez_compressed(registry.data_dir / "holdout.npz", X=X_hold, y=y_hold)
    if reference is not None:
        np.savez_compressed(registry.data_dir / "reference.npz", X=reference)
    progress(f"training {settings.retrain.model_family} on {len(X_base)} samples, holding out {len(X_hold)}")
    trained = train_model(X_base, y_base, family=settings.retrain.model_family, seed=settings.policy.seed,
                          outlier_quantile=settings.serving.outlier_quantile, reference=reference)
    from triage.calibration import apply_temperature

    probs = apply_temperature(trained.estimator.predict_proba(X_hold.astype(np.float32)), trained.temperature)
    metrics = evaluate(probs, trained.classes, y_hold)
    data = {"base": "data/base.npz", "base_rows": int(len(X_base)), "holdout": "data/holdout.npz",
            "labels": "data/labels.jsonl", "labels_upto": 0, "labels_trained": 0, "labels_eval": 0,
            "class_counts": class_counts(y_base), "label_offsets": {}}
    manifest = manifest_for(trained, feature_count=X.shape[1], data=data, metrics=metrics, parent=None,
                            family=settings.retrain.model_family, routing=fit_bundle_routing(trained, X_hold, y_hold, settings))
    version = register(registry, trained, manifest)
    registry.promote(version)
    progress(f"registered {version}: holdout accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
             f"ECE {trained.calibration['ece_before']:.4f} -> {trained.calibration['ece_after']:.4f} "
             f"(temperature {trained.temperature:.3f}); CURRENT = {version}")
    return registry.manifest(version)


@subcommand("train", "Train the first model from labelled data and register it as current.", ("retrain",), _args)
def run(settings: Settings, args: argparse.Namespace) -> int:
    assert settings.serving.registry is not None
    if args.if_empty and Registry(settings.serving.registry).current() is not None:
        print(f"registry {settings.serving.registry} already serves {Registry(settings.serving.registry).current()}; nothing to do",
              file=sys.stderr)
        return 0
    X, y = load_dataset(args.data)
    if y is None:
        raise ConfigError(f"{args.data} has no labels: an npz needs `y`, a CSV a y/label/target column")
    reference = load_dataset(args.unlabelled)[0] if args.unlabelled else None
    if reference is not None and reference.shape[1] != X.shape[1]:
        raise ConfigError(f"--unlabelled has {reference.shape[1]} features; --data has {X.shape[1]}")
    train_initial(X, y, Registry(settings.serving.registry), settings, progress=lambda m: print(m, file=sys.stderr, flush=True),
                  reference=reference)
    return 0
