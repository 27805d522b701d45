"""One label per sample from its raw labels, instead of latest-wins.

- ``majority``: the most frequent label (crowd-kit ``MajorityVote``); a tie goes to the
  label given first, as latest-wins would have kept one of them anyway.
- ``weighted``: majority with each vote weighted by its annotator's estimated accuracy
  (``annotators.estimate_accuracy``) as log-odds (``base.weight_of``), crowd-kit
  ``MajorityVote`` with skills: a tie between a careful and a careless annotator goes to the
  careful one.
- ``dawid-skene``: crowd-kit ``DawidSkene``, which estimates every annotator's confusion
  matrix and the class priors by EM from all the labels at once.

An annotator's repeated label of one sample counts once (their latest: a correction). The
raw labels are kept by the caller; this only computes the aggregate.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator, Literal, Mapping, Optional, Sequence

from triage.quality.base import Annotation, by_sample, frame, weight_of

Method = Literal["majority", "weighted", "dawid-skene"]
METHODS: tuple[Method, ...] = ("majority", "weighted", "dawid-skene")


def aggregate(annotations: Sequence[Annotation], method: Method = "majority",
              accuracy: Optional[Mapping[str, float]] = None, classes: int = 2,
              default_accuracy: float = 0.8) -> dict[str, str]:
    """sample -> aggregated label. ``accuracy`` (``weighted``): annotator -> estimated accuracy
    (missing ones get ``default_accuracy``); ``classes``: how many classes the labels range over."""
    if method not in METHODS:
        raise ValueError(f"unknown aggregation {method!r}; choose from {', '.join(METHODS)}")
    groups = by_sample(annotations)
    out: dict[str, str] = {}
    contested: list[Annotation] = []
    for sample, rows in groups.items():
        latest = {a.annotator: a.label for a in rows}
        if len(set(latest.values())) == 1:
            out[sample] = next(iter(latest.values()))  # unanimous (or one label): nothing to weigh
        else:
            contested.extend(rows)
    if method == "dawid-skene":
        return _dawid_skene(annotations) if contested else out
    if not contested:
        return out
    with _quiet():
        from crowdkit.aggregation import MajorityVote
    data = frame(contested)
    if method == "weighted":
        import pandas as pd

        known = accuracy or {}
        workers = data["worker"].unique()
        skills = pd.Series({w: weight_of(known.get(w, default_accuracy), classes) for w in workers})
        # every weight 0 (all estimated at chance) would make every label tie: equal weights then
        skills = skills if skills.sum() > 0 else pd.Series(1.0, index=workers)
        with _quiet():
            proba = MajorityVote().fit_predict_proba(data, skills)
    else:
        with _quiet():
            proba = MajorityVote().fit_predict_proba(data)
    for sample, row in proba.iterrows():
        best = row.max()
        tied = {str(lab) for lab, p in row.items() if p >= best - 1e-12}
        first = next(a.label for a in groups[str(sample)] if a.label in tied)  # ties: the label given first
        out[str(sample)] = first
    return out


@contextmanager
def _quiet() -> Iterator[None]:
    """crowd-kit 1.4 calls ``DataFrame.eval(inplace=True)``, which pandas 3.1 deprecates
    (removed in pandas 4, which the train extra excludes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


def _dawid_skene(annotations: Sequence[Annotation]) -> dict[str, str]:
    """EM over every label at once: unanimous samples inform the annotators' confusion matrices."""
    with _quiet():
        from crowdkit.aggregation import DawidSkene

    with _quiet():
        result = DawidSkene(n_iter=100).fit_predict(frame(annotations))
    return {str(k): str(v) for k, v in result.items()}
