"""`triage audit`'s consumer on the embedded broker: the accepted-accuracy estimate counts each
audited sample once, with the label its annotators' answers leave standing (an edge case or
an undo is no model error), whichever topic it reads first and after a restart's replay."""

from __future__ import annotations

import json
from typing import Callable, Optional

import pytest
from prometheus_client import CollectorRegistry

from consumers.audit import AuditConsumer
from tests.fixtures import produce
from triage.contracts import ReviewRequest, ScoreFields, TopClass, encode
from triage.lifecycle.labelstore import EDGE_CASE, UNDO
from triage.metrics import AuditMetrics
from triage.settings import Settings

# (sample, [(label, annotator)]) for audits of v1 that predicted "3"
ANSWERS: list[tuple[str, list[tuple[str, Optional[str]]]]] = [
    ("right", [("3", "alice")]),
    ("edge", [(EDGE_CASE, "alice")]),  # can't tell: says nothing of the model
    ("slip", [("5", "alice"), (UNDO, "alice")]),  # taken back
    ("fixed", [("5", "alice"), (UNDO, "alice"), ("3", "alice")]),
    ("second", [("3", "alice"), ("5", "bob"), (UNDO, "bob")]),  # bob's undo leaves alice's label
    ("wrong", [("7", "bob")]),
    ("anonymous", [("3", None), (UNDO, None)]),
]
SAMPLES, CORRECT = 4, 3  # right, fixed, second, wrong


def _audit_copy(sid: str, version: str = "v1") -> tuple[bytes, bytes]:
    review = ReviewRequest(sid, [0.0] * 8, "audit", "3", 0.9, ScoreFields(0.8, 0.1, None), 0.1, version, None,
                           [TopClass("3", 0.9)])
    return sid.encode(), encode(review)


def _run(s: Settings) -> AuditConsumer:
    consumer = AuditConsumer(s, metrics=AuditMetrics(CollectorRegistry()))
    consumer.run(idle_exit_s=3.0)
    return consumer


@pytest.mark.parametrize("first", ["labels", "audits"])
def test_each_audited_sample_counts_once_with_its_standing_label(
        settings_factory: Callable[..., Settings], first: str) -> None:
    s = settings_factory()
    # one redelivered; v2's one sample has its label taken back
    audits = [_audit_copy(sid) for sid, _ in ANSWERS] + [_audit_copy("second"), _audit_copy("v2-slip", "v2")]
    labels = [(sid.encode(), json.dumps({"id": sid, "label": label, "annotator": who}).encode())
              for sid, answers in [*ANSWERS, ("v2-slip", [("5", "carol"), (UNDO, "carol")])] for label, who in answers]
    topics = [(s.topics.labels_topic, labels), (s.topics.review_topic, audits)]
    for topic, records in topics if first == "labels" else topics[::-1]:
        produce(s, topic, records)
    for _ in range(2):  # the second run replays both topics from the start, as a restart does
        registry = _run(s).metrics.registry
        value = lambda name, v="v1": registry.get_sample_value(name, {"model_version": v})  # noqa: E731
        assert value("triage_accepted_accuracy_samples") == SAMPLES
        assert value("triage_accepted_accuracy_estimate") == CORRECT / SAMPLES
        # joined then withdrawn (0 samples) or never joined (no series): no estimate either way
        assert value("triage_accepted_accuracy_samples", "v2") in (0, None)
        assert value("triage_accepted_accuracy_estimate", "v2") is None
        assert value("triage_accepted_accuracy_upper", "v2") is None
