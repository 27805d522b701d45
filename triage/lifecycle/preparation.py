"""One path from ONNX bytes to a servable bundle, for every way a model enters triage.

``triage serve --model``, ``triage models import``, ``triage train`` and the retrain loop all
call ``prepare_bundle``: inspect the graph (the model adapter), fit the outlier detector on
inlier rows, calibrate and fit routing when labelled rows exist, and warm up on canary rows.
A model that fails any step is refused here, before anything is written or promoted, so the
same model and data route the same way whether served from a file or from a registry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from triage.scoring.calibration import apply_temperature
from triage.errors import ConfigError
from triage.extras import require_extra
from triage.model import OnnxClassifier
from triage.scoring.outlier import OutlierDetector
from triage.policies.fit import fit_routing, label_positions, log_routing, prepare_model
from triage.scoring.servable import DEFAULT_MAX_BATCH, ServingModel
from triage.settings import PolicySettings, ServingSettings
from triage.lifecycle.training import evaluate

log = logging.getLogger("triage.model")
CANARY_ROWS = 32
NO_CALIBRATION: dict[str, Any] = {"method": "none", "temperature": 1.0}


@dataclass(frozen=True)
class ModelFlags:
    """What the user told triage about a graph (the ``model`` settings group); all optional."""

    classes: Optional[tuple[str, ...]] = None
    input_name: Optional[str] = None
    output_name: Optional[str] = None
    feature_count: Optional[int] = None
    output_kind: str = "probabilities"
    threads: int = 1
    max_batch: int = DEFAULT_MAX_BATCH  # the canary runs every batch size a scorer of this many rows runs

    @classmethod
    def from_serving(cls, serving: ServingSettings) -> "ModelFlags":
        names = serving.class_names
        return cls(tuple(names) if names else None, serving.input_name, serving.output_name,
                   serving.feature_count, serving.output_kind, serving.ort_threads, serving.batch_size)


@dataclass(frozen=True)
class CrossFitted:
    """Labelled rows scored out of fold (``training.cross_fit``, ``--certification cross-fit``):
    they join the held-out rows for certifying the risk threshold only (not the calibrator, not
    the metrics). An approximation: see docs/guide/risk.md.

    ``probs``: raw probabilities in the served model's class order; ``multiplicity``: how many
    model families these rows' labels chose among (the risk tests run at delta / multiplicity).
    """

    X: np.ndarray
    y: np.ndarray
    probs: np.ndarray
    folds: int
    family: str
    multiplicity: int = 1


@dataclass(frozen=True)
class Bundle:
    """A model ready to serve or to register: bytes, manifest (model part), canary rows."""

    onnx_bytes: bytes
    manifest: dict[str, Any]
    canary: np.ndarray
    model: ServingModel = field(repr=False)


MIN_REFERENCE_ROWS = 10  # OutlierDetector.fit's floor


def _rows(X: Optional[np.ndarray], features: int, what: str) -> Optional[np.ndarray]:
    if X is None:
        return None
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != features:
        raise ConfigError(f"{what} has {X.shape[1] if X.ndim == 2 else X.shape} features; the model takes {features}")
    return X


def _canary(inliers: Optional[np.ndarray], labelled: Optional[np.ndarray], features: int, seed: int) -> np.ndarray:
    pool = inliers if inliers is not None and len(inliers) else labelled
    if pool is None or not len(pool):
        return np.zeros((8, features))
    pick = np.random.default_rng(seed).choice(len(pool), size=min(CANARY_ROWS, len(pool)), replace=False)
    return pool[np.sort(pick)]


def _known(y: np.ndarray, classes: Sequence[str], source: str) -> tuple[np.ndarray, np.ndarray]:
    """Row mask and class indices of labels the model knows; refuses labels it knows none of."""
    positions = label_positions(y, classes)
    known = positions >= 0
    if len(y) and not known.any():
        sample = sorted({str(v) for v in np.asarray(y).tolist()})[:5]
        raise ConfigError(f"none of the labels in {source} ({', '.join(sample)}...) is one of the model's "
                          f"classes ({', '.join(list(classes)[:10])}); fix the labels or the model's --classes")
    if not known.all():
        log.warning("%d of %d labelled rows in %s name classes the model does not have; they are left out",
                    int((~known).sum()), len(y), source)
    return known, positions[known]


def _fit_routing(
    raw: np.ndarray,
    y_idx: np.ndarray,
    X: np.ndarray,
    policy: PolicySettings,
    outlier: Optional[OutlierDetector],
    classes: Sequence[str],
    cross_fitted: Optional[CrossFitted],
) -> dict[str, Any]:
    """Routing on the labelled rows (the served model's own probabilities fit the calibrator,
    ``fit.routing_split``); the cross-fitted rows, when given, only certify."""
    score = (lambda rows: outlier.score(rows)) if outlier is not None else (lambda rows: None)
    if cross_fitted is None:
        routing = fit_routing(raw, y_idx, policy, X=X, outlier=score(X))
        routing["certification"] = {"mode": "strict", "rows": routing["risk"]["n"]}
        return routing
    cf_known, cf_idx = _known(np.asarray(cross_fitted.y), classes, "the cross-fitted rows")
    if cross_fitted.probs.shape[1] != len(classes):
        raise ConfigError(f"cross-fitted probabilities have {cross_fitted.probs.shape[1]} classes; "
                          f"the model has {len(classes)}")
    cf_X = np.asarray(cross_fitted.X, dtype=np.float64)[cf_known]
    routing = fit_routing(raw, y_idx, policy, X=np.vstack([X, cf_X]), outlier=score(X),
                          multiplicity=cross_fitted.multiplicity,
                          also_certify=(cross_fitted.probs[cf_known], cf_idx, score(cf_X)))
    routing["cross_fit"] = {"family": cross_fitted.family, "folds": cross_fitted.folds,
                            "out_of_fold_rows": int(len(cf_X)), "holdout_rows": int(len(X)),
                            "multiplicity": cross_fitted.multiplicity}
    routing["certification"] = {"mode": "cross-fit", "rows": routing["risk"]["n"]}
    return routing


def prepare_bundle(
    onnx_bytes: bytes,
    flags: ModelFlags,
    policy: PolicySettings,
    *,
    source: str,
    outlier_quantile: float,
    inliers: Optional[np.ndarray] = None,
    labelled: Optional[tuple[np.ndarray, np.ndarray]] = None,
    calibration: Optional[dict[str, Any]] = None,
    cross_fitted: Optional[CrossFitted] = None,
) -> Bundle:
    """Inspect, fit the outlier detector on ``inliers``, calibrate and fit routing on
    ``labelled`` rows (when given), warm up on canary rows; raises before anything is kept.

    ``calibration``: a temperature already fitted elsewhere (``triage train``); otherwise none.
    ``cross_fitted``: more labelled rows, scored out of fold, that only certify (``--certification
    cross-fit``); without them the held-out rows alone certify (strict).
    """
    data_features = next((np.asarray(a).shape[1] for a in (inliers, labelled[0] if labelled else None)
                          if a is not None and np.asarray(a).ndim == 2), None)
    classifier = OnnxClassifier(
        onnx_bytes, source=source, classes=flags.classes, input_name=flags.input_name,
        output_name=flags.output_name, feature_count=flags.feature_count, data_features=data_features,
        output_kind=flags.output_kind, threads=flags.threads,
    )
    features = classifier.spec.feature_count
    inliers = _rows(inliers, features, f"the reference data for {source}")
    X_lab = _rows(labelled[0] if labelled else None, features, f"the labelled data for {source}")
    outlier = None
    if inliers is not None and len(inliers) < MIN_REFERENCE_ROWS:
        raise ConfigError(f"{len(inliers)} reference rows for {source}: the outlier detector needs at least "
                          f"{MIN_REFERENCE_ROWS}; give more training rows or unlabelled ones (--unlabelled / --reference)")
    if inliers is not None:
        outlier = OutlierDetector.fit(inliers, quantile=outlier_quantile, seed=policy.seed)
    else:
        log.warning("no reference data for %s: outlier routing is OFF (triage_outlier_detection_enabled=0)", source)
    calibration = dict(calibration or NO_CALIBRATION)
    digest = hashlib.sha256(onnx_bytes).hexdigest()
    model = ServingModel(classifier=classifier, version=f"file-{digest[:12]}", sha256=digest, outlier=outlier,
                         temperature=float(calibration.get("temperature", 1.0)))
    canary = _canary(inliers, X_lab, features, policy.seed)
    model.warm_up(canary, max_batch=flags.max_batch)
    routing: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    if X_lab is not None and labelled is not None:
        y = np.asarray(labelled[1])
        known, y_idx = _known(y, classifier.spec.classes, f"the labelled data for {source}")
        X_lab, y = X_lab[known], y[known]
        raw = classifier.predict_proba(X_lab)
        metrics = evaluate(apply_temperature(raw, model.temperature), list(classifier.spec.classes), np.asarray(classifier.spec.classes)[y_idx])
        if policy.calibration_fraction:
            if policy.calibration in ("auto", "isotonic"):
                # These try isotonic regression (scikit-learn): without the train extra the same
                # model and rows would route differently, so refuse here, before the try below
                # turns a ConfigError into "routing not fitted".
                require_extra("train", f"fitting {policy.calibration} calibration on the labelled rows for {source} "
                                       "(or choose --calibration temperature, platt or none)")
            try:
                routing = _fit_routing(raw, y_idx, X_lab, policy, outlier, classifier.spec.classes, cross_fitted)
                log_routing(routing)
            except ConfigError as exc:  # too few labelled rows: serve with the temperature only
                routing = {"skipped": exc.message}
                log.warning("%s: routing not fitted: %s", source, exc.message)
    manifest = {
        "classes": list(classifier.spec.classes), "feature_count": features,
        "input_name": classifier.spec.input_name, "output_name": flags.output_name,
        "output_kind": classifier.spec.output_kind,
        "outlier": outlier.to_dict() if outlier is not None else None,
        "calibration": calibration, "routing": routing, "metrics": metrics,
    }
    model = prepare_model(policy, dataclasses.replace(model, manifest=manifest))
    return Bundle(onnx_bytes, manifest, canary, model)
