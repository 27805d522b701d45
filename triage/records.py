"""Broker-neutral record types shared by the pure handlers and the transports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

Headers = list[tuple[str, bytes]]


@dataclass(slots=True)
class RecordBatch:
    """One poll's records, column-wise (cheap to build from either Kafka client)."""

    topics: list[str] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    timestamps_ms: list[int] = field(default_factory=list)
    keys: list[Optional[bytes]] = field(default_factory=list)
    values: list[Optional[bytes]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.values)

    def append(
        self, topic: str, partition: int, offset: int, timestamp_ms: int,
        key: Optional[bytes], value: Optional[bytes],
    ) -> None:
        self.topics.append(topic)
        self.partitions.append(partition)
        self.offsets.append(offset)
        self.timestamps_ms.append(timestamp_ms)
        self.keys.append(key)
        self.values.append(value)

    def take(self, rows: list[int]) -> "RecordBatch":
        """The records at ``rows``, in that order (a sub-batch for isolating a failure)."""
        return RecordBatch(
            [self.topics[i] for i in rows],
            [self.partitions[i] for i in rows],
            [self.offsets[i] for i in rows],
            [self.timestamps_ms[i] for i in rows],
            [self.keys[i] for i in rows],
            [self.values[i] for i in rows],
        )

    def next_offsets(self) -> dict[tuple[str, int], int]:
        """Offsets to commit once every output of this batch is acknowledged."""
        out: dict[tuple[str, int], int] = {}
        for topic, partition, offset in zip(self.topics, self.partitions, self.offsets):
            key = (topic, partition)
            if offset + 1 > out.get(key, -1):
                out[key] = offset + 1
        return out


@dataclass(slots=True)
class OutRecord:
    topic: str
    key: Optional[bytes]
    value: Optional[bytes]
    headers: Optional[Headers] = None
    source: int = -1  # index of the input record in its batch (for produce-stage DLQ)
    reason: str = ""  # routing reason, or the DLQ stage: the label of triage_samples_total
