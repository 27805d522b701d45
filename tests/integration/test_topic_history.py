"""Topics keep the history their role needs, and the processes that rebuild state from them
check it at start (triage/transport/retention.py), on the embedded broker under both clients.

Tansu takes topic configs on create and describes them back, but reports only what was set (no
broker defaults) and cannot delete records (no DeleteRecords, no retention run), so a topic
"created by an older stack" is made here with the 7-day retention Apache Kafka would have
given it, and a log start offset past 0 is covered by tests/unit/test_retention.py."""

from __future__ import annotations

import logging
import uuid
from typing import Callable, cast

import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from consumers.audit import AuditConsumer
from consumers.backlog import BacklogWatcher
from consumers.labelstudio_bridge import Bridge
from consumers.trainer import Trainer
from tests.helpers import wait_until
from triage.annotation.labelstudio.client import LabelStudio
from triage.lifecycle.registry import Registry
from triage.metrics import LoopMetrics
from triage.settings import Settings
from triage.runtime.broker import EmbeddedBroker
from triage.transport import describe_history
from triage.transport.retention import UNLIMITED, check_history

WEEK_MS = "604800000"  # Apache Kafka's default retention


def _create(broker: EmbeddedBroker, topic: str, configs: dict[str, str]) -> None:
    """``topic`` as another tool (or an older stack) made it, before triage starts."""
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        admin.create_topics([NewTopic(topic, 2, 1, topic_configs=configs)])
    finally:
        admin.close()


def _complete(metrics: LoopMetrics, topic: str) -> float:
    return float(metrics.history_complete.labels(topic=topic)._value.get())


def test_ensure_topics_gives_review_and_labels_their_whole_history(
    settings_factory: Callable[..., Settings], caplog: pytest.LogCaptureFixture,
) -> None:
    s = settings_factory()  # topics made by ensure_topics
    t = s.topics
    for topic in (t.review_topic, t.labels_topic):
        found = describe_history(s, topic)
        assert {k: found.configs[k] for k in UNLIMITED} == UNLIMITED if found.configs else False, found
        assert set(found.log_start.values()) == {0}, found
    metrics = LoopMetrics()
    with caplog.at_level(logging.WARNING, logger="triage.history"):
        assert check_history(s, [t.review_topic, t.labels_topic], metrics, process="test")
    assert _complete(metrics, t.review_topic) == _complete(metrics, t.labels_topic) == 1
    assert not [r for r in caplog.records if r.name.startswith("triage")]  # (a loaded client may warn of slow polls)


def test_existing_topics_are_left_alone_and_a_short_history_is_warned_and_exported(
    broker: EmbeddedBroker, settings_factory: Callable[..., Settings], caplog: pytest.LogCaptureFixture,
) -> None:
    tag = uuid.uuid4().hex[:8]
    old_labels, compacted, missing = f"labels-old-{tag}", f"labels-compacted-{tag}", f"labels-missing-{tag}"
    _create(broker, old_labels, {"retention.ms": WEEK_MS})  # as an older stack's broker default left it
    _create(broker, compacted, {"cleanup.policy": "compact", "retention.ms": "-1"})
    s = settings_factory(labels_topic=old_labels)  # its ensure_topics finds the labels topic: not touched
    assert describe_history(s, old_labels).configs == {"retention.ms": WEEK_MS}
    metrics = LoopMetrics()
    with caplog.at_level(logging.WARNING, logger="triage.history"):
        assert not check_history(s, [old_labels, compacted, missing], metrics, process="test")
    assert [_complete(metrics, topic) for topic in (old_labels, compacted, missing)] == [0, 0, 0]
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert f"{old_labels} from the beginning, but retention.ms is {WEEK_MS} (7 days)" in text
    assert "cleanup.policy is compact" in text and "the topic does not exist" in text
    assert "retention.ms=-1" in text, "the warning says how to fix it"
    assert describe_history(s, missing).error == "the topic does not exist", "checking a topic never creates it"


def test_processes_that_rebuild_from_labels_check_its_history_at_start(
    broker: EmbeddedBroker, settings_factory: Callable[..., Settings], registry: Registry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The bridge's ledger replay reads labels, the audit consumer and the backlog watcher read
    review and labels, from the beginning: with a labels topic that keeps a week, each warns and
    exports 0 for it (1 for review); so does the retrain job's first ingest. The bridge's replay
    is run alone: it needs no Label Studio."""
    labels = f"labels-week-{uuid.uuid4().hex[:8]}"
    _create(broker, labels, {"retention.ms": WEEK_MS})
    s = settings_factory(labels_topic=labels, registry=registry.root)
    audit = AuditConsumer(s)
    measured: list[int] = []
    backlog = BacklogWatcher(s, measured.append)
    bridge = Bridge(s, ["0", "1"], cast(LabelStudio, None))
    with caplog.at_level(logging.WARNING, logger="triage.history"):
        bridge._replay_ledger()
        audit.run(idle_exit_s=0.5)
        trainer = Trainer(s, registry, progress=lambda m: None)
        try:
            manifest = registry.manifest(registry.current() or "")
            trainer.ingest(list(manifest["classes"]), int(manifest["feature_count"]))
        finally:
            trainer.close()
        backlog.start()
        try:
            wait_until(lambda: measured, "the backlog watcher's first measurement")
        finally:
            backlog.stop()
    for metrics in (audit.loop_metrics, backlog.metrics, trainer.metrics.loop):
        assert _complete(metrics, s.topics.labels_topic) == 0
        assert _complete(metrics, s.topics.review_topic) == 1
    assert _complete(bridge.metrics.loop, s.topics.labels_topic) == 0
    warned = [r.getMessage() for r in caplog.records if s.topics.labels_topic in r.getMessage()]
    assert [w.split(":")[0] for w in warned] == ["the bridge", "audit", "retrain", "backlog watcher"], warned
