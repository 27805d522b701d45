"""Live re-certification of the risk threshold from the audit slice. Pure: records in, numbers out.

Audit samples are a seeded uniformly random share of the auto-accepted predictions, and the
version that scored them never trained on them. Joined to their human labels they are fresh
certification rows for that version on today's traffic: the same Learn-then-Test procedure
(``triage.policies.risk.certify``) runs on them.

What the rows can certify. A row drawn while the scorers accepted ``u <= c`` (its *ceiling*) is a
uniform draw from the traffic with ``u <= c``; so for a threshold ``lam <= c`` the rows with
``u <= lam`` are a uniform draw from the traffic ``lam`` accepts, and nothing is known about
``lam > c``. The certificate therefore runs on the rows below the lowest ceiling of the version's
rows, and never certifies past it (nor past the threshold the version's manifest certified).
A row's ceiling is read from the threshold history (the live control's own changes, persisted in
the registry) at the row's Kafka timestamp: the lowest threshold in effect during the
``settle_ms`` before it (scorers apply a change within one registry poll), skipping ``NEVER``
(nothing is drawn while nothing is accepted). The same history and the same records give the
same ceilings, so a restarted audit consumer rebuilds the same state.

Decision (``decide``), with ``n`` rows eligible at the deployed threshold ``d`` (``u <= d`` and
ceiling ``>= d``) and ``ub`` their exact upper bound at level delta:

- **breach** when ``ub > alpha`` on at least ``min_rows`` rows, or when even the lower bound
  exceeds alpha (a clear drop is acted on before ``min_rows``): move to the largest threshold the
  live rows certify, which is ``NEVER`` (auto-accept stops) when none does. Tightening is always
  allowed: a certified threshold, or none.
- **loosen** when not in breach and the live rows certify ``lam > d``: only when at least
  ``min_rows`` rows are accepted at ``lam``; otherwise refused (and reported).
- otherwise keep ``d``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal, Optional, Sequence

import numpy as np

from triage.contracts.label import answer, standing
from triage.policies.risk import NEVER, certify, clopper_pearson_upper, min_accepted
from triage.settings import Acquisition

Action = Literal["keep", "tighten", "loosen", "refuse-loosen"]
UNBOUNDED = math.inf  # ceiling when the deployed threshold is unknown (no registry): one epoch


def uncertainty_of(acquisition: Acquisition, confidence: float, margin: float, entropy: float) -> float:
    """The scorer's uncertainty of a review request, from the scores it carries (the same
    float arithmetic as ``triage.scoring.acquisition``)."""
    if acquisition == "least-confidence":
        return 1.0 - confidence
    if acquisition == "margin":
        return 1.0 - margin
    return entropy


def default_min_rows(alpha: float, delta: float) -> int:
    """Rows the bound needs: the fewest on which one error still certifies alpha at level delta
    (77 for alpha 0.05, delta 0.1; on fewer, a single unlucky label decides)."""
    return min_accepted(alpha, delta, errors=1)


@dataclass(frozen=True)
class Change:
    """One threshold the live control set for a version, from ``since_ms`` (Unix ms) on."""

    threshold: float
    since_ms: int


def ceiling_at(ts_ms: int, base: float, history: Sequence[Change], settle_ms: int) -> float:
    """The lowest threshold any scorer may have accepted with while drawing a row at ``ts_ms``."""
    in_effect = [base]
    for change in history:  # ordered by since_ms
        if change.since_ms <= ts_ms - settle_ms:
            in_effect = [change.threshold]
        elif change.since_ms <= ts_ms:
            in_effect.append(change.threshold)
    drawable = [t for t in in_effect if t != NEVER]
    return min(drawable) if drawable else NEVER


@dataclass
class VersionRows:
    """The joined audit rows of one model version (one per sample id, labelled by its answers'
    ``standing`` label)."""

    u: dict[str, float] = field(default_factory=dict)
    wrong: dict[str, bool] = field(default_factory=dict)
    ts_ms: dict[str, int] = field(default_factory=dict)
    changes: int = 0  # bumped by every join or withdrawal: a certificate is recomputed only then

    def __len__(self) -> int:
        return len(self.wrong)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids = list(self.wrong)
        return (np.array([self.u[i] for i in ids], dtype=np.float64),
                np.array([self.wrong[i] for i in ids], dtype=bool),
                np.array([self.ts_ms[i] for i in ids], dtype=np.int64))


@dataclass(frozen=True)
class _Audit:
    version: str
    u: float
    predicted: str
    ts_ms: int


class LiveRows:
    """Joins audit review requests and labels by sample id, per model version. Duplicates (an
    at-least-once redelivery, a label published twice) count once. Per sample, each annotator
    holds one answer, as in training (``triage.lifecycle.labelview``): their later label replaces
    their earlier one, their undo (or ``None``) withdraws it, and an undo with no annotator
    withdraws every answer. The row's label is their majority, as training's majority
    aggregation reads it (``standing``); with none, or an edge case, the row is withdrawn. Memory is bounded by
    ``max_pending`` unjoined audits and labels (oldest forgotten first, counted)."""

    def __init__(self, max_pending: int = 100_000) -> None:
        self.max_pending = max_pending
        self._audits: dict[str, _Audit] = {}  # every audit seen (joined or not): a label may change
        self._unlabelled: OrderedDict[str, None] = OrderedDict()
        self._answers: dict[str, dict[str, str]] = {}  # id -> annotator -> answer, in answer order
        self._early: OrderedDict[str, None] = OrderedDict()  # ids answered before their audit came
        self.versions: dict[str, VersionRows] = {}
        self.forgotten = 0

    def add_audit(self, sample_id: str, version: str, u: float, predicted: str, ts_ms: int) -> None:
        if sample_id in self._audits:
            return  # redelivered: the first copy holds
        self._audits[sample_id] = audit = _Audit(version, u, predicted, ts_ms)
        if sample_id in self._early:
            del self._early[sample_id]
            self._join(sample_id, audit, self._label(sample_id))
        else:
            self._unlabelled[sample_id] = None
            self._trim(self._unlabelled, self._audits)

    def add_label(self, sample_id: str, label: Optional[str], annotator: Optional[str] = None) -> Optional[str]:
        """Feed a label: a class, ``EDGE_CASE``, or ``UNDO`` / ``None`` (the annotator withdraws
        theirs); returns the audited version it joined, if any."""
        answer(self._answers.setdefault(sample_id, {}), label, annotator)
        audit = self._audits.get(sample_id)
        if audit is None:
            self._early[sample_id] = None
            self._early.move_to_end(sample_id)
            self._trim(self._early, self._answers)
            return None
        self._unlabelled.pop(sample_id, None)
        self._join(sample_id, audit, self._label(sample_id))
        return audit.version

    def _label(self, sample_id: str) -> Optional[str]:
        return standing(self._answers.get(sample_id, {}))

    def _join(self, sample_id: str, audit: _Audit, label: Optional[str]) -> None:
        rows = self.versions.setdefault(audit.version, VersionRows())
        rows.changes += 1
        for column in (rows.u, rows.wrong, rows.ts_ms):  # a changed row moves last: the latest joined
            column.pop(sample_id, None)
        if label is not None:
            rows.u[sample_id], rows.ts_ms[sample_id] = audit.u, audit.ts_ms
            rows.wrong[sample_id] = audit.predicted != label

    def _trim(self, pending: OrderedDict, held: dict) -> None:  # type: ignore[type-arg]
        """Forget the oldest ``pending`` ids beyond ``max_pending``, with what ``held`` keeps of them."""
        while len(pending) > self.max_pending:
            sample_id, _ = pending.popitem(last=False)
            held.pop(sample_id, None)
            self.forgotten += 1


@dataclass(frozen=True)
class LiveCertificate:
    version: str
    deployed: float  # the threshold in force (manifest's, or the live control's last change)
    samples: int  # rows eligible at the deployed threshold
    errors: int
    upper_bound: float  # exact (1 - delta) upper bound of their error rate; 1.0 with no rows
    certified: float  # largest threshold the live rows certify (NEVER: none)
    certified_rows: int  # rows accepted at ``certified``
    breach: bool
    action: Action
    target: float  # the threshold to move to (== deployed when the action is keep / refuse)


def decide(version: str, rows: VersionRows, *, base: float, history: Sequence[Change], alpha: float,
           delta: float, min_rows: int, settle_ms: int) -> LiveCertificate:
    """The live certificate of one version and what to do about it (see the module doc).
    ``base``: the threshold the version's manifest certified (``UNBOUNDED`` when unknown)."""
    deployed = history[-1].threshold if history else base
    u, wrong, ts = rows.arrays()
    ceilings = np.array([ceiling_at(int(t), base, history, settle_ms) for t in ts], dtype=np.float64)
    eligible = (u <= deployed) & (ceilings >= deployed)
    n, errors = int(eligible.sum()), int(wrong[eligible].sum())
    ub = float(clopper_pearson_upper(errors, n, delta)) if n else 1.0
    lower = 1.0 - float(clopper_pearson_upper(n - errors, n, delta)) if n else 0.0
    breach = (n >= min_rows and ub > alpha) or lower > alpha

    floor = float(ceilings.min()) if len(ceilings) else NEVER
    evidence = u <= min(floor, base)
    cert = certify(u[evidence], wrong[evidence], alpha, delta) if evidence.any() else {"threshold": NEVER, "accepted": 0}
    certified, certified_rows = float(cert["threshold"]), int(cert["accepted"])

    action: Action = "keep"
    target = deployed
    if breach and certified < deployed:
        action, target = "tighten", certified
    elif not breach and certified > deployed:
        action, target = ("loosen", certified) if certified_rows >= min_rows else ("refuse-loosen", deployed)
    return LiveCertificate(version, deployed, n, errors, ub, certified, certified_rows, breach, action, target)
