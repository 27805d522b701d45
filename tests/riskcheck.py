"""Does the risk certificate of what ships hold? Runs of the shipped path, judged on fresh rows.

One run: ``bundles.train_initial`` with the settings ``triage train`` uses (``--model-family
auto``, ``--calibration auto``, ``--certification`` as asked) but a half holdout
(``HOLDOUT``: 250 rows certify, with the MLP fits a third cheaper, so 200 seeds fit on a shared
2-core machine) on fresh
labelled rows of a fixed task, into a temporary registry; the version is loaded back as a scorer
loads it (``serving_model_from_registry`` + ``prepare_model``), the policy stack of ``--policy
risk`` routes ``TEST`` fresh rows (``score_batch`` + ``decide``), and the run *violates* when the
error among what it accepted exceeds alpha. The certificate says violations happen in at most
delta of the runs. ``retrain_run`` goes on with ``VERSIONS`` retrains through
``retraining.retrain_once`` (promotion gate included), each fed the labels of the samples the
served version sent to review, most uncertain first (as annotators work the queue), and judges
whatever version serves after each one.

``in_sample``: a deliberately wrong procedure (the routing refitted on the rows the model trained
on), to show the check catches a certificate that does not hold.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from sklearn.datasets import make_classification

from triage.lifecycle.bundles import train_initial
from triage.lifecycle.labelstore import LabelStore
from triage.lifecycle.loading import serving_model_from_registry
from triage.lifecycle.registry import Registry
from triage.lifecycle.retraining import retrain_once
from triage.policies.factory import make_policy
from triage.policies.fit import fit_routing, label_indices, prepare_model
from triage.policies.risk import clopper_pearson_interval
from triage.scoring.calibration import calibrator_from_dict
from triage.scoring.scores import score_batch
from triage.scoring.servable import ServingModel
from triage.settings import PolicySettings, RetrainSettings, ServingSettings

# 3 classes; auto picks mlp or gb at ~88-90% accuracy, so alpha 0.1 is met at a real share of the stream.
TASK: dict[str, Any] = dict(n_features=10, n_informative=6, n_redundant=2, n_classes=3, class_sep=1.2,
                            flip_y=0.02, random_state=5)
POOL = 150_000
ALPHA, DELTA = 0.1, 0.1
TRAIN = 1_000  # labelled rows per run: 500 base (auto compares all three families), 500 held out
HOLDOUT = 0.5
TEST = 20_000  # fresh rows the accepted error is measured on
VERSIONS = 3  # retrains after v1 in a retrain run
STREAM, LABELS = 2_000, 150  # per retrain: rows the served version routes, labels taken from its review


@dataclass(frozen=True)
class Judged:
    """One served version on the fresh rows: accepted share and error among the accepted."""

    coverage: float
    error: float

    @property
    def violates(self) -> bool:
        return self.error > ALPHA


def pool() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_classification(n_samples=POOL, **TASK)
    return X, y.astype(str)


def policy(seed: int) -> PolicySettings:
    return PolicySettings(policy="risk", risk_alpha=ALPHA, risk_delta=DELTA, seed=seed)


def settings(certification: str, **changes: Any) -> RetrainSettings:
    return RetrainSettings(certification=certification, holdout_fraction=HOLDOUT, **changes)


def _quiet(message: str) -> None:
    pass


def served(registry: Registry, pol: PolicySettings) -> ServingModel:
    return prepare_model(pol, serving_model_from_registry(registry, registry.current() or "", ServingSettings()))


def route(model: ServingModel, pol: PolicySettings, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(accepted, predicted class names, uncertainty) of the policy stack ``--policy risk`` runs."""
    scores = score_batch(model, X, pol.acquisition)
    accepted = make_policy(pol, model).decide(scores).accepted
    return accepted, np.asarray(model.classes)[scores.predicted], scores.uncertainty


def judge(accepted: np.ndarray, predicted: np.ndarray, y: np.ndarray) -> Judged:
    wrong = predicted != y
    return Judged(float(accepted.mean()), float(wrong[accepted].mean()) if accepted.any() else 0.0)


def in_sample(model: ServingModel, pol: PolicySettings, registry: Registry, X: np.ndarray, y: np.ndarray) -> Judged:
    """The wrong procedure: calibrate and certify on the base rows the model was trained on."""
    base = np.load(registry.data_dir / "base.npz")
    raw = model.classifier.predict_proba(base["X"])
    routing = fit_routing(raw, label_indices(base["y"], model.classes), pol)
    cal = calibrator_from_dict(routing["calibration"])(model.classifier.predict_proba(X))
    from triage.policies.risk import accept_mask
    from triage.scoring.acquisition import uncertainty

    predicted = cal.argmax(axis=1)
    return judge(accept_mask(routing["risk"], uncertainty(cal, pol.acquisition), predicted),
                 np.asarray(model.classes)[predicted], y)


