"""Fitting a model version's routing parameters on held-out labels, and attaching them.

The fitted part is a plain JSON-able dict (``fit_routing``), meant for the bundle manifest's
``routing`` section; ``prepare_model`` attaches it (fitting it first when labels are given).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Optional, Sequence

import numpy as np

from triage.scoring.acquisition import uncertainty
from triage.scoring.calibration import Calibrator, TemperatureCalibrator, calibrator_from_dict, fit_calibrator
from triage.scoring.calibration import expected_calibration_error
from triage.errors import ConfigError
from triage.policies.risk import fit_risk
from triage.scoring.servable import ServingModel
from triage.settings import PolicySettings

log = logging.getLogger("triage.policy")

ROUTING_FORMAT = 1
MIN_LABELLED = 20


# (raw probabilities, class indices, outlier scores or None) of rows that only certify.
AlsoCertify = tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]


def routing_split(n: int, policy: PolicySettings) -> tuple[np.ndarray, np.ndarray]:
    """(calibration rows, certification rows) of ``n`` held-out rows: one seeded permutation,
    cut at ``calibration_fraction``. The same rows and seed give the same split every time, so
    a retrain knows which holdout rows certify and keeps its promotion gate off them."""
    order = np.random.default_rng(policy.seed).permutation(n)
    cut = int(round(n * policy.calibration_fraction))
    return order[:cut], order[cut:]


def fit_routing(
    probs: np.ndarray,
    y: np.ndarray,
    policy: PolicySettings,
    *,
    outlier: Optional[np.ndarray] = None,
    X: Optional[np.ndarray] = None,
    multiplicity: int = 1,
    also_certify: Optional[AlsoCertify] = None,
) -> dict[str, Any]:
    """Fit calibration and the risk threshold(s) on held-out rows.

    ``probs``: the served model's raw (uncalibrated) class probabilities, (N, C); ``y``: class
    indices; ``outlier``: outlier scores of the same rows (outliers are never accepted);
    ``X``: the features (their mean/std scale near-duplicate hashing). Rows are split once
    (``routing_split``): ``calibration_fraction`` fits the calibrator, the rest certifies the
    threshold and measures ECE after calibration and the accuracy, so the bound stays honest.
    ``multiplicity``: candidate models these labels chose among (``risk.fit_risk``).
    ``also_certify``: (raw probs, class indices, outlier scores or None) of more rows that
    certify but never fit the calibrator (``--certification cross-fit``'s out-of-fold rows,
    scored by other models): the calibrator is fitted on the served model's probabilities only.
    """
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    n, n_classes = probs.shape
    if n < MIN_LABELLED:
        raise ConfigError(f"{n} held-out labelled rows are too few to fit routing (need >= {MIN_LABELLED})")
    fit_rows, cert_rows = routing_split(n, policy)
    if policy.calibration == "none":
        calibrator: Calibrator = TemperatureCalibrator(1.0)
        report: dict[str, Any] = {"kind": "none"}
    else:
        kinds = ("temperature", "platt", "isotonic") if policy.calibration == "auto" else (policy.calibration,)
        calibrator, report = fit_calibrator(probs[fit_rows], y[fit_rows], kinds=kinds, seed=policy.seed)
    cal = calibrator(probs[cert_rows])
    y_cert = y[cert_rows]
    predicted = cal.argmax(axis=1)
    cert_out = None if outlier is None else np.asarray(outlier, dtype=np.float64)[cert_rows]
    cert_cal, cert_y = cal, y_cert
    if also_certify is not None:
        extra_probs, extra_y, extra_out = also_certify
        cert_cal = np.vstack([cal, calibrator(np.asarray(extra_probs, dtype=np.float64))])
        cert_y = np.concatenate([y_cert, np.asarray(extra_y, dtype=np.int64)])
        if cert_out is not None:
            fill = np.zeros(len(extra_y)) if extra_out is None else np.asarray(extra_out, dtype=np.float64)
            cert_out = np.concatenate([cert_out, fill])
    risk = fit_risk(
        uncertainty(cert_cal, policy.acquisition), cert_cal.argmax(axis=1), cert_y, alpha=policy.risk_alpha,
        delta=policy.risk_delta, mondrian=policy.risk_mondrian, n_classes=n_classes, outlier=cert_out,
        multiplicity=multiplicity,
    )
    routing: dict[str, Any] = {
        "format": ROUTING_FORMAT,
        "acquisition": policy.acquisition,
        "calibration": calibrator.to_dict(),
        "calibration_report": report,
        "ece": {
            "before": expected_calibration_error(probs[cert_rows], y_cert),
            "after": expected_calibration_error(cal, y_cert),
        },
        "risk": risk,
        "holdout": {
            "n_calibration": int(len(fit_rows)),
            "n_certification": int(len(cert_rows)),
            "accuracy": float((predicted == y_cert).mean()),
        },
        "seed": policy.seed,
    }
    if X is not None:
        X = np.asarray(X, dtype=np.float64)
        routing["features"] = {"mean": X.mean(axis=0).tolist(), "scale": X.std(axis=0).tolist()}
    return routing


def label_positions(y: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """Class index of each label (class names, or ints/floats naming them); -1 when unknown."""
    index = {c: i for i, c in enumerate(classes)}
    keys = (str(int(v)) if isinstance(v, float) and v.is_integer() else str(v) for v in np.asarray(y).tolist())
    return np.fromiter((index.get(k, -1) for k in keys), dtype=np.int64, count=len(y))


def label_indices(y: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """Map held-out labels to class indices; refuses a label the model does not know."""
    out = label_positions(y, classes)
    if (out < 0).any():
        v = np.asarray(y).tolist()[int(np.argmax(out < 0))]
        raise ConfigError(f"reference label {v!r} is not one of the model's classes {list(classes)[:20]}")
    return out


def log_routing(routing: dict[str, Any]) -> None:
    """Say what a fitted routing section certifies (one line for calibration, one for risk)."""
    report = routing["calibration_report"]
    log.info(
        "calibration %s fitted on %d held-out rows: ECE %.4f -> %.4f (on %d other rows); "
        "held-out accuracy %.4f", report.get("kind"), routing["holdout"]["n_calibration"],
        routing["ece"]["before"], routing["ece"]["after"], routing["holdout"]["n_certification"],
        routing["holdout"]["accuracy"],
    )
    risk = routing["risk"]
    log.info(
        "risk control (alpha=%s, delta=%s, mondrian=%s): accept uncertainty <= %.4f, held-out "
        "coverage %.3f, certified error bound %.4f", risk["alpha"], risk["delta"], risk["mondrian"],
        risk["threshold"], risk["coverage"], risk["upper_bound"],
    )


def prepare_model(
    policy: PolicySettings, model: ServingModel, X: Optional[np.ndarray] = None, y: Optional[np.ndarray] = None
) -> ServingModel:
    """Attach calibration and routing parameters to ``model``.

    With held-out labels (X, y): fit them now and store them in ``manifest["routing"]``.
    Otherwise use the manifest's ``routing`` section when present (registry bundles), else
    leave the model as is (temperature only).
    """
    if X is not None and y is not None and policy.calibration_fraction:
        y_idx = label_indices(y, model.classes)
        raw = model.classifier.predict_proba(X)
        out = model.outlier.score(X) if model.outlier is not None else None
        routing = fit_routing(raw, y_idx, policy, outlier=out, X=X)
        log_routing(routing)
        manifest = {**(model.manifest or {}), "routing": routing}
        return dataclasses.replace(model, calibrator=calibrator_from_dict(routing["calibration"]), manifest=manifest)
    stored = (model.manifest or {}).get("routing")
    if stored and stored.get("calibration"):
        return dataclasses.replace(model, calibrator=calibrator_from_dict(stored["calibration"]))
    return model
