"""``triage monitor`` (MonitorConsumer, in process) on generated predictions and review requests.

Each hypothesis example produces ~20-30 generated prediction records (plain and provisional:
``PredictionRecord`` is both) to the predictions topic and ~15-25 generated review records to
the review topic, with valid sentinels of one registry version interleaved (a prediction, a
provisional prediction, an uncertain review and an audit copy). Property per example: the
monitor thread stays alive and nothing makes its handler raise; every record is counted once
in ``triage_monitor_records_total`` under the kind the contract gives it (invalid ones as
``invalid``); its checkpoint covers every record sent, and per version its ``seen`` equals the
count of valid non-audit records of that version, since the start (each folded exactly once);
every retrain request it published decodes. Every fifth example (and after the last) the
monitor is stopped and a new one started on its checkpoint: it re-counts nothing.

The generated versions are free text (the contract's ``model_version`` is any string): almost
every valid record brings a version of its own. The production state keeps the newest
``KEEP_VERSIONS`` (4); here the cap is lifted so that every version's count stays checkable,
and a monitor (topics, group, checkpoint) lasts ``SEGMENT`` examples, which bounds the
checkpoint a long run rewrites.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.monitor import MonitorConsumer
from tests.fixtures import DEADLINE_S
from tests.fuzz.kit import FUZZ, MAX_BYTES, Feeder, In, Offsets, Tail, counts, interleave, records, sticky, value
from tests.helpers import wait_until
from triage.contracts import ProvisionalPrediction, Prediction, ReviewRequest, ScoreFields, TopClass, encode
from triage.contracts import decode_prediction, decode_review
from triage.contracts.retrain_request import decode_retrain_request
from triage.errors import InputError
from triage.monitoring import checkpoint
from triage.settings import Settings

KINDS = ["prediction", "review", "audit_copy", "invalid"]  # and "replayed": skipped, below the checkpoint
SEGMENT = 20  # examples per monitor (fresh topics, group and checkpoint)
RESTART_EVERY = 5  # examples between restarts on the checkpoint


def expected_kind(topic_kind: str, value: Optional[bytes]) -> tuple[str, Optional[str]]:
    """(metric kind, version folded or None) the contract gives a record of ``topic_kind``."""
    try:
        if topic_kind == "prediction":
            return "prediction", decode_prediction(value, MAX_BYTES).model_version
        r = decode_review(value, MAX_BYTES)
    except InputError:
        return "invalid", None
    return ("audit_copy", None) if r.reason == "audit" else ("review", r.model_version)


class _Assigned(logging.Handler):
    """Set when the transport logs an assignment: the consumer's own ``assignment()`` cannot be
    asked from another thread (librdkafka serves it only between the loop's polls, which starve it)."""

    def __init__(self) -> None:
        super().__init__()
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("assigned partitions: [("):
            self.event.set()


class Monitor:
    """One MonitorConsumer in a thread, restartable on its checkpoint."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self.m: MonitorConsumer
        self.thread: threading.Thread
        self.assigned = _Assigned()
        self.logger = logging.getLogger("triage.transport")
        self.level = self.logger.level
        self.logger.setLevel(logging.INFO)  # the assignment line is INFO
        self.logger.addHandler(self.assigned)
        self.start()

    def start(self) -> None:
        self.assigned.event.clear()
        self.m = MonitorConsumer(self.s)
        self.thread = threading.Thread(target=self.m.run, kwargs={"idle_exit_s": DEADLINE_S}, name="fuzz-monitor",
                                       daemon=True)
        self.thread.start()

    def alive(self) -> Optional[str]:
        return None if self.thread.is_alive() else "the monitor thread ended"

    def stop(self) -> None:
        # stopped before it joined, a member leaves the group mid-rebalance and the broker may hold
        # the next one's join: a monitor is stopped only once it holds its partitions
        wait_until(self.assigned.event.is_set, "the monitor to be assigned its partitions", alive=self.alive)
        self.m.stop_event.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the monitor did not stop within 60 s"

    def close(self) -> None:
        self.logger.removeHandler(self.assigned)
        self.logger.setLevel(self.level)

    def checkpoint(self) -> dict[str, Any]:
        return json.loads((Path(self.s.monitor.monitor_state_dir) / checkpoint.FILE).read_bytes())


def test_monitor_counts_every_record_and_folds_every_valid_one_once(
    settings_factory: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(checkpoint, "KEEP_VERSIONS", 1 << 30)  # every generated version stays checkable
    tag, n = uuid.uuid4().hex[:6], itertools.count()
    version = "v7"  # the sentinels' (a registry version)
    feeder: Optional[Feeder] = None
    mon: Optional[Monitor] = None
    segment: dict[str, Any] = {}
    ran: list[int] = []

    def new_segment() -> None:
        nonlocal feeder, mon
        if mon is not None:
            finish_segment()
        k = len(ran)
        s = settings_factory(max_message_bytes=MAX_BYTES, monitor_state_dir=tmp_path / f"monitor-{k}",
                             monitor_checkpoint_s=0.2, monitor_idle_grace_s=0.1, monitor_window=50,
                             drift_reference_samples=100, accuracy_floor=0.99, retrain_request_interval_s=0,
                             retrain_requests_topic=f"requests-{tag}-{k}")
        feeder = Feeder(s)
        mon = Monitor(s)
        segment.clear()
        segment.update(s=s, seen=Counter(), kinds=Counter(), examples=0)

    def finish_segment() -> None:
        """Stop the monitor; every request it published decodes."""
        assert mon is not None and feeder is not None
        mon.stop()
        tail = Tail(mon.s, [mon.s.topics.retrain_requests_topic, mon.s.topics.dlq_topic])
        try:
            out = tail.read()
        finally:
            tail.close()
        assert not [o for o in out if o.topic == mon.s.topics.dlq_topic], "the monitor dead-lettered records"
        for o in out:
            request = decode_retrain_request(o.value, MAX_BYTES)  # an InputError fails the test
            assert request.model_version in segment["seen"], request
        print(f"monitor segment: {segment['examples']} examples, {len(out)} retrain requests, "
              f"{len(segment['seen'])} versions")
        feeder.close()
        mon.close()

    def sentinels(i: int) -> tuple[list[In], list[In]]:
        sid = f"mo-{tag}-{i}"
        scores = ScoreFields(0.5 + (i % 5) / 10, 0.3, None if i % 2 else 0.4)
        top = [TopClass("3", 0.9)]
        plain = Prediction(f"{sid}-p", "3", 0.8 + (i % 3) / 20, scores, version, None)
        held = ProvisionalPrediction(f"{sid}-h", "5", 0.7, scores, version, {"k": i}, True, "gate", None)
        review = ReviewRequest(f"{sid}-r", [0.0] * 64, "uncertain", "2", 0.4, scores, 0.6, version, None, top)
        audit = ReviewRequest(f"{sid}-a", [0.0] * 64, "audit", "3", 0.95, scores, 0.1, version, None, top)
        return ([In(f"{sid}-p".encode(), encode(plain)), In(f"{sid}-h".encode(), encode(held))],
                [In(f"{sid}-r".encode(), encode(review)), In(f"{sid}-a".encode(), encode(audit))])

    def settled() -> bool:
        """The checkpoint covers every record sent, and the metrics counted them all."""
        assert mon is not None and feeder is not None
        s = mon.s
        covered = {(t, p): o for t, p, o in mon.checkpoint()["covered"]}
        for topic in (s.topics.predictions_topic, s.topics.review_topic):
            for p, end in feeder.ends.get(topic, {}).items():
                if covered.get((topic, p), 0) < end:
                    return False
        return True

    try:
        @FUZZ
        @given(predictions=records("prediction", 20, 30), reviews=records("review", 15, 25),
               at=st.lists(st.integers(0, 50), min_size=2, max_size=2))
        @sticky
        def run(predictions: list[In], reviews: list[In], at: list[int]) -> None:
            i = next(n)
            if i % SEGMENT == 0:
                new_segment()
            ran.append(i)
            assert mon is not None and feeder is not None
            s = mon.s
            made_p, made_r = sentinels(i)
            predictions = interleave(predictions, made_p, at)
            reviews = interleave(reviews, made_r, at)
            kinds: Counter[str] = Counter()
            for topic_kind, batch in (("prediction", predictions), ("review", reviews)):
                for rec in batch:
                    kind, v = expected_kind(topic_kind, rec.value)
                    kinds[kind] += 1
                    if v is not None:
                        segment["seen"][v] += 1
            segment["kinds"] += kinds
            segment["examples"] += 1
            feeder.send(s.topics.predictions_topic, predictions)
            feeder.send(s.topics.review_topic, reviews)
            wait_until(settled, "the monitor to checkpoint every record", alive=mon.alive)
            got = counts(mon.m.metrics.records, "kind", KINDS)
            print(f"monitor batch: {dict(kinds)}")
            # the counter is per process: since the last restart, which re-read nothing it covered
            assert +got == +mon_kinds_since_start(), (dict(got), dict(mon_kinds_since_start()))
            seen = {v["version"]: v["seen"] for v in mon.checkpoint()["versions"]}
            missing = {v: c for v, c in segment["seen"].items() if seen.get(v) != c}
            assert not missing, f"versions whose seen differs from their valid records: " \
                                f"{ {v: (seen.get(v), c) for v, c in list(missing.items())[:10]} }"
            assert set(seen) == set(segment["seen"]), set(seen) ^ set(segment["seen"])
            assert value(mon.m.metrics.loop.internal_errors, loop="monitor") == 0, "a record made the handler raise"
            assert mon.alive() is None
            if (i + 1) % RESTART_EVERY == 0:
                mon.stop()
                segment["since_start"] = Counter(segment["kinds"])
                mon.start()

        def mon_kinds_since_start() -> Counter[str]:
            return segment["kinds"] - segment.get("since_start", Counter())

        run()
        assert len(ran) >= min(2, FUZZ.max_examples), f"hypothesis ran only {len(ran)} examples"
        assert mon is not None
        # a last restart: the new monitor reads nothing again, the checkpoint is unchanged
        before = mon.checkpoint()
        mon.stop()
        offsets = Offsets(mon.s, mon.s.monitor.monitor_group_id)
        try:
            for topic in (mon.s.topics.predictions_topic, mon.s.topics.review_topic):
                assert offsets.caught_up(topic, feeder), f"a clean stop left {topic} uncommitted"
        finally:
            offsets.close()
        mon.start()
        time.sleep(1.0)  # a grace period: nothing is read again later on
        assert +counts(mon.m.metrics.records, "kind", KINDS) == Counter(), "the restart re-read records"
        finish_segment()
        after = {v["version"]: v["seen"] for v in mon.checkpoint()["versions"]}
        assert after == {v["version"]: v["seen"] for v in before["versions"]}, "the restart changed the state"
        mon = None
    finally:
        if mon is not None:
            mon.m.stop_event.set()
            mon.thread.join(60)
            mon.close()
        if feeder is not None:
            feeder.close()
