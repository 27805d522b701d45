"""Versions that enter a registry from outside the retrain loop.

``train_initial``: the first version, trained on labelled data (``triage train``). The data
is split into base rows (the model, its family choice and its training temperature see only
these) and a holdout that none of that sees. By default (``--certification strict``) the
holdout alone calibrates and certifies: ``fit.routing_split`` gives the calibrator its share and
the risk threshold the rest, so the served model, its calibrator and every choice made for it
never saw the rows that certify it, and Clopper-Pearson holds as stated (docs/guide/risk.md).
``--certification cross-fit`` also certifies on the base rows scored out of fold by K fold
models of the chosen family: more rows, but the fold models are not the served model, so it
is an approximation (its violation rate is measured in docs/guide/risk.md).
``import_model``: an ONNX classifier trained elsewhere (``triage models import``).
Plain functions over arrays and a Registry: no Kafka, no argparse; messages go to ``progress``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from triage.errors import ConfigError, TriageError
from triage.extras import require_extra
from triage.model import model_bytes
from triage.lifecycle.preparation import CrossFitted, ModelFlags, prepare_bundle
from triage.lifecycle.registry import Registry
from triage.lifecycle.loading import serving_model_from_registry
from triage.settings import PolicySettings, RetrainSettings, ServingSettings
from triage.lifecycle.training import TrainedModel, class_counts, cross_fit, train_model

log = logging.getLogger("triage.train")
# Fewer base rows than this add next to nothing to the certification: skip the fold fits.
MIN_CROSS_FIT_ROWS = 50


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
    same distribution, used for the outlier detector) are saved as the registry's ``data/``:
    every later retrain trains on base + labels and is judged on this same holdout.
    Raises ConfigError when the registry already has a CURRENT version.
    """
    require_extra("train", "training a model")
    from sklearn.model_selection import train_test_split

    if retrain.certification == "cross-fit" and retrain.cross_fit_folds == 1:
        raise ConfigError("cross_fit_folds 1: use 0 (off) or at least 2 folds")
    y = np.asarray(y).astype(str)
    if holdout is not None:
        X_base, y_base = X, y
        X_hold, y_hold = holdout[0], np.asarray(holdout[1]).astype(str)
    else:
        counts = np.unique(y, return_counts=True)[1]
        # Stratified only when every class has two rows and the holdout can hold one of each.
        fits = counts.min() >= 2 and int(np.ceil(len(y) * retrain.holdout_fraction)) >= len(counts)
        stratify = y if fits else None
        X_base, X_hold, y_base, y_hold = train_test_split(
            X, y, test_size=retrain.holdout_fraction, random_state=policy.seed, stratify=stratify)
    if registry.current() is not None:
        raise ConfigError(f"registry {registry.location} already has a current model ({registry.current()}); "
                          "use `triage retrain` to improve it, or a new --registry directory")
    registry.save_data("base.npz", X=X_base, y=y_base)
    registry.save_data("holdout.npz", X=X_hold, y=y_hold)
    if reference is not None:
        registry.save_data("reference.npz", X=reference)
    progress(f"training {retrain.model_family} on {len(X_base)} samples, holding out {len(X_hold)}")
    trained = train_model(X_base, y_base, family=retrain.model_family, seed=policy.seed)
    if trained.selection:
        scores = ", ".join(f"{k} {v:.4f}" for k, v in trained.selection["scores"].items())
        progress(f"auto chose {trained.family} (validation log loss: {scores})")
    cross_fitted = cross_fitted_base(X_base, y_base, trained, retrain, policy.seed, progress)
    inliers = X_base if reference is None or not len(reference) else np.vstack([X_base, reference])
    bundle = prepare_bundle(trained.onnx_bytes, ModelFlags(), policy, source=f"{trained.family_label} (trained)",
                            outlier_quantile=outlier_quantile, inliers=inliers, labelled=(X_hold, y_hold),
                            calibration=trained.calibration, cross_fitted=cross_fitted)
    data = {"base": "data/base.npz", "base_rows": int(len(X_base)), "holdout": "data/holdout.npz",
            "labels": "data/labels.jsonl", "labels_upto": 0, "labels_trained": 0, "labels_eval": 0,
            "class_counts": class_counts(y_base), "label_offsets": {}}
    metrics = bundle.manifest["metrics"]
    extra = {"family_selection": trained.selection} if trained.selection else {}
    version = registry.add_bundle(bundle.onnx_bytes, {**bundle.manifest, "data": data, "parent": None,
                                                      "family": trained.family_label, **extra}, bundle.canary)
    registry.promote(version)
    progress(f"registered {version}: holdout accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
             f"ECE {trained.calibration['ece_before']:.4f} -> {trained.calibration['ece_after']:.4f} "
             f"(temperature {trained.temperature:.3f}); CURRENT = {version}")
    return registry.manifest(version)


def cross_fitted_base(X: np.ndarray, y: np.ndarray, trained: TrainedModel, retrain: RetrainSettings, seed: int,
                      progress: Callable[[str], None],
                      also: Optional[tuple[np.ndarray, np.ndarray]] = None) -> Optional[CrossFitted]:
    """Out-of-fold scores of the base rows for certification under ``--certification
    cross-fit``; None when strict (the default) or when there are too few rows. ``also``: rows
    every fold model trains on, never scored (a retrain's human labels)."""
    folds = retrain.cross_fit_folds
    if retrain.certification != "cross-fit" or folds == 0:
        return None
    if len(X) < max(MIN_CROSS_FIT_ROWS, folds):
        progress(f"{len(X)} base rows: too few to gain from cross-fitting; certifying on the holdout alone")
        return None
    progress(f"cross-fitting {folds} {trained.family} fold models to certify on all {len(X)} base rows too "
             "(an approximation: --certification strict certifies on held-out rows only)")
    probs = cross_fit(X, y, family=trained.family, classes=trained.classes, folds=folds, seed=seed, also=also)
    multiplicity = len(trained.selection["candidates"]) if trained.selection else 1
    return CrossFitted(X, y, probs, folds, trained.family, multiplicity)


def import_model(
    registry: Registry,
    model: Path,
    *,
    serving: ServingSettings,
    policy: PolicySettings,
    reference: np.ndarray,
    labels: Optional[np.ndarray] = None,
) -> str:
    """Register the ONNX classifier at ``model`` as a candidate; returns its version.

    The same preparation as ``triage serve --model``: the model flags in ``serving``, the
    outlier detector on ``reference`` (rows of the model's training distribution, also the
    canary), calibration, metrics and routing when ``labels`` (one per row) are given.
    A model that cannot be served raises before anything is written. The version is then
    loaded back from the registry as a scorer will load it; if that fails it is marked
    rejected and the error raised. Not promoted here.
    """
    bundle = prepare_bundle(model_bytes(Path(model)), ModelFlags.from_serving(serving), policy, source=str(model),
                            outlier_quantile=serving.outlier_quantile, inliers=reference,
                            labelled=(reference, labels) if labels is not None else None)
    data = {"imported_from": str(model), "reference_rows": int(len(reference)),
            "labelled_rows": int(len(labels)) if labels is not None else 0}
    version = registry.add_bundle(bundle.onnx_bytes, {**bundle.manifest, "data": data, "parent": registry.current(),
                                                      "family": "imported"}, bundle.canary)
    try:
        serving_model_from_registry(registry, version, serving)
    except TriageError as exc:
        registry.set_status(version, "rejected", f"does not load from the registry: {exc.message}")
        raise
    return version
