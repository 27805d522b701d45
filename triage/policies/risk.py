"""Risk control: pick the auto-accept threshold so that the error rate among accepted
predictions is <= alpha with probability >= 1 - delta (Learn-then-Test, fixed sequence).

Accept a sample when its uncertainty u <= lambda. For each candidate lambda (in increasing
order, i.e. from the most to the least conservative, fixed before looking at labels) we test
H(lambda): "error rate among accepted > alpha" with an exact Clopper-Pearson upper bound at
level delta. Fixed-sequence testing stops at the first lambda whose bound exceeds alpha; every
lambda before it is certified simultaneously with family-wise error <= delta, and we take the
largest. The grid (uncertainty quantiles) depends on the scores only, never on the labels.
It starts at the first quantile accepting ``start_rows`` rows: enough that an error rate of
alpha / 2 would still certify. Starting lower tests sets that can certify only one or two
errors, and one unlucky early error (label noise among the most confident rows) would end the
sequence there, at a few percent coverage, however good the model is further out.

Mondrian (per predicted class): the same procedure on each class's rows at level delta / C
(Bonferroni), so every class's accepted error is <= alpha at once; hence the overall one too.
A class without enough held-out rows gets lambda = -1: nothing of it is auto-accepted.

Multiplicity: when the certification rows' labels also chose among m models (``--certification
cross-fit``: auto picks a family on rows that, scored out of fold, certify too), each test runs
at delta / m. A union bound over the m candidates then keeps the chosen one's bound at level
delta, however the choice was made. Strict certification (the default) never chooses on the
certifying rows: m = 1. What is guaranteed and assumed: docs/guide/risk.md.

``certify(u, wrong, alpha, delta)`` is the procedure itself, on any rows (the audit slice's too).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from triage.policies.base import RuleSnapshot, Routing
from triage.settings import PolicySettings

if TYPE_CHECKING:
    from triage.policies.review_rate import RateController
    from triage.scoring.scores import Scores

log = logging.getLogger("triage.policy")

MAX_CANDIDATES = 200
NEVER = -1.0  # a threshold no uncertainty (>= 0) is below: accept nothing
START_RATE = 2.0  # the grid starts where an error rate of alpha / START_RATE would certify
# scipy.special is imported inside the bounds: they run when a threshold is certified (preparing a
# model, the audit consumer), never per batch, and the scorer's start-up need not pay ~0.3 s for it.


def clopper_pearson_upper(errors: np.ndarray | int, n: np.ndarray | int, delta: float) -> np.ndarray:
    """One-sided (1 - delta) upper confidence bound of a binomial proportion; 1 when n = 0."""
    from scipy.special import betaincinv

    errors = np.asarray(errors, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ub = betaincinv(errors + 1, np.maximum(n - errors, 1e-12), 1 - delta)
    return np.where(errors >= n, 1.0, ub)


def clopper_pearson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided exact interval of a proportion (NaNs when n = 0)."""
    from scipy.special import betaincinv

    if n <= 0:
        return float("nan"), float("nan")
    a = (1 - confidence) / 2
    lo = 0.0 if successes == 0 else float(betaincinv(successes, n - successes + 1, a))
    hi = 1.0 if successes == n else float(betaincinv(successes + 1, n - successes, 1 - a))
    return lo, hi


def min_accepted(alpha: float, delta: float, errors: int = 0) -> int:
    """Fewest accepted rows with which ``errors`` errors still certify alpha at level delta."""
    lo = int(np.ceil(np.log(delta) / np.log1p(-alpha)))  # the zero-error answer
    if errors == 0:
        return lo
    hi = lo
    while clopper_pearson_upper(errors, hi, delta) > alpha:
        hi *= 2
    while lo < hi:  # the bound falls as n grows: binary search the first n that certifies
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if clopper_pearson_upper(errors, mid, delta) > alpha else (lo, mid)
    return lo


def start_rows(alpha: float, delta: float, n: int) -> int:
    """Fewest accepted rows the grid starts at (label-free): the first count at which an error
    rate of alpha / START_RATE would still certify, and at least one error would; when even
    all ``n`` rows are too few for that rate, just the one-error count."""
    one_error = min_accepted(alpha, delta, errors=1)
    counts = np.arange(one_error, max(n, one_error) + 1)
    ok = clopper_pearson_upper(np.floor(counts * alpha / START_RATE), counts, delta) <= alpha
    return int(counts[np.argmax(ok)]) if ok.any() else one_error


