"""confluent-kafka (librdkafka) backend of the transport interface.

Same contract as ``kafka_python``: poll_batch returns a RecordBatch of real records only
(librdkafka error events such as partition EOF never become records), commit is
synchronous, send_all waits for every delivery report and classifies each failure as
retriable or not. librdkafka's own ``retriable()`` flag is only set on errors it raised
itself, so a fixed table of transient codes backs it up.
"""

from __future__ import annotations

import json
import logging
import operator
import re
import threading
import time
import uuid
from typing import Any, Optional

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, OffsetSpec

from triage.errors import TransportError
from triage.records import OutRecord, RecordBatch
from triage.settings import Settings
from triage.transport.base import (
    FLUSH_SLICE_S, Subscription, connect_error, heartbeat_interval_ms, log_assigned, reader_partitions, settings_sizes,
    topic_partitions,
)
from triage.transport.retention import TopicHistory
from triage.transport.security import security_options

log = logging.getLogger(__name__)
client_log = logging.getLogger("rdkafka")
"""librdkafka's own log lines and error callbacks (the ``logger`` config key): hidden unless
--client-logs or --log-level DEBUG, rate-limited by the CLI's logging setup."""

# Transient by nature: the broker or network will recover; the record itself is fine.
_TRANSIENT = frozenset(
    getattr(KafkaError, name)
    for name in (
        "_MSG_TIMED_OUT", "_TIMED_OUT", "_TRANSPORT", "_ALL_BROKERS_DOWN", "_QUEUE_FULL",
        "_WAIT_COORD", "_UNKNOWN_PARTITION", "_UNKNOWN_TOPIC", "_RESOLVE", "_DESTROY",
        "REQUEST_TIMED_OUT", "NOT_LEADER_FOR_PARTITION", "LEADER_NOT_AVAILABLE",
        "NOT_ENOUGH_REPLICAS", "NOT_ENOUGH_REPLICAS_AFTER_APPEND", "UNKNOWN_TOPIC_OR_PART",
        "COORDINATOR_NOT_AVAILABLE", "NOT_COORDINATOR", "COORDINATOR_LOAD_IN_PROGRESS",
        "NETWORK_EXCEPTION", "BROKER_NOT_AVAILABLE", "KAFKA_STORAGE_ERROR",
        "THROTTLING_QUOTA_EXCEEDED",
    )
    if hasattr(KafkaError, name)
)
# A commit refused because the group moved on: the new owner re-reads from the last
# commit. Never retriable (same as kafka-python's CommitFailedError).
_GROUP_MOVED = frozenset(
    getattr(KafkaError, name)
    for name in ("ILLEGAL_GENERATION", "UNKNOWN_MEMBER_ID", "REBALANCE_IN_PROGRESS",
                 "_ASSIGNMENT_LOST", "FENCED_INSTANCE_ID", "STALE_MEMBER_EPOCH")
    if hasattr(KafkaError, name)
)
_NO_RECORDS = frozenset((KafkaError._PARTITION_EOF,))
# Refused for the record's own sake: only these may dead-letter it. Any other refusal
# (TOPIC_AUTHORIZATION_FAILED, an unknown topic, ...) is the world's fault (errors.blame).
_RECORD_REFUSED = frozenset(
    getattr(KafkaError, name)
    for name in ("MSG_SIZE_TOO_LARGE", "_MSG_SIZE_TOO_LARGE", "INVALID_MSG_SIZE", "INVALID_MSG", "INVALID_RECORD",
                 "CORRUPT_MESSAGE", "RECORD_LIST_TOO_LARGE", "INVALID_TIMESTAMP", "_KEY_SERIALIZATION",
                 "_VALUE_SERIALIZATION")
    if hasattr(KafkaError, name)
)


_SECURITY_NAMES = {
    "sasl_mechanism": "sasl.mechanism", "sasl_username": "sasl.username", "sasl_password": "sasl.password",
    "ssl_cafile": "ssl.ca.location", "ssl_certfile": "ssl.certificate.location", "ssl_keyfile": "ssl.key.location",
    "ssl_key_password": "ssl.key.password",
}


