"""The bridge's ledger replay against the real broker: it reads every partition of the labels
topic to the end offsets it had at start, even when the first polls bring nothing (before, a
replay whose first three polls were empty judged itself caught up by ``lag()``, which only
covers partitions that delivered, and the first reconcile republished every annotation)."""

from __future__ import annotations

from typing import Any, Callable

import pytest

import consumers.labelstudio_bridge as bridge_module
from tests.fixtures import produce
from triage.annotation.labelstudio.changes import LabelEvent
from triage.contracts import encode_label
from triage.records import RecordBatch
from triage.settings import Settings


class SlowStart:
    """A real consumer whose first ``empty`` polls bring nothing (a slow first fetch)."""

    def __init__(self, inner: Any, empty: int) -> None:
        self.inner, self.empty = inner, empty

    def poll_batch(self, max_records: int, timeout_ms: int) -> RecordBatch:
        if self.empty > 0:
            self.empty -= 1
            return RecordBatch()
        return self.inner.poll_batch(max_records, timeout_ms)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize("empty_polls", [0, 5])
def test_the_replay_reads_every_partition_to_its_end(settings_factory: Callable[..., Settings],
                                                     monkeypatch: pytest.MonkeyPatch, empty_polls: int) -> None:
    s = settings_factory()
    events = [LabelEvent(f"s{i}", "7", 100 + i, i) for i in range(12)]  # keys spread over the partitions
    produce(s, s.topics.labels_topic, [(e.sample_id.encode(), encode_label(e.sample_id, e.label, origin=e.origin))
                                       for e in events])
    real = bridge_module.make_consumer
    monkeypatch.setattr(bridge_module, "make_consumer", lambda *a, **k: SlowStart(real(*a, **k), empty_polls))
    bridge = bridge_module.Bridge(s, [str(i) for i in range(10)], client=None)  # type: ignore[arg-type]
    bridge._replay_ledger()
    assert sorted(bridge.ledger.live) == [e.annotation_id for e in events]
