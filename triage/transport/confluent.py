"""confluent-kafka (librdkafka) backend of the transport interface."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional

from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import KafkaError, KafkaException, Producer as CKProducer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from triage.errors import TransportError
from triage.records import OutRecord, RecordBatch
from triage.settings import Settings

log = logging.getLogger(__name__)

# Failures that no retry can fix: the record goes to the DLQ (stage ``produce``).
_NOT_RETRIABLE = {
    getattr(KafkaError, name) for name in (
        "MSG_SIZE_TOO_LARGE", "_MSG_SIZE_TOO_LARGE", "INVALID_MSG_SIZE", "RECORD_LIST_TOO_LARGE",
        "TOPIC_AUTHORIZATION_FAILED", "INVALID_RECORD", "_INVALID_ARG",
    ) if hasattr(KafkaError, name)
}


def client_config(settings: Settings) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "security.protocol": settings.security_protocol,
        "log_level": 3,
        # librdkafka logs through Python logging (quiet unless configured), not raw stderr.
        "logger": logging.getLogger("rdkafka"),
    }
    if settings.sasl_mechanism:
        cfg["sasl.mechanism"] = settings.sasl_mechanism
        cfg["sasl.username"] = settings.sasl_username
        cfg["sasl.password"] = settings.sasl_password.get_secret_value() if settings.sasl_password else None
    if settings.ssl_cafile is not None:
        cfg["ssl.ca.location"] = str(settings.ssl_cafile)
    if settings.ssl_certfile is not None:
        cfg["ssl.certificate.location"] = str(settings.ssl_certfile)
    if settings.ssl_keyfile is not None:
        cfg["ssl.key.location"] = str(settings.ssl_keyfile)
    if settings.ssl_key_password is not None:
        cfg["ssl.key.password"] = settings.ssl_key_password.get_secret_value()
    return cfg


def _transport_error(err: KafkaError) -> TransportError:
    retriable = err.code() not in _NOT_RETRIABLE and not err.fatal()
    return TransportError(f"{err.name()}: {err.str()}", retriable=retriable)


class ConfluentConsumer:
    def __init__(self, consumer: CKConsumer, grouped: bool) -> None:
        self._c = consumer
        self._grouped = grouped
        self._next: dict[tuple[str, int], int] = {}
        self._assigned: list[tuple[str, int]] = []
        self._connected = True

    def _on_assign(self, _c: Any, partitions: list[TopicPartition]) -> None:
        self._assigned = sorted((tp.topic, tp.partition) for tp in partitions)
        log.info("assigned partitions: %s", self._assigned)

    def poll_batch(self, max_records: int, timeout_ms: int) -> RecordBatch:
        try:
            messages = self._c.consume(num_messages=max_records, timeout=timeout_ms / 1000.0)
        except KafkaException as exc:
            raise _transport_error(exc.args[0]) from exc
        batch = RecordBatch()
        append = batch.append
        for m in messages:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", err)
                    if err.code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN):
                        self._connected = False
                continue
            ts = m.timestamp()[1]
            append(m.topic(), m.partition(), m.offset(), ts, m.key(), m.value())
        if batch.offsets:
            self._connected = True
            for t, p, o in zip(batch.topics, batch.partitions, batch.offsets):
                self._next[(t, p)] = o + 1
        return batch

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        if not offsets:
            return
        try:
            self._c.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)
        except KafkaException as exc:
            raise _transport_error(exc.args[0]) from exc

    def assigned(self) -> list[tuple[str, int]]:
        if not self._grouped:
            return [(tp.topic, tp.partition) for tp in self._c.assignment()]
        return list(self._assigned)

    def lag(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for (topic, partition), pos in self._next.items():
            try:
                _low, high = self._c.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            except KafkaException:
                continue
            if high is not None and high >= 0:
                out[partition] = max(high - pos, 0)
        return out

    def connected(self) -> bool:
        return self._connected

    def close(self) -> None:
        self._c.close()


def make_consumer(
    settings: Settings,
    topics: list[str],
    *,
    group_id: Optional[str],
    from_beginning: bool = True,
    on_revoke: Optional[Callable[[], None]] = None,
) -> ConfluentConsumer:
    cfg = client_config(settings)
    cfg.update({
        "group.id": group_id or f"triage-reader-{time.time_ns()}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest" if from_beginning else "latest",
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": max(settings.session_timeout_ms // 3, 500),
        "max.poll.interval.ms": settings.max_poll_interval_ms,
        "fetch.max.bytes": max(52_428_800, settings.max_message_bytes * 2),
        "max.partition.fetch.bytes": max(1_048_576, settings.max_message_bytes + 1024),
        "statistics.interval.ms": 0,
        "enable.partition.eof": False,
    })
    consumer = CKConsumer(cfg)
    wrapped = ConfluentConsumer(consumer, grouped=group_id is not None)
    if group_id is None:
        # No group: assign every partition explicitly; nothing is ever committed.
        meta = consumer.list_topics(timeout=10)
        parts = []
        for t in topics:
            for p in sorted(meta.topics[t].partitions) if t in meta.topics else []:
                # Resolve "end" now, not at the first fetch, so nothing produced after this
                # call is skipped (the model watcher relies on it).
                offset = -2 if from_beginning else consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
                parts.append(TopicPartition(t, p, offset))
        consumer.assign(parts)
    else:
        def revoked(_c: Any, partitions: list[TopicPartition]) -> None:
            wrapped._assigned = []
            if on_revoke and partitions:
                on_revoke()

        consumer.subscribe(topics, on_assign=wrapped._on_assign, on_revoke=revoked, on_lost=revoked)
    return wrapped


class ConfluentProducer:
    def __init__(self, producer: CKProducer) -> None:
        self._p = producer

    def send_all(self, records: list[OutRecord], timeout_s: float) -> list[Optional[TransportError]]:
        results: list[Optional[TransportError]] = [None] * len(records)
        pending = [0]

        def report(i: int) -> Callable[[Optional[KafkaError], Any], None]:
            def cb(err: Optional[KafkaError], _msg: Any) -> None:
                pending[0] -= 1
                if err is not None:
                    results[i] = _transport_error(err)
            return cb

        produce = self._p.produce
        for i, rec in enumerate(records):
            while True:
                try:
                    produce(rec.topic, rec.value, rec.key, headers=rec.headers, on_delivery=report(i))
                    pending[0] += 1
                    break
                except BufferError:  # local queue full: serve delivery reports, then retry
                    self._p.poll(0.05)
                except KafkaException as exc:
                    results[i] = _transport_error(exc.args[0])
                    break
        deadline = time.monotonic() + timeout_s
        while pending[0] > 0 and time.monotonic() < deadline:
            self._p.flush(min(1.0, max(deadline - time.monotonic(), 0.01)))
        if pending[0] > 0:
            # Unacknowledged after the timeout: report retriable; librdkafka may still
            # deliver them, which at-least-once turns into duplicates, never losses.
            for i, r in enumerate(results):
                if r is None:
                    results[i] = TransportError("no acknowledgement before timeout", retriable=True)
        return results

    def close(self) -> None:
        self._p.flush(10)


def make_producer(settings: Settings) -> ConfluentProducer:
    cfg = client_config(settings)
    cfg.update({
        "acks": "all",
        "linger.ms": settings.linger_ms,
        "batch.size": 1_000_000,
        "message.max.bytes": max(1_048_576, settings.max_message_bytes + 64 * 1024),
        "compression.type": "none",
        "enable.idempotence": False,
        "message.timeout.ms": 30_000,
        "queue.buffering.max.messages": 500_000,
    })
    return ConfluentProducer(CKProducer(cfg))


def ensure_topics(settings: Settings, topics: list[str], partitions: int) -> None:
    admin = AdminClient(client_config(settings))
    try:
        existing = set(admin.list_topics(timeout=10).topics)
    except KafkaException as exc:  # bootstrap failed: unreachable, or TLS/SASL refused
        err = exc.args[0]
        raise TransportError(
            f"cannot connect to {settings.bootstrap_servers} ({err.name()}: {err.str()}); check "
            "bootstrap_servers and the security settings (security_protocol, sasl_*, ssl_*)",
            retriable=True,
        ) from None
    missing = [t for t in dict.fromkeys(topics) if t not in existing]
    if not missing:
        return
    futures = admin.create_topics([NewTopic(t, partitions, 1) for t in missing], operation_timeout=10)
    for topic, fut in futures.items():
        try:
            fut.result(15)
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise _transport_error(err) from exc
    log.info("created topics %s with %d partitions", missing, partitions)
