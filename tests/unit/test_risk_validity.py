"""Does the risk certificate hold as often as it claims? Many independent runs, fresh data each.

Each run certifies a threshold on fresh labelled rows and measures the error among accepted
predictions on the population (exactly, or on a large fresh test set). The certificate says
that error exceeds alpha in at most delta of the runs; we allow binomial slack of 3 sd. A
plug-in threshold (largest one with empirical error <= alpha) is checked to break that bound,
so the assertions can fail. The cross-fitted path (``training.cross_fit``: fold models score
the base rows, the served model scores the holdout, the served model is judged) is checked
the same way.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.naive_bayes import GaussianNB

from triage.lifecycle import training
from triage.scoring.acquisition import uncertainty
from triage.policies.risk import NEVER, certify, fit_risk

ALPHA, DELTA = 0.05, 0.1


def allowed_failures(runs: int, delta: float = DELTA) -> float:
    """delta plus 3 binomial standard deviations, as a share of runs."""
    return delta + 3 * np.sqrt(delta * (1 - delta) / runs)


def plug_in(u: np.ndarray, wrong: np.ndarray, alpha: float) -> float:
    """The largest threshold whose empirical accepted error is <= alpha (no confidence)."""
    order = np.argsort(u)
    rate = np.cumsum(wrong[order]) / np.arange(1, len(u) + 1)
    ok = np.flatnonzero(rate <= alpha)
    return float(u[order][ok[-1]]) if len(ok) else NEVER


# --- exact population risk --------------------------------------------------------------

SLOPE = 0.15  # P(wrong | u) = SLOPE * u, u ~ U(0, 1): risk(lam) = SLOPE * lam / 2, = alpha at lam = 2/3


def population_risk(lam: np.ndarray) -> np.ndarray:
    return SLOPE * np.clip(lam, 0.0, 1.0) / 2


def synthetic_runs(runs: int, n: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(2024)
    u = rng.random((runs, n))
    wrong = rng.random((runs, n)) < SLOPE * u
    yield from zip(u, wrong)


def test_certificate_fails_in_at_most_delta_of_runs() -> None:
    runs = 400
    certified, naive, coverage = [], [], []
    for u, wrong in synthetic_runs(runs, 1000):
        res = certify(u, wrong, ALPHA, DELTA)
        certified.append(res["threshold"])
        coverage.append(res["coverage"])
        naive.append(plug_in(u, wrong, ALPHA))
    lam = np.asarray(certified)
    failures = float(((lam >= 0) & (population_risk(lam) > ALPHA)).mean())
    naive_failures = float((population_risk(np.asarray(naive)) > ALPHA).mean())
    print(f"certified: {failures:.3f} of runs exceed alpha (mean coverage {np.mean(coverage):.3f}); "
          f"plug-in: {naive_failures:.3f}")
    assert failures <= allowed_failures(runs)
    assert naive_failures > allowed_failures(runs), "the check must be able to catch an overconfident threshold"
    # ...and it is not vacuous: most runs accept a good share (the best possible is 2/3).
    assert np.median(coverage) > 0.3


def test_multiplicity_holds_at_delta_over_m() -> None:
    """With multiplicity m each run is as strict as delta / m: failures stay under that bound too."""
    runs, m = 400, 4
    lam = np.asarray([fit_risk(u, np.zeros(len(u), int), np.where(w, 1, 0), alpha=ALPHA, delta=DELTA,
                               mondrian=False, n_classes=2, multiplicity=m)["threshold"]
                      for u, w in synthetic_runs(runs, 1000)])
    failures = float(((lam >= 0) & (population_risk(lam) > ALPHA)).mean())
    assert failures <= allowed_failures(runs, DELTA / m)


# --- a real classifier, cross-fitted ------------------------------------------------------

# Naive Bayes gets ~85% here; alpha 0.05 is met at roughly 60% coverage, so the threshold matters.
TASK: dict[str, Any] = dict(n_features=8, n_informative=6, n_redundant=0, n_classes=4, class_sep=2.0,
                            flip_y=0.01, random_state=11)
POOL = 200_000


@pytest.fixture(scope="module")
def pool() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_classification(n_samples=POOL, **TASK)
    return X, y.astype(str)


@pytest.fixture
def naive_bayes(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], Any]:
    """A family that fits in a millisecond, so hundreds of cross-fits stay cheap."""
    make: Callable[[int], Any] = lambda seed: GaussianNB()
    monkeypatch.setitem(training.FAMILIES, "nb", make)
    return make


def test_cross_fitted_certificate_holds_for_the_served_model(
        pool: tuple[np.ndarray, np.ndarray], naive_bayes: Callable[[int], Any]) -> None:
    X, y = pool
    runs, n_base, n_hold, n_test = 200, 480, 120, 20_000
    rng = np.random.default_rng(7)
    failures = naive_failures = 0
    coverage = []
    for _ in range(runs):
        rows = rng.choice(POOL, n_base + n_hold + n_test, replace=False)
        base, hold, test = np.split(rows, [n_base, n_base + n_hold])
        fit_rows = base[rng.permutation(n_base)[: int(0.8 * n_base)]]  # the served model sees 80%, like train_model
        served = training.FAMILIES["nb"](0).fit(X[fit_rows], y[fit_rows])
        classes = [str(c) for c in served.classes_]
        oof = training.cross_fit(X[base], y[base], family="nb", classes=classes, folds=5, seed=int(rng.integers(1 << 30)))
        probs = np.vstack([oof, training.aligned_probs(served, X[hold], classes)])
        labels = np.concatenate([y[base], y[hold]])
        u = uncertainty(probs, "margin")
        wrong = np.asarray(classes)[probs.argmax(axis=1)] != labels
        res = certify(u, wrong, ALPHA, DELTA)
        test_p = training.aligned_probs(served, X[test], classes)
        u_test = uncertainty(test_p, "margin")
        wrong_test = np.asarray(classes)[test_p.argmax(axis=1)] != y[test]
        for lam, counter in ((res["threshold"], "certified"), (plug_in(u, wrong, ALPHA), "naive")):
            acc = u_test <= lam
            bad = bool(acc.any() and wrong_test[acc].mean() > ALPHA)
            if counter == "certified":
                failures += bad
                coverage.append(acc.mean())
            else:
                naive_failures += bad
    print(f"cross-fitted: {failures}/{runs} runs exceed alpha on the served model "
          f"(mean coverage {np.mean(coverage):.3f}); plug-in {naive_failures}/{runs}")
    assert failures / runs <= allowed_failures(runs)
    assert naive_failures / runs > allowed_failures(runs)
    assert np.mean(coverage) > 0.1
