"""Train a scikit-learn classifier, export it to ONNX, calibrate, evaluate, register.

Pure computation plus registry writes; no Kafka. Class names are strings everywhere.

Families (``FAMILIES``): ``logreg`` (standardized logistic regression), ``mlp`` (one hidden
layer of 64, L2 alpha 1.0: strongly regularized, it beats the unregularized net on log loss
and fits in half the time), ``gb`` (scikit-learn GradientBoostingClassifier: skl2onnx
exports it; HistGradientBoostingClassifier does not convert with skl2onnx 1.20).
``auto`` (``AUTO``) is no estimator: ``train_model`` fits every candidate on the same 80%
split and keeps the one with the lowest temperature-scaled log loss on the other 20% (one
fit per family, so a retrain on 1,000 rows stays near a second); below ``AUTO_MIN_ROWS``
rows it just uses logreg, and below ``AUTO_OOF_BELOW`` it compares out-of-fold predictions. ``cross_fit`` gives out-of-fold probabilities of one family, for
``--certification cross-fit`` (opt-in; see ``bundles.train_initial``).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

import numpy as np

from triage.errors import ConfigError
from triage.extras import require_extra
from triage.scoring.calibration import apply_temperature, expected_calibration_error, fit_temperature

if TYPE_CHECKING:
    from sklearn.base import ClassifierMixin

# scikit-learn and skl2onnx are imported inside the functions that fit or export (the ``train``
# extra): importing this module (``evaluate``, ``macro_f1``, the family names) must not need them.


def _logreg(seed: int) -> "ClassifierMixin":
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.5))


def _mlp(seed: int) -> "ClassifierMixin":
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=(64,), alpha=1.0, learning_rate_init=0.003, max_iter=300,
                      early_stopping=False, random_state=seed),
    )


def _gb(seed: int) -> "ClassifierMixin":
    from sklearn.ensemble import GradientBoostingClassifier

    # Shallow, subsampled boosting: ~1 s on 1,600 rows x 4 classes (the default 100x3 takes 3x longer).
    return GradientBoostingClassifier(n_estimators=60, learning_rate=0.15, max_depth=3, subsample=0.7,
                                      max_features=0.5, random_state=seed)


FAMILIES: dict[str, Callable[[int], "ClassifierMixin"]] = {"logreg": _logreg, "mlp": _mlp, "gb": _gb}
AUTO = "auto"
AUTO_CANDIDATES: tuple[str, ...] = ("logreg", "mlp", "gb")
# Below this many rows the flexible families overfit and nothing can tell them apart:
# logreg is the safe choice.
AUTO_MIN_ROWS = 200
# Below this many rows a 20% split is under 100 rows, too few to compare families on (and in
# the active loop they are the hardest samples, not a fair sample), so the families are
# compared on 5-fold out-of-fold predictions of every row instead.
AUTO_OOF_BELOW = 500
AUTO_OOF_FOLDS = 5
DEFAULT_FAMILY = AUTO
VALIDATION_FRACTION = 0.2
EPS = 1e-12


@dataclass
class TrainedModel:
    onnx_bytes: bytes
    classes: list[str]
    temperature: float
    calibration: dict[str, Any]
    estimator: Any = field(repr=False, default=None)
    family: str = ""  # the family actually fitted (what ``auto`` chose)
    selection: Optional[dict[str, Any]] = None  # how ``auto`` chose: per-family validation log loss

    @property
    def family_label(self) -> str:
        """For the manifest's ``family``: ``auto:mlp`` when auto chose, else the family."""
        return f"{AUTO}:{self.family}" if self.selection else self.family


def _split(X: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    from sklearn.model_selection import train_test_split

    counts = np.unique(y, return_counts=True)[1]
    stratify = y if counts.min() >= 2 and int(len(y) * fraction) >= len(counts) else None
    return tuple(train_test_split(X, y, test_size=fraction, random_state=seed, stratify=stratify))


def _fit(family: str, seed: int, X: np.ndarray, y: np.ndarray) -> Any:
    require_extra("train", "training a model")
    return _fit_estimator(FAMILIES[family](seed), X, y)


def _fit_estimator(estimator: Any, X: np.ndarray, y: np.ndarray) -> Any:
    # One BLAS thread: these matrices are small, and threads fighting over 2 cores made an
    # MLP fit 10x slower in measurements.
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)  # a capped MLP is the design, not a problem
        return estimator.fit(X.astype(np.float32), y)


