"""The bridge's pure parts: review -> task, annotation states -> label events (exactly once)."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET

from triage.contracts import ReviewRequest, ScoreFields, TopClass, decode_label, encode_label
from triage.lifecycle.labelstore import UNDO
from triage.annotation.labelstudio.changes import Invalid, LabelEvent, Ledger
from triage.annotation.labelstudio.tasks import has_image, label_config, png_data_uri, task_for

CLASSES = ["0", "1", "7"]


def _task(task_id: int, sample: str, *anns: dict) -> dict:
    return {"id": task_id, "data": {"sample_id": sample, "features": [0.0, 1.0]}, "annotations": list(anns)}


def _ann(ann_id: int, choice: str, *, cancelled: bool = False, who: str = "ann@example.com") -> dict:
    return {"id": ann_id, "was_cancelled": cancelled, "completed_by": {"id": 3, "email": who},
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
    assert _events(out) == [("s1", "1", 11)] and out[0].deleted == 10


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
    assert replayed.observe(_task(1, "s1", _ann(10, "7")), CLASSES) == []  # a deleted annotation stays deleted
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
    assert _events(back) == [("s1", "1", 10)] and back[0].deleted == 20


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
    assert _events(skipped) == [("s1", "7", 10)] and skipped[0].deleted == 11  # back to the other label
    ledger.apply(skipped[0])
    gone = ledger.observe_deleted([10, 999])
    assert _events(gone) == [("s1", UNDO, 10)]
    ledger.apply(gone[0])
    assert ledger.live == {}
