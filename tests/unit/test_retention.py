"""``history_gaps``: when may earlier records of a topic be gone? (The broker side, both
clients: tests/integration/test_topic_history.py.)"""

from __future__ import annotations

import logging

import pytest

from triage import transport
from triage.errors import TransportError
from triage.metrics import LoopMetrics
from triage.settings import Settings, TopicSettings
from triage.transport.retention import COMPACTED, UNLIMITED, TopicHistory, check_history, history_gaps, topic_configs

WHOLE = {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}


def test_a_topic_that_keeps_everything_and_deleted_nothing_has_no_gap() -> None:
    assert history_gaps(TopicHistory("t", WHOLE, {0: 0, 1: 0})) == []
    assert history_gaps(TopicHistory("t", {"retention.ms": "-1"}, {0: 0})) == []  # defaults: delete, no size cap


@pytest.mark.parametrize("configs, log_start, says", [
    ({**WHOLE, "retention.ms": "604800000"}, {}, "retention.ms is 604800000 (7 days)"),
    ({**WHOLE, "retention.bytes": "1073741824"}, {}, "retention.bytes is 1073741824"),
    ({**WHOLE, "cleanup.policy": "compact"}, {}, "only each key's latest record is kept"),
    ({**WHOLE, "cleanup.policy": "compact,delete"}, {}, "cleanup.policy is compact,delete"),
    (WHOLE, {0: 0, 1: 1200}, "partition 1 starts at offset 1200"),
    ({"cleanup.policy": "delete"}, {}, "does not report its retention.ms"),  # unknown is not whole
    (None, {}, "could not be read (refused)"),
])
def test_anything_that_may_have_dropped_records_is_a_gap(configs: dict[str, str] | None, log_start: dict[int, int],
                                                        says: str) -> None:
    gaps = history_gaps(TopicHistory("t", configs, log_start, error="refused"))
    assert len(gaps) == 1 and says in gaps[0], gaps


def test_the_topics_state_is_rebuilt_from_keep_their_whole_history() -> None:
    topics = TopicSettings()
    configs = topic_configs(topics)
    assert configs[topics.labels_topic] == configs[topics.review_topic] == UNLIMITED
    assert history_gaps(TopicHistory(topics.labels_topic, UNLIMITED)) == []
    assert configs[topics.models_topic] == COMPACTED
    assert topics.samples_topic not in configs and topics.predictions_topic not in configs


@pytest.mark.parametrize("error", [TransportError("kafka: TOPIC_AUTHORIZATION_FAILED", retriable=False),
                                   KeyError("partition_index")])
def test_a_check_that_cannot_describe_the_topic_reports_it_and_never_stops_the_process(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, error: Exception,
) -> None:
    def refused(settings: Settings, topic: str) -> TopicHistory:
        raise error

    monkeypatch.setattr(transport, "describe_history", refused)
    metrics = LoopMetrics()
    with caplog.at_level(logging.WARNING, logger="triage.history"):
        assert check_history(Settings(), ["triage.labels"], metrics, process="bridge") is False
    assert metrics.history_complete.labels(topic="triage.labels")._value.get() == 0
    assert "bridge: HISTORY MAY BE INCOMPLETE" in caplog.text and "could not be read" in caplog.text