def client_config(settings: Settings) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "bootstrap.servers": settings.connection.bootstrap_servers,
        "security.protocol": settings.connection.security_protocol.lower(),
        "logger": client_log,
    }
    cfg.update(security_options(settings, _SECURITY_NAMES))
    return cfg


def _classify(err: KafkaError) -> TransportError:
    code = err.code()
    retriable = (err.retriable() or code in _TRANSIENT) and not err.fatal() and code not in _GROUP_MOVED
    return TransportError(f"{err.name()}: {err.str()}", retriable=retriable, record_fault=code in _RECORD_REFUSED)


def _kafka_error(exc: BaseException) -> Optional[KafkaError]:
    return exc.args[0] if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError) else None


def _from_exception(exc: BaseException) -> TransportError:
    err = _kafka_error(exc)
    return _classify(err) if err is not None else TransportError(f"{type(exc).__name__}: {exc}", retriable=False)


class _Health:
    """Broker reachability from librdkafka's statistics and error callbacks (no broker calls)."""

    def __init__(self) -> None:
        self.up: Optional[bool] = None  # unknown until the first statistics report
        self.down_since: Optional[float] = None

    def on_stats(self, raw: str) -> None:
        try:
            brokers = json.loads(raw).get("brokers", {})
        except ValueError:
            return
        # nodeid -1 is the bootstrap placeholder; real brokers have ids >= 0.
        states = [b.get("state") for b in brokers.values() if b.get("nodeid", -1) >= 0]
        self.up = any(s == "UP" for s in states) if states else self.up
        if self.up:
            self.down_since = None

    def on_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN or err.fatal():
            self.up = False
            self.down_since = self.down_since or time.monotonic()
        client_log.warning("kafka client error: %s", err.str())

    def connected(self) -> bool:
        return self.up is not False


class ConfluentConsumer:
    def __init__(self, consumer: Consumer, health: _Health, grouped: bool) -> None:
        self._c = consumer
        self._health = health
        self._grouped = grouped
        self._next: dict[tuple[str, int], int] = {}
        self._deferred: Optional[TransportError] = None

    def poll_batch(self, max_records: int, timeout_ms: int) -> RecordBatch:
        if self._deferred is not None:  # an error seen after records were returned last time
            err, self._deferred = self._deferred, None
            raise err
        consume = self._c.consume
        try:
            # consume(n, t) waits for n records or t; take what is queued now, and block
            # only when nothing is, so a half-loaded scorer is not held back by batch_size.
            messages: list[Message] = consume(max_records, 0)
            if not messages:
                messages = consume(1, timeout_ms / 1000.0)
                if messages and max_records > 1:
                    messages += consume(max_records - 1, 0)
        except KafkaException as exc:
            raise _from_exception(exc) from exc
        if not any(map(Message.error, messages)):  # the common case: columns in C-level loops
            batch = RecordBatch(list(map(Message.topic, messages)), list(map(Message.partition, messages)),
                                list(map(Message.offset, messages)), list(map(_second, map(Message.timestamp, messages))),
                                list(map(Message.key, messages)), list(map(Message.value, messages)))
            self._next.update(zip(zip(batch.topics, batch.partitions), map(_plus_one, batch.offsets)))
            return batch
        batch = RecordBatch()
        topics, partitions, offsets = batch.topics, batch.partitions, batch.offsets
        stamps, keys, values = batch.timestamps_ms, batch.keys, batch.values
        error: Optional[KafkaError] = None
        for m in messages:
            e = m.error()
            if e is not None:
                if e.code() not in _NO_RECORDS:
                    error = e
                continue
            topics.append(m.topic())
            partitions.append(m.partition())
            offsets.append(m.offset())
            stamps.append(m.timestamp()[1])
            keys.append(m.key())
            values.append(m.value())
        if topics:
            nxt = self._next
            for t, p, o in zip(topics, partitions, offsets):
                nxt[(t, p)] = o + 1
        if error is not None:
            # Never drop records already taken from librdkafka: return them, raise next time.
            if topics:
                self._deferred = _classify(error)
            else:
                raise _classify(error)
        return batch

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        if not offsets:
            return
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            result = self._c.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            raise _from_exception(exc) from exc
        for tp in result or []:
            if tp.error is not None:
                raise _classify(tp.error)

    def assigned(self) -> list[tuple[str, int]]:
        return topic_partitions(self._c.assignment())

    def lag(self) -> dict[int, int]:
        """High watermark (cached from the last fetch response, no broker call) minus position."""
        out: dict[int, int] = {}
        for tp in self._c.assignment():
            pos = self._next.get((tp.topic, tp.partition))
            if pos is None:
                continue
            try:
                _, high = self._c.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if high is not None and high >= 0:
                out[tp.partition] = max(high - pos, 0)
        return out

    def watermarks(self) -> dict[tuple[str, int], tuple[int, int]]:
        out: dict[tuple[str, int], tuple[int, int]] = {}
        try:
            for tp in self._c.assignment():
                low, high = self._c.get_watermark_offsets(tp, timeout=10, cached=False)
                out[(tp.topic, tp.partition)] = (max(low, 0), max(high, 0))
        except KafkaException as exc:
            raise _from_exception(exc) from exc
        return out

    def connected(self) -> bool:
        return self._health.connected()

    def close(self) -> None:
        # close() leaves the group (LeaveGroup), so partitions move without a session timeout;
        # a static member (group.instance.id) does not: it keeps them for its return.
        self._c.close()


