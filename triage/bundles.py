"""Versions that enter a registry from outside the retrain loop.

``train_initial``: the first version, trained on labelled data (``triage train``).
``import_model``: an ONNX classifier trained elsewhere (``triage models import``).
Plain functions over arrays and a Registry: no Kafka, no argparse; messages go to ``progress``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from triage.calibration import apply_temperature
from triage.errors import ConfigError
from triage.model import OnnxClassifier
from triage.outlier import OutlierDetector
from triage.registry import Registry
from triage.settings import PolicySettings, RetrainSettings
from triage.training import class_counts, evaluate, fit_bundle_routing, manifest_for, register, train_model

log = logging.getLogger("triage.train")
CANARY_ROWS = 32


def _log_progress(message: str) -> None:
    log.info("%s", message)


def train_initial(
    X: np.ndarray,
    y: np.ndarray,
    registry: Registry,
    *,
    retrain: RetrainSettings,
    policy: PolicySettings,
    outlier_quantile: float,
    progress: Callable[[str], None] = _log_progress,
    holdout: Optional[tuple[np.ndarray, np.ndarray]] = None,
    reference: Optional[np.ndarray] = None,
) -> dict[str, Any]:
    """Train the first version, register it and make it CURRENT; returns its manifest.

    The holdout is split off ``X, y`` (``retrain.holdout_fraction``, stratified when every
    class has two rows) unless given. Base, holdout and ``reference`` (unlabelled rows of the
    same distribution, used for the outlier detector) are saved under ``registry.data_dir``:
    every later retrain trains on base + labels and is judged on this same holdout.
    Raises ConfigError when the registry already has a CURRENT version.
    """
    from sklearn.model_selection import train_test_split

    y = np.asarray(y).astype(str)
    if holdout is not None:
        X_base, y_base = X, y
        X_hold, y_hold = holdout[0], np.asarray(holdout[1]).astype(str)
    else:
        counts = np.unique(y, return_counts=True)[1]
        stratify = y if counts.min() >= 2 else None
        X_base, X_hold, y_base, y_hold = train_test_split(
            X, y, test_size=retrain.holdout_fraction, random_state=policy.seed, stratify=stratify)
    registry.data_dir.mkdir(parents=True, exist_ok=True)
    if registry.current() is not None:
        raise ConfigError(f"registry {registry.root} already has a current model ({registry.current()}); "
                          "use `triage retrain` to improve it, or a new --registry directory")
    np.savez_compressed(registry.data_dir / "base.npz", X=X_base, y=y_base)
    np.savez_compressed(registry.data_dir / "holdout.npz", X=X_hold, y=y_hold)
    if reference is not None:
        np.savez_compressed(registry.data_dir / "reference.npz", X=reference)
    progress(f"training {retrain.model_family} on {len(X_base)} samples, holding out {len(X_hold)}")
    trained = train_model(X_base, y_base, family=retrain.model_family, seed=policy.seed,
                          outlier_quantile=outlier_quantile, reference=reference)
    probs = apply_temperature(trained.estimator.predict_proba(X_hold.astype(np.float32)), trained.temperature)
    metrics = evaluate(probs, trained.classes, y_hold)
    data = {"base": "data/base.npz", "base_rows": int(len(X_base)), "holdout": "data/holdout.npz",
            "labels": "data/labels.jsonl", "labels_upto": 0, "labels_trained": 0, "labels_eval": 0,
            "class_counts": class_counts(y_base), "label_offsets": {}}
    manifest = manifest_for(trained, feature_count=X.shape[1], data=data, metrics=metrics, parent=None,
                            family=retrain.model_family,
                            routing=fit_bundle_routing(trained, X_hold, y_hold, policy))
    version = register(registry, trained, manifest)
    registry.promote(version)
    progress(f"registered {version}: holdout accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
             f"ECE {trained.calibration['ece_before']:.4f} -> {trained.calibration['ece_after']:.4f} "
             f"(temperature {trained.temperature:.3f}); CURRENT = {version}")
    return registry.manifest(version)


def import_model(
    registry: Registry,
    model: Path,
    reference: np.ndarray,
    labels: Optional[np.ndarray] = None,
    *,
    seed: int,
    outlier_quantile: float,
    classes: Optional[Sequence[str]] = None,
) -> str:
    """Register the ONNX classifier at ``model`` as a candidate; returns its version.

    ``reference``: rows of the model's training distribution; they fit the outlier detector
    and supply the canary rows. ``labels`` (optional, one per row) give the manifest metrics.
    ``classes`` names the outputs when the graph does not. Not promoted here.
    """
    X = np.asarray(reference, dtype=np.float64)
    clf = OnnxClassifier(model, classes=classes, feature_count=X.shape[1], threads=1)
    if X.shape[1] != clf.spec.feature_count:
        raise ConfigError(f"reference has {X.shape[1]} features; the model takes {clf.spec.feature_count}")
    metrics: dict[str, Any] = {}
    if labels is not None:
        metrics = evaluate(clf.predict_proba(X), list(clf.spec.classes), np.asarray(labels).astype(str))
    detector = OutlierDetector.fit(X, quantile=outlier_quantile, seed=seed)
    manifest = {
        "classes": list(clf.spec.classes), "feature_count": clf.spec.feature_count,
        "input_name": clf.spec.input_name, "output_name": clf.spec.output_name, "output_kind": clf.spec.output_kind,
        # An imported model brings no held-out split: no temperature and no fitted routing.
        "outlier": detector.to_dict(), "calibration": {"method": "none", "temperature": 1.0},
        "routing": {}, "data": {"imported_from": str(model), "reference_rows": int(len(X))},
        "metrics": metrics, "parent": registry.current(), "family": "imported",
    }
    canary = X[np.random.default_rng(seed).choice(len(X), size=min(CANARY_ROWS, len(X)), replace=False)]
    return registry.add_bundle(Path(model).read_bytes(), manifest, canary)
