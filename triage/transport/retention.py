"""What history each triage topic keeps, and the start-up check that it is all still there.

``topic_configs`` is what ``ensure_topics`` sets on the topics it creates; compose's
``topic-init`` and ``deploy/k8s/base/topics.yaml`` create them with the same configs (a deploy test
compares them). Why each topic keeps what it keeps: docs/contracts.md#topics-and-their-history.

``check_history`` is called at start by every process that rebuilds state from a topic read
from its beginning (the Label Studio bridge's ledger, the audit consumer, the backlog watcher,
the retrain job). When earlier records may be gone it logs a WARNING naming the cause and the
fix, and sets ``triage_topic_history_complete{topic}`` to 0 (alert TriageTopicHistoryIncomplete).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Mapping, Optional

from triage.errors import TransportError
from triage.metrics import LoopMetrics
from triage.settings import Settings, TopicSettings

log = logging.getLogger("triage.history")

# Every record for as long as the topic exists: the source of truth of a rebuilt state.
UNLIMITED = {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}
# The latest record per key; older ones may go.
COMPACTED = {"cleanup.policy": "compact"}
DLQ_RETENTION_MS = 14 * 24 * 3600 * 1000


def topic_configs(topics: TopicSettings) -> dict[str, dict[str, str]]:
    """Topic -> the configs triage creates it with (topics not named keep the broker's defaults:
    samples and predictions are streams, read once)."""
    return {
        topics.review_topic: UNLIMITED,  # the annotation queue: backlog, audit join, retrain join
        topics.labels_topic: UNLIMITED,  # every human answer: the bridge's ledger, audit, retrain
        topics.models_topic: COMPACTED,  # announcements only; the registry is the source of truth
        topics.dlq_topic: {"retention.ms": str(DLQ_RETENTION_MS)},  # for humans to inspect
    }


@dataclass(frozen=True)
class TopicHistory:
    """What the broker says about a topic: its configs (None when they could not be read; a
    broker may leave out what was never set, as Tansu does) and, per partition, the first
    offset it still holds."""

    topic: str
    configs: Optional[Mapping[str, str]]
    log_start: Mapping[int, int] = field(default_factory=dict)
    error: str = ""


def history_gaps(h: TopicHistory) -> list[str]:
    """Why earlier records of the topic may be gone; empty when all of them are there."""
    if h.configs is None:
        return [f"its configs could not be read ({h.error or 'no answer'})"]
    gaps = []
    retention = h.configs.get("retention.ms")
    if retention is None:
        gaps.append("the broker does not report its retention.ms")
    elif retention != "-1":
        gaps.append(f"retention.ms is {retention} ({_days(retention)}): older records are deleted")
    size = h.configs.get("retention.bytes")
    if size not in (None, "-1"):
        gaps.append(f"retention.bytes is {size}: the oldest records are deleted past that size")
    policy = h.configs.get("cleanup.policy", "delete")
    if "compact" in policy:
        gaps.append(f"cleanup.policy is {policy}: only each key's latest record is kept")
    gaps += [f"partition {p} starts at offset {o}: the records before it are deleted"
             for p, o in sorted(h.log_start.items()) if o > 0]
    return gaps


def _days(ms: str) -> str:
    try:
        return f"{int(ms) / 86_400_000:g} days"
    except ValueError:
        return "not a number"


def check_history(settings: Settings, topics: list[str], metrics: LoopMetrics, *, process: str) -> bool:
    """Check at start that ``process`` (its name in the log) can rebuild its state from all of ``topics``: True when
    every one keeps its whole history. Never raises: a topic that cannot be described counts as
    incomplete (warned and exported), and the process goes on with what there is."""
    from triage.transport import describe_history  # the package imports this module

    complete = True
    for topic in topics:
        try:
            found = describe_history(settings, topic)
        except TransportError as exc:
            found = TopicHistory(topic, None, error=exc.message)
        except Exception as exc:  # noqa: BLE001 - the check advises: a client surprise is reported, not fatal
            found = TopicHistory(topic, None, error=f"{type(exc).__name__}: {exc}")
        gaps = history_gaps(found)
        metrics.history_complete.labels(topic=topic).set(0 if gaps else 1)
        if gaps:
            complete = False
            log.warning(
                "%s: HISTORY MAY BE INCOMPLETE: it rebuilds its state from %s from the beginning, but %s, so "
                "that state may miss older records. Fix: keep the topic's whole history "
                "(kafka-configs.sh --alter --entity-type topics --entity-name %s --add-config "
                "retention.ms=-1,retention.bytes=-1,cleanup.policy=delete); runbook: docs/operations/alerts.md"
                "#triagetopichistoryincomplete", process, topic, "; ".join(gaps), topic)
    return complete
