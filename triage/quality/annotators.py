"""Annotator quality: each annotator's accuracy, and how much annotators agree.

- ``accuracy_against``: agreement with a reference label per sample (the aggregate, the audit
  samples' labels, gold samples), counted on the samples that reference covers; by default
  only on overlapped samples (labelled by two or more annotators), where the aggregate is
  more than the annotator's own word.
- ``estimate_accuracy``: leave-one-out, for weighting votes: on each overlapped sample an
  annotator is compared with the strict majority of the OTHER annotators' labels (skipped
  when the others tie), so a two-label disagreement is not scored as a win for whoever the
  aggregate sided with. Smoothed towards ``prior`` by ``prior_weight`` pseudo-samples, so a
  new annotator starts at the prior rather than at 0 or 1.
- ``agreement``: Krippendorff's alpha (nominal) over the overlapped samples, via
  ``krippendorff``: 1 perfect agreement, 0 chance, below 0 systematic disagreement.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from triage.extras import require_extra
from triage.quality.base import Annotation, by_sample, overlapped


@dataclass(frozen=True)
class AnnotatorQuality:
    annotator: str
    accuracy: float  # smoothed share of agreements with the reference
    agreed: int
    compared: int  # labels compared with a reference
    labels: int  # labels given in all


def _quality(agreed: Counter[str], compared: Counter[str], labels: Counter[str], prior: float,
             prior_weight: float) -> dict[str, AnnotatorQuality]:
    return {w: AnnotatorQuality(w, (agreed[w] + prior * prior_weight) / (compared[w] + prior_weight) if
                                compared[w] + prior_weight > 0 else float("nan"), agreed[w], compared[w], labels[w])
            for w in sorted(labels)}


def accuracy_against(annotations: Sequence[Annotation], reference: Mapping[str, str], *, only_overlapped: bool = True,
                     prior: float = 0.5, prior_weight: float = 0.0) -> dict[str, AnnotatorQuality]:
    """Per annotator: their latest label per sample against ``reference[sample]``."""
    agreed, compared, labels = Counter[str](), Counter[str](), Counter[str]()
    counted = set(a.sample for a in overlapped(annotations)) if only_overlapped else None
    for sample, rows in by_sample(annotations).items():
        for annotator, label in {a.annotator: a.label for a in rows}.items():
            labels[annotator] += 1
            if sample in reference and (counted is None or sample in counted):
                compared[annotator] += 1
                agreed[annotator] += int(label == reference[sample])
    return _quality(agreed, compared, labels, prior, prior_weight)


def estimate_accuracy(annotations: Sequence[Annotation], *, prior: float = 0.8,
                      prior_weight: float = 4.0) -> dict[str, AnnotatorQuality]:
    """Per annotator: leave-one-out agreement with the other annotators' strict majority."""
    agreed, compared, labels = Counter[str](), Counter[str](), Counter[str]()
    for rows in by_sample(annotations).values():
        latest = {a.annotator: a.label for a in rows}
        for annotator, label in latest.items():
            labels[annotator] += 1
            others = Counter(lab for w, lab in latest.items() if w != annotator)
            if not others:
                continue
            top = others.most_common(2)
            if len(top) > 1 and top[0][1] == top[1][1]:
                continue  # the others tie: no verdict
            compared[annotator] += 1
            agreed[annotator] += int(label == top[0][0])
    return _quality(agreed, compared, labels, prior, prior_weight)


def agreement(annotations: Sequence[Annotation]) -> Optional[float]:
    """Krippendorff's alpha (nominal) over the overlapped samples; None with fewer than two of
    them or a single label value (alpha is undefined)."""
    rows = overlapped(annotations)
    samples = sorted({a.sample for a in rows})
    values = sorted({a.label for a in rows})
    if len(samples) < 2 or len(values) < 2:
        return None
    require_extra("quality", "inter-annotator agreement")
    import krippendorff
    import numpy as np

    workers = sorted({a.annotator for a in rows})
    data = np.full((len(workers), len(samples)), np.nan)
    w_at, s_at, v_at = ({k: i for i, k in enumerate(x)} for x in (workers, samples, values))
    for a in rows:
        data[w_at[a.annotator], s_at[a.sample]] = v_at[a.label]
    return float(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"))