def make_consumer(settings: Settings, sub: Subscription) -> ConfluentConsumer:
    health = _Health()
    sizes = settings_sizes(settings)
    cfg = client_config(settings)
    cfg.update({
        # librdkafka insists on a group id; a private one is never joined when we assign().
        "group.id": sub.group_id or f"triage-reader-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest" if sub.from_beginning else "latest",
        "session.timeout.ms": settings.connection.session_timeout_ms,
        "heartbeat.interval.ms": heartbeat_interval_ms(settings),
        "max.poll.interval.ms": settings.connection.max_poll_interval_ms,
        # Bounded prefetch: librdkafka's defaults (64 MB / 100k records queued) make RSS
        # swing with the backlog; base.client_sizes keeps a few fetches ahead instead.
        "fetch.max.bytes": sizes.fetch_bytes,
        "max.partition.fetch.bytes": sizes.partition_fetch_bytes,
        "receive.message.max.bytes": sizes.receive_bytes,
        "queued.max.messages.kbytes": sizes.queue_kbytes,
        "queued.min.messages": sizes.queue_messages,
        "fetch.wait.max.ms": 10,
        "fetch.queue.backoff.ms": 10,
        "partition.assignment.strategy": "range",
        "statistics.interval.ms": 2000,
        "stats_cb": health.on_stats,
        "error_cb": health.on_error,
    })
    if sub.instance_id is not None:
        cfg["group.instance.id"] = sub.instance_id  # close() then leaves no group: the session timeout does
    consumer = Consumer(cfg)
    if sub.group_id is None:
        def start(topic: str, partition: int) -> TopicPartition:  # resolve "end" now (see Subscription)
            at = OFFSET_BEGINNING if sub.from_beginning else \
                consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)[1]
            return TopicPartition(topic, partition, at)

        try:
            meta = consumer.list_topics(timeout=30).topics
            known = {t: list(m.partitions) for t, m in meta.items() if m.error is None}
            consumer.assign([start(t, p) for t, p in reader_partitions(sub.topics, known.get)])
        except KafkaException as exc:
            consumer.close()
            raise _from_exception(exc) from exc
    else:
        def revoked(_c: Any, partitions: list[TopicPartition]) -> None:
            if sub.on_revoke is not None and partitions:
                sub.on_revoke()

        consumer.subscribe(list(sub.topics), on_assign=lambda _c, tps: log_assigned(tps), on_revoke=revoked,
                           on_lost=revoked)
    return ConfluentConsumer(consumer, health, sub.group_id is not None)


_second = operator.itemgetter(1)  # Message.timestamp() is (type, ms)
_plus_one = (1).__add__


