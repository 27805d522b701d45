"""A small transport interface over the Kafka clients; the pure logic never sees a client.

``make_consumer`` / ``make_producer`` / ``ensure_topics`` pick the backend from
``Settings.kafka_client`` (auto = confluent-kafka when installed, else kafka-python).
"""

from __future__ import annotations

import importlib.util
from typing import Callable, Optional, Protocol

from triage.errors import ConfigError, TransportError
from triage.records import OutRecord, RecordBatch
from triage.settings import Settings

Offsets = dict[tuple[str, int], int]


class Consumer(Protocol):
    def poll_batch(self, max_records: int, timeout_ms: int) -> RecordBatch: ...
    def commit(self, offsets: Offsets) -> None: ...
    def assigned(self) -> list[tuple[str, int]]: ...
    def lag(self) -> dict[int, int]: ...
    def connected(self) -> bool: ...
    def close(self) -> None: ...


class Producer(Protocol):
    def send_all(self, records: list[OutRecord], timeout_s: float) -> list[Optional[TransportError]]:
        """Send and wait for every ack. Returns, per record, None or the failure."""
        ...

    def close(self) -> None: ...


def backend_name(settings: Settings) -> str:
    if settings.connection.kafka_client != "auto":
        return settings.connection.kafka_client
    return "confluent" if importlib.util.find_spec("confluent_kafka") else "kafka-python"


def _backend(settings: Settings):  # type: ignore[no-untyped-def]
    name = backend_name(settings)
    if name == "confluent":
        if importlib.util.find_spec("confluent_kafka") is None:
            raise ConfigError("TRIAGE_KAFKA_CLIENT=confluent but confluent-kafka is not installed: pip install confluent-kafka")
        try:
            from triage.transport import confluent as backend
        except ImportError:  # backend module not available in this build
            from triage.transport import kafka_python as backend
    else:
        from triage.transport import kafka_python as backend
    return backend


def make_consumer(
    settings: Settings,
    topics: list[str],
    *,
    group_id: Optional[str],
    from_beginning: bool = True,
    on_revoke: Optional[Callable[[], None]] = None,
) -> Consumer:
    return _backend(settings).make_consumer(settings, topics, group_id=group_id,
                                             from_beginning=from_beginning, on_revoke=on_revoke)


def make_producer(settings: Settings, *, transactional_id: Optional[str] = None) -> Producer:
    return _backend(settings).make_producer(settings)


def ensure_topics(settings: Settings, topics: list[str], partitions: Optional[int] = None) -> None:
    _backend(settings).ensure_topics(settings, topics, partitions or settings.connection.topic_partitions)
