"""What reaches training from the label store's raw rows: one label per sample, aggregated over
its annotators (issue 24), with the samples held for a relabel left out.

Per sample, in row order (all rows of one id sit in one partition of the labels topic, so this
order is the same in a store the ingest wrote and in one rebuilt from the topic):

- a label from annotator X replaces X's earlier label (a correction); each annotator counts once;
- ``__undo__`` from X retracts X's label only; an undo with no annotator retracts every label;
- rows whose annotator is null count as one anonymous annotator, so a store of one annotator
  trains exactly as latest-wins did;
- ``__relabel__`` (published by the retrain job) holds the sample out of training and out of the
  evaluation labels until a newer human label arrives, which confirms the held label (the same
  class) or changes it; ``__tiebreak__`` holds nothing. Either marker after the sample's last
  human label means one more opinion was already asked for that label state.

Samples with one annotator, or unanimous ones, need no aggregation; the rest go to
``triage.quality.aggregate`` (``quality.aggregation``), weighted by ``annotators.estimate_accuracy``
on the overlapped samples. Without crowd-kit (the ``quality`` extra) the contested samples fall
back to a plain majority (ties: the label given first), with a warning logged once.
Everything is a function of the first ``upto`` rows.
"""

from __future__ import annotations

import gc
import logging
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional

from triage.lifecycle.labelstore import EDGE_CASE, MARKERS, RELABEL_MARK, UNDO, Row
from triage.quality.base import Annotation

log = logging.getLogger("triage.labelstore")
ANONYMOUS = ""  # the annotator of rows whose annotator is null
CONFIRMED, CHANGED = "confirmed", "changed"
_warned: set[str] = set()


@dataclass(slots=True)
class Sample:
    """One sample's state after the rows read so far."""

    votes: dict[str, tuple[int, Row]] = field(default_factory=dict)  # annotator -> (row number, their latest label row)
    held: Optional[str] = None  # the label a relabel marker holds (None: not held)
    asked: bool = False  # a marker follows the last human label
    # sent back by a relabel: picked because its label looked wrong, so its votes would bias
    # any estimate of the annotators' accuracy (or agreement) downwards
    relabelled: bool = False

    def labels(self) -> list[str]:
        return [r["label"] for _, r in self.votes.values()]


@dataclass(frozen=True)
class Release:
    """A held sample that got a new human label: at row ``row``, ``outcome`` confirmed | changed."""

    sample: str
    row: int
    outcome: str


@dataclass
class LabelView:
    """The aggregate of the first ``upto`` rows (``label_view``)."""

    upto: int
    method: str
    samples: dict[str, Sample]
    labels: dict[str, str]  # sample -> aggregated label (held samples included)
    releases: list[Release]
    human_rows: list[int]  # row numbers of human labels (not undo, not markers), ascending
    accuracy: dict[str, float]  # annotator -> estimated accuracy (leave-one-out), multi-annotator samples only
    fallback: bool = False  # crowd-kit missing: contested samples took a plain majority

    def row_of(self, sid: str) -> Row:
        """The row whose features and position stand for the sample: its latest vote."""
        return max(self.samples[sid].votes.values(), key=lambda t: t[0])[1]

    def training(self) -> dict[str, Row]:
        """sample -> its row carrying the aggregated label, held samples left out."""
        out: dict[str, Row] = {}
        with gc_paused():
            for sid, label in self.labels.items():
                if self.samples[sid].held is None:
                    row = self.row_of(sid)
                    out[sid] = row if row["label"] == label else {**row, "label": label}
        return out

    def overlapped(self) -> list[Annotation]:
        """Every vote of the samples labelled by two or more annotators, relabelled ones left
        out: what annotator accuracy and agreement are estimated from."""
        return overlapped(self.samples)

    def summary(self, since: int = 0) -> dict[str, int | str | bool]:
        """Counts for the version manifest; relabel outcomes among rows ``since`` and later."""
        multi = [s for s in self.samples.values() if len(s.votes) > 1]
        done = Counter(r.outcome for r in self.releases if r.row >= since)
        return {"aggregation": self.method, "samples": len(self.labels),
                "multi_annotator": len(multi),
                "contested": sum(len(set(s.labels())) > 1 for s in multi),
                "held": sum(s.held is not None for s in self.samples.values() if s.votes),
                "relabel_confirmed": done[CONFIRMED], "relabel_changed": done[CHANGED],
                "majority_fallback": self.fallback}


def overlapped(samples: dict[str, Sample]) -> list[Annotation]:
    """The votes annotator quality is estimated from: samples with two or more annotators that
    no relabel picked (those were picked for looking wrong: a biased sample of errors)."""
    return [Annotation(sid, w, r["label"]) for sid, s in samples.items() if len(s.votes) > 1 and not s.relabelled
            for w, (_, r) in s.votes.items()]


