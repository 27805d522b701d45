"""Which stored labels the retrain job sends back to review, and the records it publishes.

- ``tiebreaks``: samples whose labels have no strict majority, with fewer than
  ``max_annotators`` annotators: one more annotator is asked (reason ``tiebreak``).
- ``relabels``: stored labels that confident learning (``triage.quality.issues``, cleanlab)
  flags as likely wrong, most likely first, at most ``limit`` (reason ``relabel``); they are
  held out of training until a newer human label arrives (labelview.py).

A sample already asked for its current label state (a marker after its last human label) is
never asked again. Each ask is published as a review request and as a marker label on the labels
topic, so the hold and the "already asked" survive a rebuild of the store from the topic.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from triage.contracts import ReviewRequest, ScoreFields, TopClass, encode, encode_label
from triage.contracts.output import RELABEL, TIEBREAK
from triage.lifecycle.labelstore import EDGE_CASE, RELABEL_MARK, TIEBREAK_MARK
from triage.lifecycle.labelview import ANONYMOUS, LabelView
from triage.quality.consensus import has_majority

if TYPE_CHECKING:
    from triage.settings import QualitySettings

log = logging.getLogger("triage.retrain")
ASKER = "triage-retrain"  # the annotator named on the markers
PRIORITY = 1.0  # as high as the scorer's most uncertain sample: these labels are already paid for
MAX_ANNOTATORS = 10  # ReviewRequest.annotators' bound
MARK = {RELABEL: RELABEL_MARK, TIEBREAK: TIEBREAK_MARK}


@dataclass(frozen=True)
class Ask:
    sample: str
    reason: str  # RELABEL | TIEBREAK
    features: list[float]
    annotators: int  # distinct annotators wanted in all: the current ones + 1
    labelled_by: list[str]  # named annotators who labelled it (anonymous ones cannot be named)
    probs: dict[str, float]  # class -> share shown as the "prediction" (votes, or out-of-fold probabilities)


def _ask(view: LabelView, sid: str, reason: str, probs: dict[str, float]) -> Ask:
    votes = view.samples[sid].votes
    return Ask(sid, reason, list(view.row_of(sid)["features"]), min(len(votes) + 1, MAX_ANNOTATORS),
               sorted(w for w in votes if w != ANONYMOUS), probs)


def _askable(view: LabelView, sid: str, max_annotators: int) -> bool:
    s = view.samples[sid]
    return bool(s.votes) and not s.asked and s.held is None and len(s.votes) < max_annotators


def tiebreaks(view: LabelView, max_annotators: int) -> list[Ask]:
    """Samples without a strict majority that may still get one more annotator, in store order."""
    out = []
    for sid in view.labels:
        labels = view.samples[sid].labels()
        if len(labels) >= 2 and not has_majority(labels) and _askable(view, sid, max_annotators):
            out.append(_ask(view, sid, TIEBREAK, {lab: labels.count(lab) / len(labels) for lab in set(labels)}))
    return out


def relabels(view: LabelView, classes: Sequence[str], limit: int, *, max_annotators: int,
             trusted: Optional[tuple[np.ndarray, np.ndarray]] = None, seed: int = 0,
             skip: frozenset[str] = frozenset()) -> list[Ask]:
    """Up to ``limit`` stored labels cleanlab flags, the most likely wrong first."""
    if limit <= 0:
        return []
    from triage.extras import missing_modules

    if "cleanlab" in missing_modules("quality"):
        log.warning("cleanlab is not installed (the 'quality' extra): no relabel requests this retrain")
        return []
    from triage.quality.issues import label_issues, out_of_fold_probs

    rows = view.training()
    ids = [sid for sid, r in rows.items() if r["label"] != EDGE_CASE]
    if len(ids) < 2:
        return []
    X = np.asarray([rows[sid]["features"] for sid in ids], dtype=np.float64)
    y = np.asarray([rows[sid]["label"] for sid in ids], dtype=str)
    names = sorted(set(classes) | set(y.tolist()))
    probs = out_of_fold_probs(X, y, names, trusted=trusted, seed=seed)
    out: list[Ask] = []
    for i in label_issues(y, probs, names):
        sid = ids[int(i)]
        if sid in skip or not _askable(view, sid, max_annotators):
            continue
        out.append(_ask(view, sid, RELABEL, {c: float(p) for c, p in zip(names, probs[int(i)])}))
        if len(out) >= limit:
            break
    return out


def asks_for(view: LabelView, classes: Sequence[str], new_labels: int, quality: "QualitySettings", *,
             trusted: Optional[tuple[np.ndarray, np.ndarray]] = None, seed: int = 0) -> list[Ask]:
    """What the retrain job asks at a retrain after ``new_labels`` human labels: the tiebreaks
    (with ``consensus_tiebreak``), then up to ``relabel_share`` x ``new_labels`` relabels
    (``triage simulate`` runs this too, so its arms measure what the job asks)."""
    asks = tiebreaks(view, quality.consensus_max_annotators) if quality.consensus_tiebreak else []
    limit = int(quality.relabel_share * new_labels)
    if limit > 0:
        try:
            asks += relabels(view, classes, limit, max_annotators=quality.consensus_max_annotators, trusted=trusted,
                             seed=seed, skip=frozenset(a.sample for a in asks))
        except Exception:  # advisory: a failed check must not stop the retrain, and is never silent
            log.exception("label issue check failed; no relabel requests this retrain")
    return asks


def review_request(ask: Ask, model_version: str) -> bytes:
    """The review request of an ask: ``predicted`` is the likeliest class of ``ask.probs``."""
    ranked = sorted(ask.probs.items(), key=lambda kv: (-kv[1], kv[0]))
    p = np.clip(np.asarray([v for _, v in ranked], dtype=np.float64), 0.0, 1.0)
    margin = float(p[0] - p[1]) if len(p) > 1 else float(p[0])
    q = p[p > 0] / p.sum() if p.sum() > 0 else p[:0]
    entropy = float(-(q * np.log(q)).sum() / math.log(len(p))) if len(p) > 1 and len(q) else 0.0
    return encode(ReviewRequest(
        ask.sample, ask.features, ask.reason, ranked[0][0], float(p[0]), ScoreFields(margin, max(entropy, 0.0), None),
        PRIORITY, model_version, None, [TopClass(c, float(min(max(v, 0.0), 1.0))) for c, v in ranked[:3]],
        ask.annotators, ask.labelled_by))


def marker(ask: Ask) -> bytes:
    """The marker label of an ask (labels topic, keyed by the sample id like every label)."""
    return encode_label(ask.sample, MARK[ask.reason], annotator=ASKER)
