"""What every quality step reads: raw labels, one row per (sample, annotator)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

from triage.extras import require_extra

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Annotation:
    """One human label: ``annotator`` named as the tool names them."""

    sample: str
    annotator: str
    label: str


def by_sample(annotations: Iterable[Annotation]) -> dict[str, list[Annotation]]:
    """Raw labels grouped per sample, in arrival order."""
    out: dict[str, list[Annotation]] = {}
    for a in annotations:
        out.setdefault(a.sample, []).append(a)
    return out


def overlapped(annotations: Iterable[Annotation], min_labels: int = 2) -> list[Annotation]:
    """The labels of samples that at least ``min_labels`` different annotators labelled (an
    annotator's repeated label of one sample counts once: their latest)."""
    out: list[Annotation] = []
    for rows in by_sample(annotations).values():
        latest = {a.annotator: a for a in rows}
        if len(latest) >= min_labels:
            out.extend(latest.values())
    return out


def frame(annotations: Sequence[Annotation]) -> "pd.DataFrame":
    """crowd-kit's input: columns ``task``, ``worker``, ``label`` (one row per annotator and
    sample: their latest label)."""
    require_extra("train", "label aggregation")
    import pandas as pd

    latest = {(a.sample, a.annotator): a.label for a in annotations}
    return pd.DataFrame([(t, w, lab) for (t, w), lab in latest.items()], columns=["task", "worker", "label"])


def weight_of(accuracy: float, classes: int) -> float:
    """The vote weight of an annotator with this accuracy under symmetric noise over
    ``classes`` classes: the log-odds of being right, log((K-1) a / (1-a)) (the optimal
    weighted-majority weight); clipped so that a perfect or worthless estimate stays finite."""
    import math

    a = min(max(accuracy, 1e-3), 1 - 1e-3)
    return max(math.log(max(classes - 1, 1) * a / (1 - a)), 0.0)
