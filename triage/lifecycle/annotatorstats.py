"""Annotator quality from the label store's aggregate, as the retrain job exports it.

Names are bounded: ``AnnotatorNames`` keeps at most ``top`` of them (the most active in the store
when the process starts, then the first new ones), the rest are ``other``; labels without an
annotator are ``anonymous``. Accuracy is each annotator's agreement with the aggregate on the
samples labelled by more than one annotator (audit samples labelled twice included), smoothed
towards ``PRIOR`` by ``PRIOR_WEIGHT`` samples so one disagreement does not read as 0.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Optional

from triage.lifecycle.labelview import ANONYMOUS, LabelView

log = logging.getLogger("triage.retrain")
OTHER = "other"
ANONYMOUS_NAME = "anonymous"
PRIOR, PRIOR_WEIGHT = 0.8, 4.0
_warned: set[str] = set()


class AnnotatorNames:
    """annotator -> the metric label naming them (at most ``top`` names, then ``other``)."""

    def __init__(self, top: int) -> None:
        self.top = top
        self.named: set[str] = set()

    def seed(self, annotators: Iterable[Optional[str]]) -> None:
        """Name the most active of ``annotators`` (one item per label) first."""
        for name, _ in Counter(a or ANONYMOUS_NAME for a in annotators).most_common():
            self(name)

    def __call__(self, annotator: Optional[str]) -> str:
        name = annotator or ANONYMOUS_NAME
        if name in self.named:
            return name
        if len(self.named) < self.top and name != OTHER:
            self.named.add(name)
            return name
        return OTHER


@dataclass(frozen=True)
class Accuracy:
    accuracy: float
    compared: int


def accuracies(view: LabelView, names: AnnotatorNames) -> dict[str, Accuracy]:
    """Metric name -> smoothed accuracy against the aggregate on overlapped samples (the
    annotators outside the named ones pooled as ``other``; relabelled samples left out, as in
    ``labelview.overlapped``). Only annotators compared at least once."""
    agreed, compared = Counter[str](), Counter[str]()
    for sid, s in view.samples.items():
        if len(s.votes) < 2 or s.relabelled or sid not in view.labels:
            continue
        for who, (_, row) in s.votes.items():
            name = names(None if who == ANONYMOUS else who)
            compared[name] += 1
            agreed[name] += int(row["label"] == view.labels[sid])
    return {w: Accuracy((agreed[w] + PRIOR * PRIOR_WEIGHT) / (compared[w] + PRIOR_WEIGHT), compared[w])
            for w in compared}


def agreement(view: LabelView) -> float:
    """Krippendorff's alpha over the overlapped samples; NaN when undefined or krippendorff is missing."""
    from triage.extras import missing_modules

    if "krippendorff" in missing_modules("quality"):
        if "krippendorff" not in _warned:
            _warned.add("krippendorff")
            log.warning("krippendorff is not installed (the 'quality' extra): inter-annotator agreement is not exported")
        return math.nan
    from triage.quality.annotators import agreement as alpha

    try:
        got = alpha(view.overlapped())
    except ValueError as exc:  # krippendorff refuses some degenerate tables; the metric is advisory
        log.warning("inter-annotator agreement not computed: %s", exc)
        return math.nan
    return math.nan if got is None else got
