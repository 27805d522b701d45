"""Consensus where it pays: how many annotators each review request gets, within a budget.

A batch of review requests arrives in priority order (most uncertain first). The first
``share`` of them get ``size`` annotators, the rest one; when a sample's labels have no strict
majority (two that disagree) and ``tiebreak`` is on, one more annotator is asked, up to
``max_annotators``. With ``doubt_below``, a lone label from an annotator whose estimated
accuracy (``annotators.estimate_accuracy``) is below it gets a second opinion too. Every annotation is one human action of the budget, and the budget is
never exceeded: a request that cannot get its first label is not asked at all, and one that
cannot get its planned second keeps the one it has.

Relabel requests (``issues``) use the same rule with the stored labels as ``prior``: one new
annotator, and a tiebreak when the new label disagrees.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence

from triage.quality.base import Annotation

# ask(sample, annotators who already labelled it) -> a label from another annotator, or None
# when nobody else is left
Ask = Callable[[str, frozenset[str]], Optional[Annotation]]


def has_majority(labels: Sequence[str]) -> bool:
    """One label holds more than half of the votes (one label alone does)."""
    if not labels:
        return False
    return Counter(labels).most_common(1)[0][1] * 2 > len(labels)


@dataclass(frozen=True)
class ConsensusPolicy:
    share: float = 0.0  # of a batch's requests, the most uncertain first, that get `size` annotators
    size: int = 2
    tiebreak: bool = True  # one more annotator while the labels have no strict majority
    max_annotators: int = 3
    # a second opinion for a lone label from an annotator whose estimated accuracy is below this (0: off)
    doubt_below: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.share <= 1.0 or self.size < 1 or self.max_annotators < self.size:
            raise ValueError(f"invalid consensus policy {self}")

    def planned(self, rank: int, requests: int) -> int:
        """Annotators first asked for the request at ``rank`` (0: highest priority) of ``requests``."""
        return self.size if rank < round(self.share * requests) else 1

    def needs_more(self, labels: Sequence[str]) -> bool:
        return self.tiebreak and len(labels) < self.max_annotators and len(labels) >= 2 and not has_majority(labels)

    def doubts(self, labels: Sequence[Annotation], accuracy: Mapping[str, float]) -> bool:
        """A lone label from an annotator estimated below ``doubt_below`` gets a second opinion."""
        return (len(labels) == 1 and self.max_annotators > 1
                and accuracy.get(labels[0].annotator, 1.0) < self.doubt_below)


@dataclass
class Collected:
    annotations: list[Annotation] = field(default_factory=list)  # the new labels, in the order asked
    spent: int = 0  # human actions: one per annotation
    samples: list[str] = field(default_factory=list)  # requests that got at least one new label


def collect(policy: ConsensusPolicy, requests: Sequence[str], budget: int, ask: Ask,
            prior: Optional[Mapping[str, Sequence[Annotation]]] = None,
            planned: Optional[Sequence[int]] = None, accuracy: Optional[Mapping[str, float]] = None) -> Collected:
    """Ask annotators for ``requests`` (in priority order) within ``budget`` actions.

    ``prior``: labels a sample already has (a relabel request), counted for the majority and
    never asked of the same annotator again. ``planned``: first-round annotators per request
    (default ``policy.planned``). ``accuracy``: annotator -> estimated accuracy, for
    ``doubt_below``. Second opinions and tiebreaks are asked as soon as a request's first round
    disagrees, before later requests: the most uncertain samples come first."""
    out = Collected()
    prior = prior or {}
    for rank, sample in enumerate(requests):
        if out.spent >= budget:
            break
        had = list(prior.get(sample, ()))
        want = planned[rank] if planned is not None else policy.planned(rank, len(requests))
        new: list[Annotation] = []

        def one() -> bool:
            got = ask(sample, frozenset(a.annotator for a in (*had, *new)))
            if got is None:
                return False
            new.append(got)
            out.spent += 1
            return True

        for _ in range(want):
            if out.spent >= budget or not one():
                break
        if out.spent < budget and new and policy.doubts([*had, *new], accuracy or {}):
            one()
        while out.spent < budget and policy.needs_more([a.label for a in (*had, *new)]) and one():
            pass
        if new:
            out.annotations.extend(new)
            out.samples.append(sample)
    return out