def refit(family: str, seed: int, fitted: Any, X: np.ndarray, y: np.ndarray) -> Any:
    """``family`` fitted on every row, after ``fitted`` (the 80% fit) set the temperature.

    The MLP starts from the 80% fit's weights (a warm start) and trains to convergence on every
    row: from 2,000 rows it stops after about a third of a fresh fit's epochs, at the same test
    accuracy (docs/performance.md, simulator speed). Its stopping counters are reset, or it
    would stop after one epoch, still the 80% fit. Other families (logreg is cheap; boosting's
    warm start adds trees instead), or a class the 80% fit never saw, fit from scratch."""
    if family != "mlp" or sorted(str(c) for c in fitted.classes_) != sorted({str(c) for c in y}):
        return _fit(family, seed, X, y)
    warm = copy.deepcopy(fitted)
    net = warm[-1]
    net.set_params(warm_start=True)
    net._no_improvement_count, net.best_loss_ = 0, np.inf  # sklearn keeps the last fit's
    return _fit_estimator(warm, X, y)


def check_family(family: str) -> None:
    """Refuse a family name that is neither a FAMILIES key nor ``auto``."""
    if family != AUTO and family not in FAMILIES:
        raise ConfigError(f"unknown model family {family!r}; choose one of {', '.join([AUTO, *FAMILIES])}")


def aligned_probs(estimator: Any, X: np.ndarray, classes: list[str]) -> np.ndarray:
    """(N, len(classes)) probabilities of ``estimator`` in ``classes`` order (0 for a class it never saw)."""
    raw = estimator.predict_proba(np.asarray(X, dtype=np.float32))
    out = np.zeros((len(X), len(classes)))
    index = {c: i for i, c in enumerate(classes)}
    for j, c in enumerate(estimator.classes_):
        if str(c) in index:  # a class the served model lacks: its rows are unknown labels anyway
            out[:, index[str(c)]] = raw[:, j]
    return out


def _log_loss(probs: np.ndarray, y_idx: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(y_idx)), y_idx], EPS, 1.0)).mean())


def _temperature_fit(raw: np.ndarray, y_cal: np.ndarray, classes: list[str]) -> tuple[float, np.ndarray, np.ndarray]:
    """Temperature on the validation rows whose class the model knows: (T, known mask, class indices)."""
    index = {c: i for i, c in enumerate(classes)}
    known = np.array([c in index for c in y_cal], dtype=bool)
    y_idx = np.array([index[c] for c in y_cal[known]], dtype=np.int64)
    temperature = fit_temperature(raw[known], y_idx) if known.sum() >= 10 else 1.0
    return temperature, known, y_idx


def auto_candidates(rows: int) -> tuple[str, ...]:
    """The families ``auto`` compares on ``rows`` rows: logreg alone while too few to tell
    them apart; no boosting below ``AUTO_OOF_BELOW`` (five boosted fold fits of a 10-class
    task cost ~10 s, and boosting did not win on so few rows in any measurement)."""
    if rows < AUTO_MIN_ROWS:
        return ("logreg",)
    return AUTO_CANDIDATES if rows >= AUTO_OOF_BELOW else tuple(f for f in AUTO_CANDIDATES if f != "gb")


def _out_of_fold_loss(family: str, X: np.ndarray, y: np.ndarray, seed: int) -> float:
    """Temperature-scaled log loss of ``family`` on out-of-fold predictions of every row."""
    classes = sorted({str(c) for c in y})
    probs = cross_fit(X, y, family=family, classes=classes, folds=AUTO_OOF_FOLDS, seed=seed)
    y_idx = np.searchsorted(classes, y)
    temperature = fit_temperature(probs, y_idx)
    return _log_loss(apply_temperature(probs, temperature), y_idx)