def _draw(seed: int, data: tuple[np.ndarray, np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    rows = np.random.default_rng(seed).choice(len(data[0]), n, replace=False)
    return data[0][rows], data[1][rows]


def train_run(seed: int, data: tuple[np.ndarray, np.ndarray], certification: str,
              wrong_too: bool = False) -> dict[str, Any]:
    """One ``triage train`` run; its version judged on fresh rows (and the wrong procedure's)."""
    X, y = _draw(seed, data, TRAIN + TEST)
    pol = policy(seed)
    with tempfile.TemporaryDirectory() as tmp:
        reg = Registry(Path(tmp) / "registry")
        manifest = train_initial(X[:TRAIN], y[:TRAIN], reg, retrain=settings(certification),
                                 policy=pol, outlier_quantile=0.995, progress=_quiet)
        model = served(reg, pol)
        out: dict[str, Any] = {"family": manifest["family"],
                               "shipped": judge(*_accepted_predicted(model, pol, X[TRAIN:]), y[TRAIN:])}
        if wrong_too:
            out["in_sample"] = in_sample(model, pol, reg, X[TRAIN:], y[TRAIN:])
    return out


def _accepted_predicted(model: ServingModel, pol: PolicySettings, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    accepted, predicted, _ = route(model, pol, X)
    return accepted, predicted


def retrain_run(seed: int, data: tuple[np.ndarray, np.ndarray], certification: str = "strict",
                versions: int = VERSIONS) -> list[dict[str, Any]]:
    """``triage train``, then ``versions`` retrains on the review queue's labels; the served
    version judged on the same fresh rows after each step."""
    X, y = _draw(seed, data, TRAIN + TEST + versions * STREAM)
    X_test, y_test = X[TRAIN:TRAIN + TEST], y[TRAIN:TRAIN + TEST]
    pol = policy(seed)
    retrain = settings(certification, min_new_labels=1)
    steps: list[dict[str, Any]] = []
    logging.getLogger("triage").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        reg = Registry(Path(tmp) / "registry")
        train_initial(X[:TRAIN], y[:TRAIN], reg, retrain=retrain, policy=pol, outlier_quantile=0.995,
                      progress=_quiet)
        store = LabelStore(reg.data_dir)
        for k in range(versions + 1):
            model = served(reg, pol)
            steps.append({"version": reg.current(), "judged": judge(*_accepted_predicted(model, pol, X_test), y_test)})
            if k == versions:
                break
            first = TRAIN + TEST + k * STREAM
            Xs, ys = X[first:first + STREAM], y[first:first + STREAM]
            accepted, _, u = route(model, pol, Xs)
            reviewed = np.flatnonzero(~accepted)
            picked = reviewed[np.argsort(-u[reviewed], kind="stable")][:LABELS]
            store.append({"id": f"s{seed}-{first + int(i)}", "label": str(ys[i]), "features": Xs[i].tolist(),
                          "annotator": "riskcheck", "partition": 0, "offset": first + int(i)} for i in picked)
            retrain_once(reg, store, retrain=retrain, policy=pol, outlier_quantile=0.995, progress=_quiet)
    return steps


def violation_rate(judged: list[Judged], confidence: float = 0.95) -> dict[str, Any]:
    """Share of runs whose accepted error exceeds alpha, with its two-sided Clopper-Pearson interval."""
    bad = sum(j.violates for j in judged)
    lo, hi = clopper_pearson_interval(bad, len(judged), confidence)
    return {"runs": len(judged), "violations": bad, "rate": bad / len(judged), "interval": (lo, hi),
            "mean_coverage": float(np.mean([j.coverage for j in judged])),
            "mean_error": float(np.mean([j.error for j in judged]))}


def holds(rate: dict[str, Any]) -> bool:
    """Consistent with a violation rate <= delta: the interval's lower end is not above it."""
    return bool(rate["interval"][0] <= DELTA)


def breaks(rate: dict[str, Any]) -> bool:
    """Clearly above delta: the interval's lower end is."""
    return bool(rate["interval"][0] > DELTA)


def describe(name: str, rate: dict[str, Any], seconds: Optional[float] = None) -> str:
    lo, hi = rate["interval"]
    took = f", {seconds:.0f} s" if seconds is not None else ""
    return (f"{name}: {rate['violations']}/{rate['runs']} runs violate = {rate['rate']:.3f} "
            f"[95% CP {lo:.3f}, {hi:.3f}], mean coverage {rate['mean_coverage']:.3f}, "
            f"mean accepted error {rate['mean_error']:.4f}{took}")