class _Delivery:
    """Failed delivery reports of one send_all call. The producer reports failures only
    (``delivery.report.only.error``: no Python call per acknowledged record, ~0.5 us each on
    the hot path); a flush that empties the queue proves every other record acknowledged. A
    failure is matched back to its record by content, and records with identical topic, key
    and value are interchangeable anyway."""

    __slots__ = ("failed",)

    def __init__(self) -> None:
        self.failed: list[tuple[KafkaError, str, Optional[bytes], Optional[bytes]]] = []

    def __call__(self, err: Optional[KafkaError], msg: Message) -> None:
        if err is not None:
            self.failed.append((err, msg.topic(), msg.key(), msg.value()))


class ConfluentProducer:
    def __init__(self, producer: Producer) -> None:
        self._p = producer

    def send_all(self, records: list[OutRecord], timeout_s: float,
                 stop: Optional[threading.Event] = None) -> list[Optional[TransportError]]:
        results: list[Optional[TransportError]] = [None] * len(records)
        report = _Delivery()
        produce, poll = self._p.produce, self._p.poll
        deadline = time.monotonic() + timeout_s
        i, n = 0, len(records)
        while i < n:
            try:
                for rec in records[i:] if i else records:  # the fast path: no per-record try
                    # Positional (partition -1: the partitioner's choice) parses ~0.4 us faster per
                    # record than keywords; only records with headers (dead letters) pass one.
                    if rec.headers is None:
                        produce(rec.topic, rec.value, rec.key, -1, report)
                    else:
                        produce(rec.topic, rec.value, rec.key, -1, report, headers=rec.headers)
                    i += 1
            except BufferError:  # local queue full: serve delivery reports, then retry record i
                if time.monotonic() > deadline:
                    results[i] = TransportError("local producer queue full until timeout", retriable=True)
                    i += 1
                else:
                    poll(0.05)
            except KafkaException as exc:  # raised synchronously, e.g. record too large
                results[i] = _from_exception(exc)
                i += 1
            except (TypeError, ValueError) as exc:  # a key/value/header the client cannot take
                results[i] = TransportError(f"{type(exc).__name__}: {exc}", retriable=False, record_fault=True)
                i += 1
        while True:  # in slices: a stop (SIGTERM) is seen within one, even while the broker is away
            left = deadline - time.monotonic()
            flushed = self._p.flush(max(min(left, FLUSH_SLICE_S), 0.0)) == 0
            if flushed or left <= FLUSH_SLICE_S or (stop is not None and stop.is_set()):
                break
        if not flushed:
            # Records are still queued: we cannot tell which were acknowledged, so every
            # queued record is re-sent (duplicates, never losses).
            timeout = TransportError("no acknowledgement before timeout", retriable=True)
            return [r if r is not None else timeout for r in results]
        if report.failed:
            index: dict[tuple[str, Optional[bytes], Optional[bytes]], list[int]] = {}
            for i, rec in enumerate(records):
                if results[i] is None:
                    index.setdefault((rec.topic, rec.key, rec.value), []).append(i)
            unmatched: Optional[TransportError] = None
            for err, topic, key, value in report.failed:
                slots = index.get((topic, key, value))
                if slots:
                    results[slots.pop()] = _classify(err)
                else:
                    unmatched = _classify(err)
            if unmatched is not None:  # cannot tell which record failed: re-send, never lose
                retry = TransportError(unmatched.message, retriable=True)
                return [r if r is not None else retry for r in results]
        return results

    def close(self, timeout_s: float = 10.0) -> None:
        self._p.flush(timeout_s)


def make_producer(settings: Settings) -> ConfluentProducer:
    health = _Health()
    cfg = client_config(settings)
    cfg.update({
        "acks": "all",
        "linger.ms": settings.connection.linger_ms,
        "batch.size": 1_048_576,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "message.max.bytes": settings_sizes(settings).request_bytes,
        "message.send.max.retries": 5,
        "retry.backoff.ms": 100,
        "request.timeout.ms": 15_000,
        "message.timeout.ms": 60_000,
        "max.in.flight.requests.per.connection": 5,
        "partitioner": "murmur2_random",  # same key -> same partition as kafka-python / Java
        "delivery.report.only.error": True,  # see _Delivery
        "error_cb": health.on_error,
    })
    return ConfluentProducer(Producer(cfg))


