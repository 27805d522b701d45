"""Annotation states -> label events, exactly once per change. Pure: no HTTP, no Kafka.

``Ledger`` holds what the bridge has published: per live annotation, its sample and label.
It is rebuilt at start-up from the bridge's own records on the labels topic (their ``origin``),
so the cursor lives in Kafka, not on local disk. ``observe`` compares
one task's annotations with the ledger and returns the label events to publish; ``apply``
moves the ledger once an event is acknowledged. ``reconcile`` drives one listing through the
ledger: a task missing from a listing is only retracted once a direct fetch says it is gone.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

from triage.contracts import Label, LabelOrigin
from triage.lifecycle.labelstore import UNDO

SOURCE = "label-studio"  # LabelOrigin.tool of the bridge's labels


@dataclass(frozen=True)
class LabelEvent:
    """One label to publish: ``label`` is a class name or ``UNDO``."""

    sample_id: str
    label: str
    annotation_id: int
    task_id: int
    annotator: Optional[str] = None
    features: Optional[list[float]] = None
    deleted: Optional[int] = None  # the annotation whose removal this event reports
    updated_at: Optional[str] = None  # Label Studio's time of the state published (not sent)

    @property
    def kind(self) -> str:
        return "undo" if self.label == UNDO else "label"

    @property
    def origin(self) -> LabelOrigin:
        return LabelOrigin(SOURCE, self.annotation_id, self.task_id, self.deleted)


@dataclass(frozen=True)
class Invalid:
    """An annotation or task the bridge cannot turn into a label; ``reason`` is a metric label."""

    reason: str  # unknown_choice | no_sample_id
    detail: str


@dataclass(frozen=True)
class Live:
    sample_id: str
    task_id: int
    label: str
    annotator: Optional[str] = None

    def as_annotation(self, ann_id: int) -> dict[str, Any]:
        """The shape Label Studio gives an annotation, for comparing against the ledger."""
        return {"id": ann_id, "completed_by": {"email": self.annotator} if self.annotator else None,
                "result": [{"type": "choices", "value": {"choices": [self.label]}}]}


def _choice(annotation: Mapping[str, Any]) -> Optional[str]:
    for region in annotation.get("result") or []:
        if isinstance(region, Mapping) and region.get("type") == "choices":
            choices = (region.get("value") or {}).get("choices") or []
            if choices:
                return str(choices[0])
    return None


def annotator_of(annotation: Mapping[str, Any], users: Mapping[int, str]) -> Optional[str]:
    """The annotator's name, the same whichever path saw the annotation: Label Studio sends a
    user id (``completed_by``); ``users`` maps ids to e-mail addresses."""
    who = annotation.get("completed_by")
    if isinstance(who, Mapping):  # the ledger's own reconstruction of a published annotation
        return str(who.get("email") or who.get("id"))
    if isinstance(who, int) and who in users:
        return users[who]
    name = annotation.get("created_username")
    if isinstance(name, str) and name.strip():
        return name.split(",")[0].strip()
    return f"label-studio-user-{who}" if who is not None else None


@dataclass
class Ledger:
    live: dict[int, Live] = field(default_factory=dict)
    deleted: set[int] = field(default_factory=set)  # Label Studio never reuses an annotation id
    seen_at: dict[int, str] = field(default_factory=dict)  # updated_at of the state last published
    _by_sample: dict[str, set[int]] = field(default_factory=dict)  # sample id -> its ids in ``live``
    # deleted annotations whose answer still stands: the bridge before per-annotator retractions
    # reported a deletion by republishing another person's label (``replay`` finds them)
    owed: dict[int, Live] = field(default_factory=dict)

    def labelled_samples(self) -> set[str]:
        return {entry.sample_id for entry in self.live.values()}

    def annotations_per_sample(self) -> Counter[str]:
        """Sample id -> its live annotations (one per person: Label Studio serves a task once each)."""
        return Counter(entry.sample_id for entry in self.live.values())

    def apply(self, event: LabelEvent) -> None:
        if event.deleted is not None:
            self._drop(event.deleted)
            self.deleted.add(event.deleted)
        if event.updated_at:
            self.seen_at[event.annotation_id] = event.updated_at
        if event.label == UNDO:
            # what the undo withdraws from training leaves the ledger too (not deleted, only no
            # longer published): an annotation of it that stands is published again, by the
            # events that follow it or, if they were lost to a crash, by the next listing
            for ann_id in [a for a in self._by_sample.get(event.sample_id, ())
                           if event.annotator is None or self.live[a].annotator == event.annotator]:
                self._drop(ann_id)
        else:
            self.deleted.discard(event.annotation_id)  # published again: it is live (it reappeared)
            self._drop(event.annotation_id)
            self.live[event.annotation_id] = Live(event.sample_id, event.task_id, event.label, event.annotator)
            self._by_sample.setdefault(event.sample_id, set()).add(event.annotation_id)

    def _drop(self, ann_id: int) -> None:
        gone = self.live.pop(ann_id, None)
        if gone is not None:
            same = self._by_sample[gone.sample_id]
            same.discard(ann_id)
            if not same:
                del self._by_sample[gone.sample_id]

    def unlisted(self, listed: Iterable[int]) -> dict[int, str]:
        """Task id -> sample id of every task with a live annotation that is not in ``listed``."""
        seen = set(listed)
        return {e.task_id: e.sample_id for e in self.live.values() if e.task_id not in seen}

    def live_tasks(self, task_ids: Iterable[int]) -> dict[int, str]:
        """Task id -> sample id of each of ``task_ids`` that has a live annotation."""
        wanted = set(task_ids)
        return {e.task_id: e.sample_id for e in self.live.values() if e.task_id in wanted}

    def observe_gone(self, task_id: int, sample_id: str, classes: Sequence[str]) -> list[Union[LabelEvent, Invalid]]:
        """A task Label Studio says does not exist (404): retract every live annotation of it."""
        return self.observe({"id": task_id, "data": {"sample_id": sample_id}}, classes, [])

    def replay(self, label: Label) -> None:
        """Replay one record of the labels topic (only the bridge's own records count)."""
        origin = label.origin
        if not (isinstance(origin, LabelOrigin) and origin.tool == SOURCE):
            return
        gone = self.live.get(origin.deleted) if origin.deleted is not None else None
        if label.label == UNDO:
            self.owed = {a: e for a, e in self.owed.items()
                         if e.sample_id != label.id or (label.annotator is not None and e.annotator != label.annotator)}
        elif gone is not None and gone.annotator != label.annotator:
            self.owed[origin.deleted] = gone  # type: ignore[index]
        elif origin.deleted is None:
            self.owed.pop(origin.annotation, None)  # published again (it reappeared): its answer is due
        self.apply(LabelEvent(label.id, label.label, origin.annotation, origin.task, label.annotator,
                              deleted=origin.deleted))

    def repairs(self) -> list[LabelEvent]:
        """After a replay: the retractions ``owed``, as this bridge makes them (then forgotten)."""
        out: list[LabelEvent] = []
        for ann_id, gone in sorted(self.owed.items()):
            if ann_id in self.live:
                continue
            rest = {a: self.live[a] for a in self._by_sample.get(gone.sample_id, ())}
            out.extend(_retraction(ann_id, gone, rest, None))
        self.owed = {}
        return out

    def observe_annotation(self, task: Mapping[str, Any], annotation: Mapping[str, Any],
                           classes: Sequence[str], users: Optional[Mapping[int, str]] = None
                           ) -> list[Union[LabelEvent, Invalid]]:
        """One annotation as a webhook reports it (created or updated, maybe skipped): only
        its own change; other annotations of the task are the reconcile's business."""
        ann_id = int(annotation.get("id") or 0)
        others = [e.as_annotation(a) for a, e in self.live.items()
                  if e.task_id == int(task.get("id") or 0) and a != ann_id]
        return self.observe(task, classes, others + [annotation], users, now=False)

    def observe_deleted(self, annotation_ids: Sequence[int]) -> list[Union[LabelEvent, Invalid]]:
        """Annotations a webhook reports deleted (one webhook may carry several, a bulk delete):
        retract each one the ledger holds; none of them stands in for another."""
        out: list[Union[LabelEvent, Invalid]] = []
        batch = frozenset(a for a in annotation_ids if a in self.live)
        classes = [e.label for e in self.live.values()]
        for ann_id in dict.fromkeys(a for a in annotation_ids if a in batch):
            gone = self.live[ann_id]
            others = [e.as_annotation(a) for a, e in self.live.items() if e.task_id == gone.task_id and a not in batch]
            task = {"id": gone.task_id, "data": {"sample_id": gone.sample_id}}
            out.extend(e for e in self.observe(task, classes, others, without=batch)
                       if isinstance(e, LabelEvent) and e.deleted == ann_id)
        return out

    def observe(self, task: Mapping[str, Any], classes: Sequence[str],
                annotations: Optional[Sequence[Mapping[str, Any]]] = None,
                users: Optional[Mapping[int, str]] = None, *, now: bool = True,
                without: frozenset[int] = frozenset()) -> list[Union[LabelEvent, Invalid]]:
        """What changed in ``task`` (its annotations, or ``annotations`` when given) since the
        ledger last saw it. Skipped (cancelled) annotations are not labels; an annotation that
        disappeared (or became skipped) is retracted (``_retraction``): its annotator's answer
        is withdrawn, then their other annotations of the sample published again. A state
        older than the one published is ignored (a late webhook, a late skip too). ``now``: the task as Label Studio holds it now (a listing or
        a fetch), where a retracted annotation that is there after all is published again; a
        webhook (``now=False``) may be late and never brings a deleted annotation back.
        ``without``: annotations of the sample deleted too, so none of them stands in."""
        data = task.get("data") or {}
        sample_id = data.get("sample_id")
        task_id = int(task.get("id") or 0)
        anns = list(task.get("annotations") or []) if annotations is None else list(annotations)
        if not isinstance(sample_id, str) or not sample_id:
            return [Invalid("no_sample_id", f"task {task_id} has no data.sample_id")] if anns else []
        features = data.get("features") if isinstance(data.get("features"), list) else None
        out: list[Union[LabelEvent, Invalid]] = []
        current: dict[int, str] = {}
        who: dict[int, Optional[str]] = {}
        stamps: dict[int, str] = {}
        for ann in anns:
            ann_id = int(ann.get("id") or 0)
            if ann_id in self.deleted and not now:
                continue
            updated = ann.get("updated_at")
            if isinstance(updated, str) and updated < self.seen_at.get(ann_id, ""):
                if ann_id in self.live:
                    current[ann_id], who[ann_id] = self.live[ann_id].label, self.live[ann_id].annotator
                continue  # an older state than the one already published (a late skip too)
            if ann.get("was_cancelled"):
                continue
            choice = _choice(ann)
            if choice is None:
                continue  # an empty draft: nothing chosen yet
            if choice not in classes:
                out.append(Invalid("unknown_choice", f"annotation {ann_id} of {sample_id!r} chose {choice!r}, "
                                   f"not one of the model's classes"))
                continue
            current[ann_id] = choice
            who[ann_id] = annotator_of(ann, users or {})
            if isinstance(updated, str):
                stamps[ann_id] = updated
        known = {a: e for a, e in self.live.items() if e.task_id == task_id}
        # the task's sample id changed (its data was edited): its answers leave the old sample first
        moved = {a: e for a, e in known.items() if e.sample_id != sample_id}
        for ann_id, gone in sorted(moved.items()):
            out.extend(_retraction(ann_id, gone, self._elsewhere(gone.sample_id, task_id, without), None))
        for ann_id in sorted(current):
            if ann_id in moved or known.get(ann_id) is None or known[ann_id].label != current[ann_id]:
                out.append(LabelEvent(sample_id, current[ann_id], ann_id, task_id, who[ann_id], features,
                                      updated_at=stamps.get(ann_id)))
        remaining = self._elsewhere(sample_id, task_id, without)
        remaining.update((a, Live(sample_id, task_id, current[a], who[a])) for a in current)
        for ann_id in sorted(a for a in known if a not in current and a not in moved):
            out.extend(_retraction(ann_id, known[ann_id], remaining, features))
        return out

    def _elsewhere(self, sample_id: str, task_id: int, without: frozenset[int]) -> dict[int, Live]:
        """The live annotations of ``sample_id`` in its other tasks."""
        return {a: self.live[a] for a in self._by_sample.get(sample_id, ())
                if self.live[a].task_id != task_id and a not in without}


def _retraction(ann_id: int, gone: Live, remaining: Mapping[int, Live],
                features: Optional[list[float]]) -> list[LabelEvent]:
    """The events that retract annotation ``ann_id`` (``gone``) as training reads labels, one
    answer per annotator: an undo of its annotator's answer, other people's answers untouched,
    then their other annotations of the sample, which stand, published again. An undo with no
    annotator withdraws every answer, so after an anonymous one every remaining annotation is."""
    undo = LabelEvent(gone.sample_id, UNDO, ann_id, gone.task_id, gone.annotator, deleted=ann_id)
    again = sorted(a for a, e in remaining.items() if gone.annotator is None or e.annotator == gone.annotator)
    return [undo, *(LabelEvent(gone.sample_id, remaining[a].label, a, remaining[a].task_id, remaining[a].annotator,
                               features, deleted=ann_id) for a in again)]


Change = Union[LabelEvent, Invalid]


def reconcile(ledger: Ledger, listed: Iterable[Mapping[str, Any]], classes: Sequence[str], *,
              publish: Callable[[list[Change]], Any], fetch: Optional[Callable[[int], Optional[Mapping[str, Any]]]],
              users: Optional[Mapping[int, str]] = None) -> set[int]:
    """Compare a listing with the ledger, task by task; ``publish`` must publish and apply each
    list of changes before the next is computed. Returns the ids of the tasks listed.

    With ``fetch`` (a full listing), every task with a live annotation that the listing missed is
    fetched directly: ``fetch`` returns the task, or None when Label Studio says it does not exist
    (404). Only then is it retracted; a listing can miss a task that exists (pages shifted under
    a concurrent insert or delete), so absence alone proves nothing. Without ``fetch`` (a
    listing of changed tasks only), absent tasks are left alone."""
    seen: set[int] = set()
    for task in listed:
        task_id = int(task.get("id") or 0)
        if task_id in seen:
            continue  # listed twice (pages shifted): judged once
        seen.add(task_id)
        publish(ledger.observe(task, classes, users=users))
    if fetch is not None:
        confirm(ledger, ledger.unlisted(seen), classes, publish=publish, fetch=fetch, users=users)
    return seen


def confirm(ledger: Ledger, suspects: Mapping[int, str], classes: Sequence[str], *,
            publish: Callable[[list[Change]], Any], fetch: Callable[[int], Optional[Mapping[str, Any]]],
            users: Optional[Mapping[int, str]] = None) -> None:
    """Tasks (id -> sample id) that may be gone, each fetched directly: only one Label Studio
    answers with 404 for has its labels retracted; one that exists is compared as listed."""
    for task_id, sample_id in sorted(suspects.items()):
        found = fetch(task_id)
        publish(ledger.observe_gone(task_id, sample_id, classes) if found is None
                else ledger.observe(found, classes, users=users))