def reselect_due(previous: Optional[Mapping[str, Any]], rows: int) -> bool:
    """Whether ``auto`` should compare the families again on ``rows`` rows: it never chose, it
    chose below ``AUTO_MIN_ROWS`` (logreg by rule, not by comparison), or the training data has
    doubled since. Re-choosing every retrain would triple its cost for a choice that rarely
    changes; doubling keeps the comparisons to a logarithmic number."""
    if not previous or previous.get("chosen") not in FAMILIES:
        return True
    chosen_on = int(previous.get("rows", 0))
    return chosen_on < AUTO_MIN_ROWS or rows >= 2 * chosen_on


def macro_f1(y: np.ndarray, predicted: np.ndarray) -> float:
    """Unweighted mean F1 over the classes present in ``y`` or ``predicted`` (sklearn's macro
    average), by counting: sklearn's checks cost more than a retrain's evaluation itself."""
    labels, codes = np.unique(np.concatenate([y, predicted]), return_inverse=True)
    truth, guess = codes[: len(y)], codes[len(y):]
    k = len(labels)
    tp = np.bincount(truth[truth == guess], minlength=k).astype(np.float64)
    support = np.bincount(truth, minlength=k)
    chosen = np.bincount(guess, minlength=k)
    denominator = support + chosen
    f1 = np.divide(2 * tp, denominator, out=np.zeros(k), where=denominator > 0)
    return float(f1.mean())


def train_model(X: np.ndarray, y: np.ndarray, *, family: str = DEFAULT_FAMILY, seed: int = 0,
                previous: Optional[Mapping[str, Any]] = None) -> TrainedModel:
    """Fit on 80%, calibrate temperature on the other 20%, refit on all rows, export to ONNX
    (no ZipMap).

    The refit keeps the temperature fitted out of sample and trains on every row: leaving 20%
    out cost the active loop a fifth of its most informative labels (``triage simulate``
    measured 277 -> 212 labels to 98% of full-label accuracy on digits).
    ``family="auto"``: every ``AUTO_CANDIDATES`` family is fitted on the same 80% and the one
    with the lowest temperature-scaled log loss on the 20% is kept (logreg below
    ``AUTO_MIN_ROWS`` rows); ``TrainedModel.family`` / ``.selection`` say what was chosen.
    ``previous``: the selection an earlier version made; it is kept (no comparison) until
    ``reselect_due``. The rest of the bundle (outlier detector, routing, canary) is
    ``preparation.prepare_bundle``'s."""
    require_extra("train", "training a model")
    from skl2onnx import to_onnx

    check_family(family)
    y = np.asarray(y).astype(str)
    if len(np.unique(y)) < 2:
        raise ConfigError("training data needs at least two classes")
    X = np.asarray(X, dtype=np.float64)
    X_fit, X_cal, y_fit, y_cal = _split(X, y, VALIDATION_FRACTION, seed)
    selection: Optional[dict[str, Any]] = None
    if family == AUTO and previous is not None and not reselect_due(previous, len(X)):
        family = str(previous["chosen"])
        selection = {**previous, "kept": True}
        estimator = _fit(family, seed, X_fit, y_fit)
    elif family == AUTO:
        candidates = auto_candidates(len(X))
        losses: dict[str, float] = {}
        if len(candidates) > 1 and len(X) < AUTO_OOF_BELOW:
            losses = {name: _out_of_fold_loss(name, X, y, seed) for name in candidates}
            family = min(losses, key=lambda k: (np.nan_to_num(losses[k], nan=np.inf), candidates.index(k)))
            estimator = _fit(family, seed, X_fit, y_fit)
            validation = {"validation_rows": int(len(X)), "validation": f"{AUTO_OOF_FOLDS}-fold out of fold"}
        else:
            fitted = {name: _fit(name, seed, X_fit, y_fit) for name in candidates}
            for name, est in fitted.items():
                cls = [str(c) for c in est.classes_]
                raw_c = est.predict_proba(X_cal.astype(np.float32))
                t, known, y_idx = _temperature_fit(raw_c, y_cal, cls)
                losses[name] = _log_loss(apply_temperature(raw_c[known], t), y_idx) if known.any() else float("nan")
            family = min(losses, key=lambda k: (np.nan_to_num(losses[k], nan=np.inf), candidates.index(k)))
            estimator = fitted[family]
            validation = {"validation_rows": int(len(X_cal)), "validation": "20% split"}
        selection = {"candidates": list(candidates), "chosen": family, **validation,
                     "rows": int(len(X)), "metric": "temperature-scaled log loss", "scores": losses}
    else:
        estimator = _fit(family, seed, X_fit, y_fit)
    classes = [str(c) for c in estimator.classes_]
    raw = estimator.predict_proba(X_cal.astype(np.float32))
    temperature, known, y_cal_idx = _temperature_fit(raw, y_cal, classes)
    calibration = {
        "method": "temperature",
        "temperature": temperature,
        "ece_before": expected_calibration_error(raw[known], y_cal_idx) if known.any() else float("nan"),
        "ece_after": expected_calibration_error(apply_temperature(raw[known], temperature), y_cal_idx) if known.any() else float("nan"),
        "refit_rows": int(len(X)),
    }
    estimator = refit(family, seed, estimator, X, y)
    classes = [str(c) for c in estimator.classes_]  # a class seen only in the 20% is known now too
    onx = to_onnx(estimator, X_fit[:1].astype(np.float32), options={id(estimator): {"zipmap": False}}, target_opset=17)
    return TrainedModel(onx.SerializeToString(), classes, temperature, calibration, estimator, family, selection)