def _first_majority(labels: list[str]) -> str:
    """The most frequent label; a tie goes to the label given first."""
    counts = Counter(labels)
    best = max(counts.values())
    return next(lab for lab in labels if counts[lab] == best)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Reading the store makes a few small objects per row while every row (with its features)
    is alive: the cyclic collector would walk that heap again and again (10x the scan's time
    at 100k rows). Nothing read here makes cycles, so collection can wait until the end."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def scan(rows: Iterable[tuple[int, Row]]) -> tuple[dict[str, Sample], list[Release], list[int]]:
    """Per-sample state from the rows, in order (module doc)."""
    with gc_paused():
        return _scan(rows)


def _scan(rows: Iterable[tuple[int, Row]]) -> tuple[dict[str, Sample], list[Release], list[int]]:
    samples: dict[str, Sample] = {}
    releases: list[Release] = []
    human: list[int] = []
    for n, row in rows:
        sid, label = row["id"], row["label"]
        who = row.get("annotator") or ANONYMOUS
        s = samples.get(sid)
        if s is None:
            s = samples[sid] = Sample({})
        if label in MARKERS:
            s.asked = True
            if label == RELABEL_MARK:
                s.relabelled = True
                if s.votes and s.held is None:
                    s.held = _first_majority(s.labels())
            continue
        s.asked = False
        if label == UNDO:
            if who == ANONYMOUS:
                s.votes.clear()
            else:
                s.votes.pop(who, None)
            continue
        human.append(n)
        s.votes.pop(who, None)
        s.votes[who] = (n, row)
        if s.held is not None:
            releases.append(Release(sid, n, CONFIRMED if label == s.held else CHANGED))
            s.held = None
    return samples, releases, human


def _aggregate_contested(samples: dict[str, Sample], contested: list[str], method: str,
                         accuracy: dict[str, float], classes: int) -> tuple[dict[str, str], bool]:
    """Aggregated labels of the contested samples, and whether the plain-majority fallback ran."""
    from triage.extras import missing_modules

    if "crowd-kit" in missing_modules("quality"):
        if "crowd-kit" not in _warned:
            _warned.add("crowd-kit")
            log.warning("crowd-kit is not installed (the 'quality' extra): samples whose annotators disagree take a "
                        "plain majority instead of %r aggregation; install 'triage[quality]' in the retrain image",
                        method)
        return {sid: _first_majority(samples[sid].labels()) for sid in contested}, True
    from triage.quality.aggregate import aggregate

    rows = [Annotation(sid, w, r["label"]) for sid in contested for w, (_, r) in samples[sid].votes.items()]
    if method == "dawid-skene":  # EM learns from every overlapped sample, unanimous ones too
        rows = [Annotation(sid, w, r["label"]) for sid, s in samples.items() if len(s.votes) > 1
                for w, (_, r) in s.votes.items()]
    got = aggregate(rows, method, accuracy, classes=classes)  # type: ignore[arg-type]
    return {sid: got[sid] for sid in contested}, False


def label_view(rows: Iterable[tuple[int, Row]], upto: int, method: str = "weighted",
               classes: Optional[int] = None) -> LabelView:
    """The aggregate of ``rows`` (the store's first ``upto``) by ``method`` (quality.aggregation);
    ``classes``: how many classes the labels range over (default: the distinct labels seen)."""
    with gc_paused():
        return _label_view(rows, upto, method, classes)


def _label_view(rows: Iterable[tuple[int, Row]], upto: int, method: str, classes: Optional[int]) -> LabelView:
    samples, releases, human = _scan(rows)
    labels: dict[str, str] = {}
    contested: list[str] = []
    for sid, s in samples.items():
        if not s.votes:
            continue
        values = s.labels()
        if len(values) == 1 or len(set(values)) == 1:
            labels[sid] = values[0]
        else:
            labels[sid] = ""  # keeps arrival order; filled below
            contested.append(sid)
    accuracy: dict[str, float] = {}
    fallback = False
    if contested:
        from triage.quality.annotators import estimate_accuracy

        compared = overlapped(samples)
        accuracy = {w: q.accuracy for w, q in estimate_accuracy(compared).items()}
        if classes is None:
            votes = {r["label"] for sid in contested for _, r in samples[sid].votes.values()}
            classes = len(({lab for lab in labels.values() if lab} | votes) - {EDGE_CASE})
        got, fallback = _aggregate_contested(samples, contested, method, accuracy, max(classes, 2))
        labels.update(got)
    return LabelView(upto, method, samples, labels, releases, human, accuracy, fallback)
