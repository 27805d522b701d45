"""kafka-python backend of the transport interface."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Optional, TypeVar

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic, OffsetSpec
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import (
    AuthorizationError, CorruptRecordError, IllegalSaslStateError, InvalidRecordError, InvalidTimestampError, KafkaError,
    KafkaTimeoutError, MessageSizeTooLargeError, RecordListTooLargeError, SaslAuthenticationFailedError, TopicAlreadyExistsError,
    UnsupportedSaslMechanismError,
)
from kafka.structs import OffsetAndMetadata

from triage.errors import TransportError
from triage.records import OutRecord, RecordBatch
from triage.settings import Settings
from triage.transport.base import (
    FLUSH_SLICE_S, Subscription, connect_error, heartbeat_interval_ms, log_assigned, reader_partitions, settings_sizes, tcp_reason,
    topic_partitions,
)
from triage.transport.retention import TopicHistory
from triage.transport.security import security_options

log = logging.getLogger(__name__)
T = TypeVar("T")


_SECURITY_NAMES = {
    "sasl_mechanism": "sasl_mechanism", "sasl_username": "sasl_plain_username",
    "sasl_password": "sasl_plain_password", "ssl_cafile": "ssl_cafile", "ssl_certfile": "ssl_certfile",
    "ssl_keyfile": "ssl_keyfile", "ssl_key_password": "ssl_password",
}


def client_config(settings: Settings) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "bootstrap_servers": settings.connection.bootstrap_servers.split(","),
        "security_protocol": settings.connection.security_protocol,
        # The constructors bootstrap: an unreachable cluster fails them after the connect timeout.
        "bootstrap_timeout_ms": int(settings.connection.connect_timeout_s * 1000),
    }
    cfg.update(security_options(settings, _SECURITY_NAMES))
    return cfg


def _describe(exc: BaseException) -> str:
    text, name = str(exc), type(exc).__name__
    return text if name in text.split(":", 1)[0] else f"{name}: {text}"  # many already name their class


def _connect(settings: Settings, client: Callable[..., T], **options: Any) -> T:
    """A kafka-python client; its constructor bootstraps (up to connect_timeout_s), so an
    unreachable or refusing cluster fails here, with the one connect-error text."""
    try:
        return client(**options, **client_config(settings))
    except KafkaError as exc:  # bootstrap failed: unreachable, or TLS/SASL refused
        raise connect_error(settings, _describe(exc)) from None


# Refused for the record's own sake: only these may dead-letter it (errors.blame). A value the
# client cannot encode fails send() synchronously with AssertionError/TypeError/ValueError.
_RECORD_REFUSED = (MessageSizeTooLargeError, RecordListTooLargeError, InvalidRecordError, CorruptRecordError,
                   InvalidTimestampError, AssertionError, TypeError, ValueError)


def _transport_error(exc: BaseException) -> TransportError:
    retriable = bool(getattr(exc, "retriable", False)) or type(exc).__name__ in (
        "KafkaTimeoutError", "NoBrokersAvailable", "KafkaConnectionError", "RequestTimedOutError",
    )
    return TransportError(_describe(exc), retriable=retriable, record_fault=isinstance(exc, _RECORD_REFUSED))


class _Listener(ConsumerRebalanceListener):
    def __init__(self, on_revoke: Optional[Callable[[], None]]) -> None:
        self.on_revoke = on_revoke

    def on_partitions_revoked(self, revoked: Any) -> None:
        if self.on_revoke and revoked:
            self.on_revoke()

    def on_partitions_assigned(self, assigned: Any) -> None:
        log_assigned(assigned)


class KafkaPythonConsumer:
    def __init__(self, consumer: KafkaConsumer) -> None:
        self._c = consumer
        self._next: dict[TopicPartition, int] = {}

    def poll_batch(self, max_records: int, timeout_ms: int) -> RecordBatch:
        batch = RecordBatch()
        try:
            polled = self._c.poll(timeout_ms=timeout_ms, max_records=max_records)
        except KafkaError as exc:
            raise _transport_error(exc) from exc
        for tp, records in polled.items():
            topic, partition = tp.topic, tp.partition
            for rec in records:
                batch.append(topic, partition, rec.offset, rec.timestamp, rec.key, rec.value)
            if records:
                self._next[tp] = records[-1].offset + 1
        return batch

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        if not offsets:
            return
        try:
            self._c.commit({TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()})
        except KafkaError as exc:
            raise _transport_error(exc) from exc

    def assigned(self) -> list[tuple[str, int]]:
        return topic_partitions(self._c.assignment())

    def lag(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for tp in self._c.assignment():
            high = self._c.highwater(tp)
            pos = self._next.get(tp)
            if high is not None and pos is not None:
                out[tp.partition] = max(high - pos, 0)
        return out

    def watermarks(self) -> dict[tuple[str, int], tuple[int, int]]:
        tps = list(self._c.assignment())
        try:
            first, end = self._c.beginning_offsets(tps), self._c.end_offsets(tps)
        except KafkaError as exc:
            raise _transport_error(exc) from exc
        return {(tp.topic, tp.partition): (int(first[tp]), int(end[tp])) for tp in tps}

    def connected(self) -> bool:
        client = self._c._client  # kafka-python keeps connection state on its client
        for b in client.cluster.brokers():
            node = getattr(b, "node_id", None)
            if client.connected(node if node is not None else getattr(b, "nodeId", None)):
                return True
        return False

    def close(self) -> None:
        self._c.close(autocommit=False)


def make_consumer(settings: Settings, sub: Subscription) -> KafkaPythonConsumer:
    sizes = settings_sizes(settings)
    consumer = _connect(
        settings, KafkaConsumer,
        group_id=sub.group_id,
        group_instance_id=sub.instance_id,  # static: close() sends no LeaveGroup
        enable_auto_commit=False,
        auto_offset_reset="earliest" if sub.from_beginning else "latest",
        session_timeout_ms=settings.connection.session_timeout_ms,
        heartbeat_interval_ms=heartbeat_interval_ms(settings),
        max_poll_interval_ms=settings.connection.max_poll_interval_ms,
        max_poll_records=settings.serving.batch_size,
        fetch_max_bytes=sizes.fetch_bytes,
        max_partition_fetch_bytes=sizes.partition_fetch_bytes,
    )
    if sub.group_id is None:
        try:
            partitions = [TopicPartition(t, p) for t, p in reader_partitions(sub.topics, consumer.partitions_for_topic)]
            consumer.assign(partitions)
            if sub.from_beginning:
                consumer.seek_to_beginning()
            else:  # resolve "end" now (see Subscription)
                for tp, end in consumer.end_offsets(partitions).items():
                    consumer.seek(tp, end)
        except KafkaError as exc:
            consumer.close(autocommit=False)
            raise _transport_error(exc) from exc
    else:
        consumer.subscribe(list(sub.topics), listener=_Listener(sub.on_revoke))
    return KafkaPythonConsumer(consumer)


class KafkaPythonProducer:
    def __init__(self, producer: KafkaProducer) -> None:
        self._p = producer

    def send_all(self, records: list[OutRecord], timeout_s: float,
                 stop: Optional[threading.Event] = None) -> list[Optional[TransportError]]:
        futures: list[Any] = []
        results: list[Optional[TransportError]] = [None] * len(records)
        for i, rec in enumerate(records):
            try:
                futures.append(self._p.send(rec.topic, value=rec.value, key=rec.key, headers=rec.headers or []))
            except Exception as exc:  # raised synchronously, e.g. record too large
                futures.append(None)
                results[i] = _transport_error(exc)
        deadline = time.monotonic() + timeout_s
        while True:  # in slices: a stop (SIGTERM) is seen within one, even while the broker is away
            left = deadline - time.monotonic()
            try:
                self._p.flush(timeout=max(min(left, FLUSH_SLICE_S), 0.0))
                break
            except KafkaTimeoutError:
                if left <= FLUSH_SLICE_S or (stop is not None and stop.is_set()):
                    break  # what is not acknowledged yet is reported below, retriable
            except Exception as exc:
                err = _transport_error(exc)
                return [results[i] or (err if f is None or not f.succeeded() else None) for i, f in enumerate(futures)]
        for i, f in enumerate(futures):
            if f is None:
                continue
            if not f.is_done:
                results[i] = TransportError("no acknowledgement before timeout", retriable=True)
            elif f.failed():
                results[i] = _transport_error(f.exception)
        return results

    def close(self, timeout_s: float = 10.0) -> None:
        self._p.close(timeout=timeout_s)


def make_producer(settings: Settings) -> KafkaPythonProducer:
    producer = _connect(
        settings, KafkaProducer,
        acks="all",
        linger_ms=settings.connection.linger_ms,
        batch_size=256 * 1024,
        max_request_size=settings_sizes(settings).request_bytes,
        retries=5,
        max_in_flight_requests_per_connection=5,
        request_timeout_ms=15_000,
    )
    return KafkaPythonProducer(producer)


def ensure_topics(settings: Settings, topics: list[str], partitions: int, configs: dict[str, dict[str, str]]) -> None:
    admin = _connect(settings, KafkaAdminClient)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in dict.fromkeys(topics) if t not in existing]
        if missing:
            try:
                admin.create_topics([NewTopic(t, partitions, 1, topic_configs=configs.get(t, {})) for t in missing])
            except TopicAlreadyExistsError:
                pass
            log.info("created topics %s with %d partitions", missing, partitions)
    except KafkaError as exc:
        raise _transport_error(exc) from exc
    finally:
        admin.close()


def describe_history(settings: Settings, topic: str, timeout_s: float) -> TopicHistory:
    admin = _connect(settings, KafkaAdminClient)
    try:
        # All topics, not this one: a metadata request naming a missing topic may create it.
        if topic not in set(admin.list_topics()):
            return TopicHistory(topic, None, error="the topic does not exist")
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all")
        entries = described.get("topic", {}).get(topic, {})
        partitions = admin.describe_topics([topic])[0]["partitions"]
        starts = admin.list_partition_offsets({TopicPartition(topic, p["partition_index"]): OffsetSpec.EARLIEST
                                               for p in partitions}, timeout_ms=int(timeout_s * 1000))
    except KafkaError as exc:
        raise _transport_error(exc) from exc
    finally:
        admin.close()
    return TopicHistory(topic, {k: e["value"] for k, e in entries.items() if e.get("value") is not None},
                        {tp.partition: found.offset for tp, found in starts.items()})


_REFUSED = (AuthorizationError, IllegalSaslStateError, SaslAuthenticationFailedError, UnsupportedSaslMechanismError)


def probe(settings: Settings, timeout_s: float) -> Optional[str]:
    """Bootstrap an admin client (a metadata request) within ``timeout_s``. None when a broker
    answered; otherwise why not. A broker that refuses us (SASL, authorization) raises the
    connect error at once."""
    try:
        admin = KafkaAdminClient(**{**client_config(settings), "bootstrap_timeout_ms": int(timeout_s * 1000)})
    except _REFUSED as exc:
        raise connect_error(settings, _describe(exc)) from None
    except KafkaError as exc:
        return tcp_reason(settings.connection.bootstrap_servers) or _describe(exc)
    admin.close()
    return None