def _candidates(u: np.ndarray, alpha: float, delta: float) -> np.ndarray:
    """Label-free grid, increasing: distinct uncertainty quantiles, from the first accepting
    ``start_rows`` rows (testing hopeless tiny sets first would end the fixed sequence before
    it began). Depends on the scores, never the labels."""
    if not len(u):
        return np.zeros(0)
    qs = np.unique(np.quantile(u, np.linspace(0, 1, min(MAX_CANDIDATES, len(u)) + 1)[1:]))
    counts = np.searchsorted(np.sort(u), qs, side="right")
    return qs[counts >= start_rows(alpha, delta, len(u))]


def certify(u: np.ndarray, wrong: np.ndarray, alpha: float, delta: float) -> dict[str, Any]:
    """Fixed-sequence Learn-then-Test on one group of certifying rows: ``u`` their uncertainty
    scores (accept when u <= threshold), ``wrong`` their 0/1 losses, fixed before the labels
    were read and from a predictor that never saw these rows. Returns ``threshold`` (``NEVER``
    when nothing certifies), ``upper_bound`` (the Clopper-Pearson bound at level ``delta`` of the
    accepted error), ``coverage``, ``accepted``, ``errors`` and ``n``; the error among accepted is
    <= ``alpha`` with probability >= 1 - ``delta``."""
    n = len(u)
    lam, bound, accepted, errors = NEVER, 0.0, 0, 0
    for cand in _candidates(u, alpha, delta):
        acc = u <= cand
        k, e = int(acc.sum()), int(wrong[acc].sum())
        ub = float(clopper_pearson_upper(e, k, delta)) if k else 0.0
        if ub > alpha:
            break
        lam, bound, accepted, errors = float(cand), ub, k, e
    return {
        "threshold": lam,
        "upper_bound": bound,
        "coverage": accepted / n if n else 0.0,
        "accepted": accepted,
        "errors": errors,
        "n": n,
    }


def fit_risk(
    u: np.ndarray,
    predicted: np.ndarray,
    y: np.ndarray,
    *,
    alpha: float,
    delta: float,
    mondrian: bool,
    n_classes: int,
    outlier: Optional[np.ndarray] = None,
    multiplicity: int = 1,
) -> dict[str, Any]:
    """Thresholds on held-out rows (outliers, which serving never accepts, left out).

    ``multiplicity``: how many candidate models these rows' labels chose among; the tests run
    at ``delta / multiplicity`` (``delta`` is still what is reported and matched at serving)."""
    keep = np.ones(len(u), bool) if outlier is None else ~(outlier > 1.0)
    u, predicted, y = np.asarray(u)[keep], np.asarray(predicted)[keep], np.asarray(y)[keep]
    wrong = predicted != y
    out: dict[str, Any] = {"alpha": alpha, "delta": delta, "mondrian": mondrian, "n": int(len(u))}
    if multiplicity > 1:
        out["multiplicity"] = int(multiplicity)
    level = delta / max(int(multiplicity), 1)
    if not mondrian:
        res = certify(u, wrong, alpha, level)
        out.update(threshold=res["threshold"], coverage=res["coverage"], upper_bound=res["upper_bound"],
                   accepted_errors=res["errors"], accepted=res["accepted"])
        return out
    per_class = []
    accepted = errors = 0
    for c in range(n_classes):
        rows = predicted == c
        res = certify(u[rows], wrong[rows], alpha, level / n_classes)
        per_class.append(res["threshold"])
        accepted += res["accepted"]
        errors += res["errors"]
    out.update(
        thresholds=per_class,
        threshold=float(min(per_class)) if per_class else NEVER,
        coverage=accepted / len(u) if len(u) else 0.0,
        upper_bound=float(clopper_pearson_upper(errors, accepted, level)) if accepted else 0.0,
        accepted_errors=errors,
        accepted=accepted,
    )
    return out


