"""The Label Studio webhook contract: recorded bodies decode; malformed bodies of every shape are
refused with a bounded reason, never with another exception (tests/contract_strategies.py
derives the bodies from the contract's Structs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings

from tests import contract_strategies
from tests.profiles import examples
from triage.annotation.labelstudio.webhook import Webhook, WebhookRefused, decode_webhook
from triage.metrics import LabelStudioMetrics

PAYLOADS = json.loads((Path(__file__).resolve().parents[1] / "labelstudio_payloads.json").read_text())
LIMIT = 5_000_000
contract_strategies.SCHEMAS.setdefault("webhook", Webhook)  # KINDS (the other fuzz suites) stay as they are


def test_the_recorded_bodies_decode() -> None:
    created = decode_webhook(json.dumps(PAYLOADS["ANNOTATION_CREATED"]).encode(), LIMIT)
    assert created.task_dict()["data"]["sample_id"] == "w0"
    assert created.annotation_dict()["result"][0]["value"]["choices"] == ["7"]
    assert created.annotation_dict()["completed_by"] == 1
    deleted = decode_webhook(json.dumps(PAYLOADS["ANNOTATIONS_DELETED"]).encode(), LIMIT)
    assert [a.id for a in deleted.annotations or []] == [4]


def test_a_tasks_deleted_body_names_the_tasks() -> None:
    """The shape of Label Studio 1.23.2's TASKS_DELETED (webhooks/models.py: key ``tasks``,
    OnlyIDWebhookSerializer)."""
    body = decode_webhook(b'{"action": "TASKS_DELETED", "tasks": [{"id": 7}, {"id": 9}], "project": {"id": 5}}', LIMIT)
    assert [t.id for t in body.tasks or []] == [7, 9]


@pytest.mark.parametrize("body, reason", [
    (b'{"action": "ANNOTATION_CREATED", "task": {"id": "abc"}, "annotation": {"id": 1}}', "bad_shape"),
    (b'{"action": "ANNOTATION_CREATED", "task": {"id": 1}, "annotation": {"id": 1, "result": {"a": 1}}}', "bad_shape"),
    (b'{"action": "ANNOTATION_CREATED", "task": [1], "annotation": {"id": 1}}', "bad_shape"),
    (b'{"action": ["ANNOTATION_CREATED"]}', "bad_shape"),
    (b'{"action": "ANNOTATIONS_DELETED", "annotations": [{"id": -1}]}', "bad_shape"),
    (b'{"action": "ANNOTATIONS_DELETED", "annotations": {"id": 1}}', "bad_shape"),
    (b'{"action": "ANNOTATION_CREATED", "annotation": {"id": 2}}', "bad_shape"),
    (b'{"action": "TASKS_DELETED", "project": {"id": 5}}', "bad_shape"),
    (b'{"action": "TASKS_DELETED", "tasks": [{"id": "7"}]}', "bad_shape"),
    (b'[1, 2]', "bad_shape"),
    (b'{"action": "ANNOTATION_CREATED", "task": {"id": 1', "not_json"),
    (b'\xff\xfe{}', "not_json"),
    (b'[' * 100_000 + b']' * 100_000, "bad_shape"),  # a list where the object belongs
    (b'{"action": "X", "project": ' + b'{"a": ' * 50_000 + b'1' + b'}' * 50_000 + b'}', "too_deep"),
    (b'{"action": "X", "pad": "' + b'x' * LIMIT + b'"}', "too_large"),
], ids=lambda v: v[:24].decode(errors="replace") if isinstance(v, bytes) else str(v))
def test_malformed_bodies_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(WebhookRefused) as refused:
        decode_webhook(body, LIMIT)
    assert refused.value.reason == reason and 400 <= refused.value.status < 500


@settings(max_examples=examples(200))
@given(contract_strategies.cases("webhook", 8, 100_000))
def test_generated_bodies_decode_or_are_refused_with_a_bounded_reason(case: contract_strategies.Case) -> None:
    try:
        body = decode_webhook(case.value or b"", 100_000)
    except WebhookRefused as exc:
        assert exc.reason in LabelStudioMetrics.WEBHOOK_REFUSALS and 400 <= exc.status < 500
        assert case.expect is not True or exc.reason == "bad_shape", case  # only the action rules add refusals
        return
    assert isinstance(body, Webhook)
    body.task_dict(), body.annotation_dict()  # what the publisher reads: plain dicts
