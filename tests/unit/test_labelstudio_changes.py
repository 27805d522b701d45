"""The bridge's pure parts: review -> task, annotation states -> label events (exactly once)."""

from __future__ import annotations

import base64
import copy
import xml.etree.ElementTree as ET
from typing import Callable, Optional

from hypothesis import given, settings
from hypothesis import strategies as st

from triage.contracts.label import answer
from triage.contracts import ReviewRequest, ScoreFields, TopClass, decode_label, encode_label
from triage.lifecycle.labelstore import UNDO
from tests.profiles import examples
from triage.annotation.labelstudio.changes import Invalid, LabelEvent, Ledger, confirm, reconcile
from triage.annotation.labelstudio.tasks import has_image, label_config, png_data_uri, task_for

CLASSES = ["0", "1", "7"]


def _task(task_id: int, sample: str, *anns: dict) -> dict:
    return {"id": task_id, "data": {"sample_id": sample, "features": [0.0, 1.0]}, "annotations": list(anns)}


def _ann(ann_id: int, choice: str, *, cancelled: bool = False, who: Optional[str] = "ann@example.com") -> dict:
    """An annotation as Label Studio lists it; ``who`` None: no annotator recorded."""
    return {"id": ann_id, "was_cancelled": cancelled, "completed_by": {"id": 3, "email": who} if who else None,
            "result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [choice]}}]}


def _events(changes: list) -> list[tuple[str, str, int]]:
    return [(e.sample_id, e.label, e.annotation_id) for e in changes if isinstance(e, LabelEvent)]


def test_each_change_is_published_once() -> None:
    ledger = Ledger()
    first = ledger.observe(_task(1, "s1", _ann(10, "7")), CLASSES)
    assert _events(first) == [("s1", "7", 10)] and first[0].annotator == "ann@example.com"
    for e in first:
        ledger.apply(e)
    assert ledger.observe(_task(1, "s1", _ann(10, "7")), CLASSES) == []  # seen: nothing again
    updated = ledger.observe(_task(1, "s1", _ann(10, "1")), CLASSES)
    assert _events(updated) == [("s1", "1", 10)]
    ledger.apply(updated[0])
    deleted = ledger.observe(_task(1, "s1"), CLASSES)
    assert _events(deleted) == [("s1", UNDO, 10)] and deleted[0].deleted == 10
    ledger.apply(deleted[0])
    assert ledger.live == {} and ledger.observe(_task(1, "s1"), CLASSES) == []


def test_deleting_one_of_two_annotations_republishes_the_other() -> None:
    ledger = Ledger()
    for e in ledger.observe(_task(1, "s1", _ann(10, "7"), _ann(11, "1")), CLASSES):
        ledger.apply(e)
    out = ledger.observe(_task(1, "s1", _ann(11, "1")), CLASSES)
    # one person's two annotations: their answer is withdrawn, and the one that stands published again
    assert _events(out) == [("s1", UNDO, 10), ("s1", "1", 11)] and {e.deleted for e in out} == {10}


def _answers(published: list) -> dict[str, dict[str, str]]:
    """Sample -> annotator -> answer, as training reads the published labels (one per annotator)."""
    out: dict[str, dict[str, str]] = {}
    for e in published:
        answer(out.setdefault(e.sample_id, {}), e.label, e.annotator)
    return {sid: a for sid, a in out.items() if a}


def _applied(ledger: Ledger, published: list, changes: list) -> None:
    for e in changes:
        published.append(e)
        ledger.apply(e)


def test_deleting_one_persons_annotation_withdraws_their_answer_and_no_one_elses() -> None:
    """It republished the other person's label, so training still counted the deleted answer."""
    ledger, published = Ledger(), []
    _applied(ledger, published, ledger.observe(_task(1, "s1", _ann(10, "7", who="a@x"), _ann(11, "1", who="b@x")),
                                               CLASSES))
    out = ledger.observe(_task(1, "s1", _ann(11, "1", who="b@x")), CLASSES)
    assert [(e.label, e.annotator, e.deleted) for e in out] == [(UNDO, "a@x", 10)]
    _applied(ledger, published, out)
    assert _answers(published) == {"s1": {"b@x": "1"}}
    # through the webhook the same
    ledger, published = Ledger(), []
    _applied(ledger, published, ledger.observe(_task(1, "s1", _ann(10, "7", who="a@x"), _ann(11, "1", who="b@x")),
                                               CLASSES))
    _applied(ledger, published, ledger.observe_deleted([11]))
    assert _answers(published) == {"s1": {"a@x": "7"}}


def test_a_deleted_anonymous_annotation_withdraws_all_then_the_others_stand_again() -> None:
    """An undo with no annotator withdraws every answer: the remaining ones follow it."""
    ledger, published = Ledger(), []
    task = _task(1, "s1", _ann(10, "7", who=None), _ann(11, "1", who="b@x"))
    _applied(ledger, published, ledger.observe(task, CLASSES))
    _applied(ledger, published, ledger.observe(_task(1, "s1", _ann(11, "1", who="b@x")), CLASSES))
    assert _answers(published) == {"s1": {"b@x": "1"}}
    assert [(e.label, e.annotator, e.deleted) for e in published[2:]] == [(UNDO, None, 10), ("1", "b@x", 10)]
    assert {a: e.label for a, e in ledger.live.items()} == {11: "1"}


def test_a_persons_annotation_deleted_in_one_task_of_a_sample_falls_back_to_theirs_in_another() -> None:
    ledger, published = Ledger(), []
    _applied(ledger, published, ledger.observe(_task(1, "s1", _ann(10, "7", who="a@x")), CLASSES))
    _applied(ledger, published, ledger.observe(_task(2, "s1", _ann(20, "1", who="a@x"), _ann(21, "0", who="b@x")),
                                               CLASSES))
    _applied(ledger, published, ledger.observe(_task(2, "s1", _ann(21, "0", who="b@x")), CLASSES))
    assert _answers(published) == {"s1": {"a@x": "7", "b@x": "0"}}


def test_one_webhook_that_deletes_several_annotations_lets_none_stand_in_for_another() -> None:
    """Label Studio's bulk delete is one webhook: each retraction counted the others as standing."""
    for tasks, batch in (([_task(1, "s", _ann(10, "7", who=None), _ann(11, "1", who="b@x"))], [11, 10]),
                         ([_task(1, "s", _ann(10, "7", who="a@x")), _task(2, "s", _ann(20, "1", who="a@x"))], [10, 20])):
        ledger, published = Ledger(), []
        for task in tasks:
            _applied(ledger, published, ledger.observe(task, CLASSES))
        _applied(ledger, published, ledger.observe_deleted(batch))
        assert _answers(published) == {} and ledger.live == {}, batch


def test_a_crash_between_a_retractions_undo_and_its_republish_is_repaired_by_the_next_listing() -> None:
    """An anonymous annotation's retraction is an undo of every answer, then the others again: a
    restart after the undo alone must not lose bob's answer for good."""
    ledger, published = Ledger(), []
    _applied(ledger, published, ledger.observe(_task(1, "s", _ann(10, "7", who=None), _ann(11, "1", who="b@x")),
                                               CLASSES))
    retraction = ledger.observe(_task(1, "s", _ann(11, "1", who="b@x")), CLASSES)
    assert [e.label for e in retraction] == [UNDO, "1"]
    published.append(retraction[0])  # acked; the bridge dies before the second
    restarted = Ledger()
    for e in published:
        restarted.replay(decode_label(encode_label(e.sample_id, e.label, annotator=e.annotator, origin=e.origin),
                                      10_000))
    assert _answers(published) == {}
    _applied(restarted, published, restarted.observe(_task(1, "s", _ann(11, "1", who="b@x")), CLASSES))
    assert _answers(published) == {"s": {"b@x": "1"}}


def _wire(events: list) -> list:
    return [decode_label(encode_label(e.sample_id, e.label, annotator=e.annotator, origin=e.origin), 10_000)
            for e in events]


def test_answers_an_earlier_bridge_left_standing_are_withdrawn_once_after_a_restart() -> None:
    """The bridge before this one reported alice's deletion by republishing bob's label, so
    alice's answer stood: a replay finds it and withdraws it, and the next replay finds it paid."""
    from triage.annotation.labelstudio.changes import LabelEvent as Event

    old = [Event("s", "7", 10, 1, "a@x"), Event("s", "1", 11, 1, "b@x"),
           Event("s", "1", 11, 1, "b@x", deleted=10),  # the old retraction of alice's 10
           Event("t", "7", 20, 2, "a@x"), Event("t", "0", 21, 3, "a@x"),
           Event("t", "0", 21, 3, "a@x", deleted=20)]  # alice's own other annotation: nothing owed
    ledger = Ledger()
    for label in _wire(old):
        ledger.replay(label)
    repairs = ledger.repairs()
    assert [(e.sample_id, e.label, e.annotator, e.deleted) for e in repairs] == [("s", UNDO, "a@x", 10)]
    published = old + repairs
    for e in repairs:
        ledger.apply(e)
    assert _answers(published) == {"s": {"b@x": "1"}, "t": {"a@x": "0"}}
    again = Ledger()
    for label in _wire(published):
        again.replay(label)
    assert again.repairs() == [] and again.live == ledger.live
    # an annotation the old bridge retracted so, then published again (un-skipped): nothing owed
    back = Ledger()
    for label in _wire(old[:3] + [Event("s", "7", 10, 1, "a@x")]):
        back.replay(label)
    assert back.repairs() == [] and sorted(back.live) == [10, 11]


def test_a_task_whose_sample_id_changed_moves_its_answers_to_the_new_sample() -> None:
    ledger, published = Ledger(), []
    _applied(ledger, published, ledger.observe(_task(1, "s1", _ann(10, "0", who="a@x"), _ann(11, "1", who="b@x")),
                                               CLASSES))
    _applied(ledger, published, ledger.observe(_task(1, "s2", _ann(10, "0", who="a@x"), _ann(11, "1", who="b@x")),
                                               CLASSES))
    assert _answers(published) == {"s2": {"a@x": "0", "b@x": "1"}}
    assert ledger.observe(_task(1, "s2", _ann(10, "0", who="a@x"), _ann(11, "1", who="b@x")), CLASSES) == []


def test_a_late_skip_does_not_withdraw_a_newer_label() -> None:
    ledger, published = Ledger(), []
    _applied(ledger, published, ledger.observe_annotation(
        _task(1, "s"), dict(_ann(10, "7", who="a@x"), updated_at="2026-11-25T10:00:02Z"), CLASSES))
    late = dict(_ann(10, "7", who="a@x", cancelled=True), updated_at="2026-11-25T10:00:01Z")
    assert ledger.observe_annotation(_task(1, "s"), late, CLASSES) == []
    assert _answers(published) == {"s": {"a@x": "7"}}


def test_skipped_tasks_and_bad_choices_are_not_labels() -> None:
    ledger = Ledger()
    assert ledger.observe(_task(1, "s1", _ann(10, "7", cancelled=True)), CLASSES) == []
    bad = ledger.observe(_task(2, "s2", _ann(11, "cat")), CLASSES)
    assert [type(b) for b in bad] == [Invalid] and bad[0].reason == "unknown_choice"
    missing = ledger.observe({"id": 3, "data": {}, "annotations": [_ann(12, "7")]}, CLASSES)
    assert [b.reason for b in missing] == ["no_sample_id"]


def test_the_ledger_replays_from_the_records_it_published() -> None:
    ledger = Ledger()
    events = ledger.observe(_task(1, "s1", _ann(10, "7")), CLASSES)
    ledger.apply(events[0])
    deletion = ledger.observe(_task(1, "s1"), CLASSES)[0]
    wire = [decode_label(encode_label(e.sample_id, e.label, origin=e.origin), 10_000) for e in events + [deletion]]
    replayed = Ledger()
    replayed.replay(decode_label(encode_label("other", "3", annotator="console"), 10_000))  # not the bridge's
    for label in wire:
        replayed.replay(label)
    assert replayed.live == {} and replayed.deleted == {10}
    # a late webhook never brings a deleted annotation back
    assert replayed.observe_annotation(_task(1, "s1"), _ann(10, "7"), CLASSES) == []
    restarted = Ledger()
    restarted.replay(wire[0])
    assert restarted.observe(_task(1, "s1", _ann(10, "7")), CLASSES) == []  # no re-publish after restart


def test_late_webhooks_and_duplicate_tasks_do_not_flip_labels() -> None:
    ledger = Ledger()
    newer = dict(_ann(10, "1"), updated_at="2026-11-25T10:00:02Z")
    for e in ledger.observe(_task(1, "s1", newer), CLASSES):
        ledger.apply(e)
    older = dict(_ann(10, "7"), updated_at="2026-11-25T10:00:01Z")
    assert ledger.observe_annotation(_task(1, "s1"), older, CLASSES) == []  # delivered late: ignored
    # a second task of the same sample (a duplicate import) with no annotation changes nothing
    assert ledger.observe(_task(2, "s1"), CLASSES) == []
    # its own annotation, once deleted, falls back to the first task's label, not to an undo
    for e in ledger.observe(_task(2, "s1", _ann(20, "0")), CLASSES):
        ledger.apply(e)
    back = ledger.observe(_task(2, "s1"), CLASSES)
    assert _events(back) == [("s1", UNDO, 20), ("s1", "1", 10)] and {e.deleted for e in back} == {20}


def test_review_becomes_a_task_with_the_models_guess() -> None:
    review = ReviewRequest("s1", [float(i % 16) for i in range(64)], "uncertain", "7", 0.61,
                           ScoreFields(0.2, 0.5, 0.4), 0.8, "v3", None, [TopClass("7", 0.61), TopClass("1", 0.3)])
    task = task_for(review, image=has_image(64))
    data = task["data"]
    assert (data["sample_id"], data["priority"], data["model_version"], data["reason"]) == ("s1", 0.8, "v3", "uncertain")
    assert base64.b64decode(data["image"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    pred = task["predictions"][0]
    assert pred["model_version"] == "v3" and pred["score"] == 0.61
    assert pred["result"][0]["value"] == {"choices": ["7"]}
    assert not has_image(20) and has_image(784)


def test_label_config_is_xml_with_every_class() -> None:
    root = ET.fromstring(label_config(["a", 'b"<', "c"], image=False))
    assert [c.get("value") for c in root.iter("Choice")] == ["a", 'b"<', "c"]
    assert png_data_uri([0.0, 1.0, 2.0, 3.0]).startswith("data:image/png;base64,")


def test_webhook_events_are_judged_from_their_own_payload() -> None:
    """A webhook carries one annotation; the task's other annotations stay as they are, and a
    deletion is retracted from the ledger alone."""
    ledger = Ledger()
    for e in ledger.observe(_task(1, "s1", _ann(10, "7", who="a@x")), CLASSES):
        ledger.apply(e)
    second = ledger.observe_annotation(_task(1, "s1"), _ann(11, "1", who="b@x"), CLASSES)
    assert _events(second) == [("s1", "1", 11)]
    ledger.apply(second[0])
    assert ledger.observe_annotation(_task(1, "s1"), _ann(11, "1"), CLASSES) == []  # redelivered: nothing
    skipped = ledger.observe_annotation(_task(1, "s1"), _ann(11, "1", cancelled=True), CLASSES)
    # b's answer withdrawn, a's untouched (it republished a's label, and b's answer stood)
    assert _events(skipped) == [("s1", UNDO, 11)] and skipped[0].deleted == 11 and skipped[0].annotator == "b@x"
    ledger.apply(skipped[0])
    gone = ledger.observe_deleted([10, 999])
    assert _events(gone) == [("s1", UNDO, 10)]
    ledger.apply(gone[0])
    assert ledger.live == {}


def test_a_retracted_annotation_that_is_listed_again_is_published_again_once() -> None:
    """A retraction that was wrong (the task was only missing from one listing, e.g. an undo in
    the labels topic from before deletions were confirmed) is undone by the next listing."""
    ledger = Ledger()
    for e in ledger.observe(_task(1, "s1", _ann(10, "7")), CLASSES):
        ledger.apply(e)
    for e in ledger.observe_gone(1, "s1", CLASSES):
        ledger.apply(e)
    assert ledger.live == {} and ledger.deleted == {10}
    back = ledger.observe(_task(1, "s1", _ann(10, "7")), CLASSES)
    assert _events(back) == [("s1", "7", 10)]
    ledger.apply(back[0])
    assert ledger.deleted == set() and ledger.observe(_task(1, "s1", _ann(10, "7")), CLASSES) == []


def _publishing(ledger: Ledger, published: list) -> Callable[[list], None]:
    """A ``publish`` that records each label event and applies it to ``ledger``, as the bridge does."""
    def publish(changes: list) -> None:
        for e in changes:
            if isinstance(e, LabelEvent):
                published.append(e)
                ledger.apply(e)

    return publish


def test_a_task_missing_from_a_full_listing_is_retracted_only_when_a_fetch_says_404() -> None:
    ledger, published = Ledger(), []
    publish = _publishing(ledger, published)
    tasks = {1: _task(1, "s1", _ann(10, "7")), 2: _task(2, "s2", _ann(20, "1"))}
    reconcile(ledger, list(tasks.values()), CLASSES, publish=publish, fetch=tasks.get)
    assert _events(published) == [("s1", "7", 10), ("s2", "1", 20)]
    reconcile(ledger, [tasks[2]], CLASSES, publish=publish, fetch=tasks.get)  # 1 missed, but exists
    reconcile(ledger, [], CLASSES, publish=publish, fetch=None)  # incremental: absence means nothing
    assert len(published) == 2
    del tasks[1]  # now really deleted: the fetch says 404
    reconcile(ledger, [tasks[2]], CLASSES, publish=publish, fetch=tasks.get)
    assert _events(published[2:]) == [("s1", UNDO, 10)]


def test_tasks_reported_deleted_are_retracted_only_when_a_fetch_says_404() -> None:
    """A TASKS_DELETED webhook's tasks go through the same confirmation as a full listing's gaps."""
    ledger, published = Ledger(), []
    publish = _publishing(ledger, published)
    tasks = {1: _task(1, "s1", _ann(10, "7")), 2: _task(2, "s2", _ann(20, "1")), 3: _task(3, "s3")}
    reconcile(ledger, list(tasks.values()), CLASSES, publish=publish, fetch=tasks.get)
    assert ledger.live_tasks([1, 2, 3, 4]) == {1: "s1", 2: "s2"}  # 3: nothing published; 4: unknown
    del tasks[1]
    confirm(ledger, ledger.live_tasks([1, 2]), CLASSES, publish=publish, fetch=tasks.get)  # 2 was not deleted
    assert _events(published[2:]) == [("s1", UNDO, 10)]
    confirm(ledger, ledger.live_tasks([1, 2]), CLASSES, publish=publish, fetch=tasks.get)  # the webhook again
    assert len(published) == 3


# --- listings fuzzed: pages that shift under concurrent inserts and deletes -------------------


@st.composite
def _worlds(draw: st.DrawFn, people: tuple[Optional[str], ...] = ()) -> list[tuple[dict[int, dict], list[int], bool]]:
    """Rounds of (Label Studio's tasks, the order a listing returned them in, full or not): between
    rounds annotations are added, changed, skipped and deleted, tasks created and deleted; each
    listing may miss tasks and list some twice, as offset pages do when rows move under them.
    With ``people``, each annotation is one of theirs, one per person per sample (Label Studio
    serves a task once to each person), and a new task may be a second task of an existing
    sample (a duplicate import); without, one person makes them all, one task per sample."""
    next_ann = [100]
    tasks: dict[int, dict] = {}

    def annotation(task: Optional[dict] = None) -> Optional[dict]:
        who: Optional[str] = "ann@example.com"
        if people:
            sample = (task or {}).get("data", {}).get("sample_id")
            taken = {(a["completed_by"] or {}).get("email") for t in tasks.values() if t["data"]["sample_id"] == sample
                     for a in t["annotations"]} | {(a["completed_by"] or {}).get("email")
                                                    for a in (task or {}).get("annotations", [])}
            free = [p for p in people if p not in taken]
            if not free:
                return None
            who = draw(st.sampled_from(free))
        next_ann[0] += 1
        return _ann(next_ann[0], draw(st.sampled_from(CLASSES)), cancelled=draw(st.booleans()) and draw(st.booleans()),
                    who=who)

    rounds = []
    for _ in range(draw(st.integers(1, 6))):
        for _ in range(draw(st.integers(0, 4))):
            op = draw(st.sampled_from(["new_task", "annotate", "change", "delete_ann", "delete_task"]))
            ids = sorted(tasks)
            if op == "new_task" or not ids:
                tid = max(ids, default=0) + 1 + draw(st.integers(0, 2))
                shared = people and ids and draw(st.booleans())
                sample = tasks[draw(st.sampled_from(ids))]["data"]["sample_id"] if shared else f"s{tid}"
                tasks[tid] = task = _task(tid, sample)
                for _ in range(draw(st.integers(0, 2))):
                    new = annotation(task)
                    task["annotations"] += [new] if new else []
                continue
            task = tasks[draw(st.sampled_from(ids))]
            anns = task["annotations"]
            new = annotation(task) if op == "annotate" else None
            if new:
                anns.append(new)
            elif op == "change" and anns:
                i = draw(st.integers(0, len(anns) - 1))
                anns[i] = _ann(anns[i]["id"], draw(st.sampled_from(CLASSES)),
                               who=(anns[i]["completed_by"] or {}).get("email"))
            elif op == "delete_ann" and anns:
                anns.pop(draw(st.integers(0, len(anns) - 1)))
            elif op == "delete_task":
                del tasks[task["id"]]
        snapshot = copy.deepcopy(tasks)
        ids = sorted(snapshot)
        listed = draw(st.lists(st.sampled_from(ids), max_size=len(ids) + 2)) if ids and draw(st.booleans()) else ids
        rounds.append((snapshot, listed, draw(st.booleans())))
    return rounds


def _truth(tasks: dict[int, dict]) -> dict[int, tuple[str, str]]:
    """Annotation id -> (sample, label) of every annotation that is a label now."""
    return {a["id"]: (t["data"]["sample_id"], a["result"][0]["value"]["choices"][0])
            for t in tasks.values() for a in t["annotations"] if not a["was_cancelled"]}


@settings(max_examples=examples(100))
@given(_worlds())
def test_listings_that_miss_or_repeat_tasks_never_retract_a_label_and_publish_each_change_once(rounds: list) -> None:
    ledger = Ledger()
    for tasks, listed, full in rounds:
        truth = _truth(tasks)
        out: list[LabelEvent] = []

        def publish(changes: list) -> None:
            for e in changes:
                if isinstance(e, LabelEvent):
                    out.append(e)
                    ledger.apply(e)

        reconcile(ledger, [tasks[i] for i in listed], CLASSES, publish=publish,
                  fetch=(lambda i: tasks.get(i)) if full else None)
        for e in out:
            # a retraction only of an annotation that is no label any more
            assert e.deleted is None or e.deleted not in truth, (e, truth)
            # every label published is the annotation's label now
            assert e.label == UNDO or truth.get(e.annotation_id, (None, e.label))[1] == e.label, (e, truth)
        # nothing published twice: the ledger's live state changed with every event
        labels = [(e.annotation_id, e.label) for e in out if e.deleted is None]
        assert len(labels) == len(set(labels)), out
    # a complete full listing brings the ledger to Label Studio's state, and a second one publishes nothing
    tasks = rounds[-1][0]
    out = []
    reconcile(ledger, list(tasks.values()), CLASSES, publish=lambda c: out.extend(c) or [ledger.apply(e) for e in c if isinstance(e, LabelEvent)],
              fetch=tasks.get)
    assert {a: (e.sample_id, e.label) for a, e in ledger.live.items()} == _truth(tasks)
    again: list = []
    reconcile(ledger, list(tasks.values()), CLASSES, publish=again.extend, fetch=tasks.get)
    assert again == []


class _Crash(Exception):
    pass


@settings(max_examples=examples(200))
@given(_worlds(people=("a@x", "b@x", None)), st.lists(st.integers(0, 6), max_size=6))
def test_after_a_full_listing_the_labels_published_read_as_each_persons_annotation_in_label_studio(
        rounds: list, crashes: list[int]) -> None:
    """Training reads one answer per annotator: folded that way, everything the bridge published
    (partial listings, gaps and repeats, and crashes that cut a retraction's events short, after
    which the bridge rebuilds its ledger from the topic) equals what Label Studio holds once a
    full listing has run, whoever deleted, skipped or changed what."""
    ledger, published = Ledger(), []
    for n, (tasks, listed, full) in enumerate(rounds):
        crash_after = crashes[n] if n < len(crashes) else None
        sent: list = []

        def publish(changes: list) -> None:
            for e in changes:
                if isinstance(e, LabelEvent):
                    if len(sent) == crash_after:
                        raise _Crash
                    sent.append(e)
                    ledger.apply(e)

        try:
            reconcile(ledger, [tasks[i] for i in listed], CLASSES, publish=publish,
                      fetch=(lambda i: tasks.get(i)) if full else None)
        except _Crash:  # a restart: the ledger is what the topic holds
            ledger = Ledger()
            for label in _wire(published + sent):
                ledger.replay(label)
            assert ledger.repairs() == []  # what this bridge publishes never leaves an answer standing
        published += sent
    tasks = rounds[-1][0]
    reconcile(ledger, list(tasks.values()), CLASSES, publish=_publishing(ledger, published), fetch=tasks.get)
    truth: dict[str, dict[str, str]] = {}
    for t in tasks.values():
        for a in t["annotations"]:
            if not a["was_cancelled"]:
                who = (a["completed_by"] or {}).get("email") or ""
                truth.setdefault(t["data"]["sample_id"], {})[who] = a["result"][0]["value"]["choices"][0]
    assert _answers(published) == truth