def cross_fit(X: np.ndarray, y: np.ndarray, *, family: str, classes: list[str], folds: int, seed: int = 0,
              also: Optional[tuple[np.ndarray, np.ndarray]] = None) -> np.ndarray:
    """Out-of-fold raw probabilities, (N, len(classes)) in ``classes`` order: each row scored by
    a ``family`` model fitted on the other folds, (folds-1)/folds of the rows (stratified when
    every class has ``folds`` rows). ``also``: rows every fold model trains on and none is
    scored (a retrain's actively chosen labels: they are not exchangeable with the stream, so
    they may teach the fold models but must not certify)."""
    require_extra("train", "cross-fitting a model")
    from sklearn.model_selection import KFold, StratifiedKFold

    check_family(family)
    if family == AUTO:
        raise ConfigError("cross_fit needs a concrete family (the one auto chose)")
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y).astype(str)
    counts = np.unique(y, return_counts=True)[1]
    splitter = StratifiedKFold if counts.min() >= folds else KFold
    splits = splitter(folds, shuffle=True, random_state=seed).split(X, y)
    out = np.zeros((len(X), len(classes)))
    for fit_rows, oof_rows in splits:
        X_fit, y_fit = X[fit_rows], y[fit_rows]
        if also is not None and len(also[0]):
            X_fit, y_fit = np.vstack([X_fit, also[0]]), np.concatenate([y_fit, np.asarray(also[1]).astype(str)])
        out[oof_rows] = aligned_probs(_fit(family, seed, X_fit, y_fit), X[oof_rows], classes)
    return out


def evaluate(probs: np.ndarray, classes: list[str], y: np.ndarray) -> dict[str, float]:
    """Accuracy, macro-F1 and ECE of (N, C) probabilities against string labels."""
    y = np.asarray(y).astype(str)
    if not len(y):
        return {"accuracy": float("nan"), "macro_f1": float("nan"), "ece": float("nan"), "n": 0}
    predicted = np.asarray(classes)[probs.argmax(axis=1)]
    index = {c: i for i, c in enumerate(classes)}
    known = np.array([c in index for c in y])
    ece = expected_calibration_error(probs[known], np.array([index[c] for c in y[known]])) if known.any() else float("nan")
    return {
        "accuracy": float((predicted == y).mean()),
        "macro_f1": macro_f1(y, predicted),
        "ece": ece,
        "n": int(len(y)),
    }


def class_counts(y: np.ndarray) -> dict[str, int]:
    """Rows per class, for the manifest's ``data.class_counts``."""
    values, counts = np.unique(np.asarray(y).astype(str), return_counts=True)
    return {str(v): int(c) for v, c in zip(values, counts)}
