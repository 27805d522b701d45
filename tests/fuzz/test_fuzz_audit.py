"""The audit consumer on generated review records and labels.

One AuditConsumer runs (``run(idle_exit_s=...)``) in a thread for the whole test. Each
hypothesis example produces ~20-30 generated review records and ~20-35 generated labels,
with valid sentinel pairs (an audit copy and its label, under a version of their own)
interleaved. Property per batch: every record is counted exactly once in
``triage_audit_records`` under the kind the contract gives it (audit / other for review
records, label, invalid), no record makes the handler raise, the consumer thread stays
alive, and the accuracy estimate of the sentinel version counts every sentinel pair.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections import Counter
from typing import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.audit import AuditConsumer
from tests.fixtures import DEADLINE_S
from tests.fuzz.kit import (
    FUZZ, MAX_BYTES, Feeder, In, counts, interleave, records, sticky, value, verdict,
)
from tests.helpers import wait_until
from triage.contracts import ReviewRequest, ScoreFields, TopClass, encode
from triage.errors import InputError
from triage.settings import Settings

KINDS = ["audit", "label", "other", "invalid"]


def test_audit_consumer_counts_every_record_once_by_kind(settings_factory: Callable[..., Settings]) -> None:
    s = settings_factory(max_message_bytes=MAX_BYTES)
    audit = AuditConsumer(s)
    worker = threading.Thread(target=audit.run, kwargs={"idle_exit_s": DEADLINE_S}, name="fuzz-audit", daemon=True)
    worker.start()
    feeder = Feeder(s)
    tag, n = uuid.uuid4().hex[:6], itertools.count()
    version = f"fuzz-{tag}"
    expected: Counter[str] = Counter()
    pairs = correct = 0
    ran: list[int] = []

    def sentinel_pair(i: int) -> tuple[In, In]:
        sid = f"au-{tag}-{i}"
        review = ReviewRequest(sid, [0.0] * 64, "audit", "3", 0.9, ScoreFields(0.8, 0.1, None), 0.1, version, None,
                               [TopClass("3", 0.9)])
        label = {"id": sid, "label": "3" if i % 3 else "5", "annotator": "fuzz"}
        return In(sid.encode(), encode(review)), In(sid.encode(), json.dumps(label).encode())

    try:
        @FUZZ
        @given(reviews=records("review", 20, 30), labels=records("label", 20, 35),
               at=st.lists(st.integers(0, 40), min_size=1, max_size=4))
        @sticky
        def run(reviews: list[In], labels: list[In], at: list[int]) -> None:
            nonlocal pairs, correct
            ran.append(len(reviews) + len(labels))
            made = [sentinel_pair(next(n)) for _ in at]
            reviews = interleave(reviews, [r for r, _ in made], at)
            labels = interleave(labels, [lb for _, lb in made], at)
            for rec in reviews:
                decoded = verdict("review", rec.value)
                expected["invalid" if isinstance(decoded, InputError) else
                         "audit" if decoded.reason == "audit" else "other"] += 1
            for rec in labels:
                expected["invalid" if isinstance(verdict("label", rec.value), InputError) else "label"] += 1
            pairs += len(made)
            correct += sum(1 for _, lb in made if json.loads(lb.value or b"{}")["label"] == "3")
            feeder.send(s.topics.review_topic, reviews)
            feeder.send(s.topics.labels_topic, labels)
            total = sum(expected.values())
            wait_until(lambda: sum(counts(audit.metrics.records, "kind", KINDS).values()) >= total,
                       "the audit consumer to count every record",
                       alive=lambda: None if worker.is_alive() else "the audit consumer thread ended")
            seen = counts(audit.metrics.records, "kind", KINDS)
            print(f"audit batch: {dict(seen)}")
            assert +seen == +expected, (dict(seen), dict(expected))
            assert value(audit.loop_metrics.internal_errors, loop="audit") == 0, "a record made the handler raise"
            assert value(audit.metrics.samples, model_version=version) == pairs
            assert value(audit.metrics.estimate, model_version=version) == pytest.approx(correct / pairs)
            assert worker.is_alive()

        run()
        assert len(ran) >= min(2, FUZZ.max_examples), f"hypothesis ran only {len(ran)} examples"
        time.sleep(1.0)  # a grace period: nothing is counted twice later on
        assert +counts(audit.metrics.records, "kind", KINDS) == +expected
        assert worker.is_alive(), "the audit consumer stopped before it was told to"
    finally:
        audit.stop_event.set()
        worker.join(60)
        feeder.close()
    assert not worker.is_alive()