def accept_mask(params: dict[str, Any], u: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Which rows the fitted risk parameters allow to be auto-accepted (vectorized)."""
    if params.get("mondrian") and "thresholds" in params:
        lam = np.asarray(params["thresholds"], dtype=np.float64)[predicted]
        return u <= lam
    return u <= float(params["threshold"])


def risk_params_usable(routing: Optional[Routing], policy: PolicySettings) -> tuple[Optional[dict[str, Any]], str]:
    """The fitted risk parameters if they were certified for these settings, else why not."""
    risk = (routing or {}).get("risk")
    if not risk or "threshold" not in risk:
        return None, "no certified risk threshold for this model version (needs held-out labels: --reference with y)"
    wanted = {"alpha": policy.risk_alpha, "delta": policy.risk_delta, "mondrian": policy.risk_mondrian}
    got = {k: risk.get(k) for k in wanted}
    acq = (routing or {}).get("acquisition")
    if got != wanted or acq != policy.acquisition:
        return None, (f"risk threshold was certified for {got} acquisition={acq}, "
                      f"but serving asks {wanted} acquisition={policy.acquisition}")
    return dict(risk), ""


class RiskRule:
    """Base rule ``risk``: auto-accept only what the version's certified threshold(s) allow,
    and all of that (no optional review). Without usable parameters nothing is accepted."""

    name = "risk"
    requires_routing = True

    def __init__(self, policy: PolicySettings) -> None:
        self.policy = policy
        self.params: Optional[dict[str, Any]] = None
        self.version = ""
        self.live: Optional[float] = None  # the live control's threshold (triage.policies.live_risk)

    def on_routing(self, routing: Routing, version: str) -> None:
        self.version = version
        self.live = None  # a live threshold belongs to one version
        self.params, why = risk_params_usable(routing, self.policy)
        if self.params is None:
            self._refuse(why)

    def set_live(self, version: str, doc: dict[str, Any]) -> None:
        """Apply the audit consumer's live-certified threshold for ``version`` (a cap on the
        certified one(s): it never accepts what the version's own certificate refuses)."""
        wanted = {"alpha": self.policy.risk_alpha, "delta": self.policy.risk_delta,
                  "acquisition": self.policy.acquisition}
        got = {k: doc.get(k) for k in wanted}
        if version != self.version or got != wanted:
            log.error("ignored the live risk threshold of %s certified for %s: serving %s with %s",
                      version, got, self.version, wanted)
            return
        self.live = float(doc["threshold"])
        log.warning("risk policy for model %s: live threshold %.6g from the audit labels", version, self.live)

    def _refuse(self, why: str) -> None:
        self.params = None
        log.error("risk policy for model %s: %s -> nothing is auto-accepted (all to review)", self.version, why)

    def forced(self, scores: Scores) -> np.ndarray:
        per_class = self._per_class()
        if per_class is not None and len(per_class) != scores.probs.shape[1]:
            # Certified for another class set: no bound on this one (and would index past it).
            self._refuse(f"Mondrian thresholds certified for {len(per_class)} classes, "
                         f"scores have {scores.probs.shape[1]}")
        if self.params is None:
            return np.ones(len(scores), dtype=bool)
        accept = accept_mask(self.params, scores.uncertainty, scores.predicted)
        if self.live is not None:
            accept &= scores.uncertainty <= self.live
        return ~accept

    def _per_class(self) -> Optional[list[float]]:
        p = self.params
        return p.get("thresholds") if p is not None and p.get("mondrian") else None

    def threshold(self, window: RateController) -> float:
        return np.inf  # everything certified is accepted: no optional review

    def snapshot(self, budget_rate: Optional[float]) -> RuleSnapshot:
        if self.params is None:
            return RuleSnapshot(risk_alpha=self.policy.risk_alpha, risk_threshold=NEVER)
        per_class = self._per_class()
        cap = np.inf if self.live is None else self.live
        return RuleSnapshot(
            coverage_holdout=self.params.get("coverage"),
            risk_alpha=self.policy.risk_alpha,
            risk_threshold=min(float(self.params["threshold"]), cap),
            risk_thresholds=None if per_class is None else tuple(min(float(t), cap) for t in per_class),
        )