def ensure_topics(settings: Settings, topics: list[str], partitions: int, configs: dict[str, dict[str, str]]) -> None:
    admin = AdminClient(client_config(settings))
    try:
        existing = set(admin.list_topics(timeout=30).topics)
    except KafkaException as exc:  # bootstrap failed: unreachable, or TLS/SASL refused
        err = _kafka_error(exc)
        raise connect_error(settings, f"{err.name()}: {err.str()}" if err is not None else str(exc)) from None
    missing = [t for t in dict.fromkeys(topics) if t not in existing]
    if not missing:
        return
    futures = admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=1, config=configs.get(t, {}))
                                   for t in missing], operation_timeout=30, request_timeout=30)
    for topic, fut in futures.items():
        try:
            fut.result(timeout=60)
        except KafkaException as exc:
            err = _kafka_error(exc)
            if err is not None and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise _from_exception(exc) from exc
    log.info("created topics %s with %d partitions", missing, partitions)


def describe_history(settings: Settings, topic: str, timeout_s: float) -> TopicHistory:
    admin = AdminClient(client_config(settings))
    try:
        # All topics, not this one: a metadata request naming a missing topic may create it.
        found = admin.list_topics(timeout=timeout_s).topics.get(topic)
        if found is None:
            return TopicHistory(topic, None, error="the topic does not exist")
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        entries = admin.describe_configs([resource], request_timeout=timeout_s)[resource].result(timeout_s)
        starts = admin.list_offsets({TopicPartition(topic, p): OffsetSpec.earliest() for p in found.partitions},
                                    request_timeout=timeout_s)
        log_start = {tp.partition: fut.result(timeout_s).offset for tp, fut in starts.items()}
    except KafkaException as exc:
        raise _from_exception(exc) from exc
    return TopicHistory(topic, {k: e.value for k, e in entries.items() if e.value is not None}, log_start)


# A broker that answered but refused us: retrying does not help, the settings must change.
_REFUSED = frozenset(
    getattr(KafkaError, name)
    for name in ("_AUTHENTICATION", "SASL_AUTHENTICATION_FAILED", "_SSL", "ILLEGAL_SASL_STATE",
                 "UNSUPPORTED_SASL_MECHANISM", "CLUSTER_AUTHORIZATION_FAILED", "TOPIC_AUTHORIZATION_FAILED")
    if hasattr(KafkaError, name)
)
_FAILED_BECAUSE = re.compile(r"failed: (.*?)(?: \(after \d+ms.*\))?$")


def _short(err: KafkaError) -> str:
    """librdkafka's connect failure without its broker/thread prefixes: 'Connection refused'."""
    text = err.str()
    found = _FAILED_BECAUSE.search(text)
    return found.group(1) if found else text


def probe(settings: Settings, timeout_s: float) -> Optional[str]:
    """Ask for cluster metadata until a broker answers or ``timeout_s`` passes. None when one
    answered; otherwise the last connection error. A broker that answers but refuses (TLS,
    SASL, authorization) raises the connect error at once."""
    seen: list[KafkaError] = []
    cfg = client_config(settings)
    cfg["error_cb"] = seen.append
    admin = AdminClient(cfg)
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        started = time.monotonic()
        remaining = deadline - started
        if remaining <= 0:
            return last
        try:
            admin.list_topics(timeout=min(1.0, remaining))
            return None
        except KafkaException as exc:
            err = _kafka_error(exc)
            last = last or (f"{err.name()}: {err.str()}" if err is not None else str(exc))
        admin.poll(0)  # serves error_cb and the client logger
        for err in seen:
            if err.code() in _REFUSED or err.fatal():
                raise connect_error(settings, f"{err.name()}: {err.str()}")
            if err.code() != KafkaError._ALL_BROKERS_DOWN:
                last = _short(err)
        seen.clear()
        pause = min(0.2 - (time.monotonic() - started), deadline - time.monotonic())
        if pause > 0:
            time.sleep(pause)
