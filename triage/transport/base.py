"""What both Kafka backends share: the Consumer/Producer protocols, the client sizing rules,
the consumer-group timing, the connect-error text, and ``send_until_acked``, the one path
every sender uses to get records acknowledged.

Nothing here imports a Kafka client: the backends translate these values into their own
option names, and ``send_until_acked`` works over the ``Producer`` protocol alone (so it is
unit-tested with a fake producer).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional, Protocol, Sequence

from triage.errors import WORLD, TransportError, blame
from triage.records import OutRecord, RecordBatch
from triage.settings import Settings

log = logging.getLogger("triage.transport")

Offsets = dict[tuple[str, int], int]

# --- the interface the rest of triage sees ------------------------------------------------


class Consumer(Protocol):
    def poll_batch(self, max_records: int, timeout_ms: int) -> RecordBatch: ...
    def commit(self, offsets: Offsets) -> None: ...
    def assigned(self) -> list[tuple[str, int]]: ...
    def lag(self) -> dict[int, int]: ...
    def watermarks(self) -> dict[tuple[str, int], tuple[int, int]]:
        """(first, end) offset of every assigned partition, asked of the broker now."""
        ...
    def connected(self) -> bool: ...
    def close(self) -> None: ...


class Producer(Protocol):
    def send_all(self, records: list[OutRecord], timeout_s: float,
                 stop: Optional[threading.Event] = None) -> list[Optional[TransportError]]:
        """Send and wait for every ack, at most ``timeout_s``, less once ``stop`` is set (what
        is not acknowledged by then fails, retriable). Returns, per record, None or the failure."""
        ...

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush what is queued for up to ``timeout_s`` (0: drop it), then release the client."""
        ...


@dataclass(frozen=True)
class Subscription:
    """What a consumer reads. ``group_id`` None means a group-less reader: it is assigned every
    partition of ``topics`` at once and starts at the beginning or at the current end, resolved
    when the consumer is made (not lazily at the first fetch), so nothing produced after
    ``make_consumer`` returns is skipped (the model watcher relies on it)."""

    topics: tuple[str, ...]
    group_id: Optional[str]
    from_beginning: bool = True
    on_revoke: Optional[Callable[[], None]] = None  # called when a group takes partitions away
    instance_id: Optional[str] = None  # group.instance.id: static membership (KIP-345)


def reader_partitions(topics: Iterable[str], partitions_of: Callable[[str], Optional[Iterable[int]]]) -> list[tuple[str, int]]:
    """Every (topic, partition) of ``topics`` for a group-less reader, in a stable order.
    ``partitions_of`` returns a topic's partition ids, or None when the topic is unknown."""
    return [(t, p) for t in dict.fromkeys(topics) for p in sorted(partitions_of(t) or ())]


def topic_partitions(tps: Iterable[Any]) -> list[tuple[str, int]]:
    """Sorted (topic, partition) pairs of either client's TopicPartition objects."""
    return sorted((tp.topic, tp.partition) for tp in tps)


def read_to_end(watermarks: dict[tuple[str, int], tuple[int, int]], next_offsets: Offsets) -> bool:
    """Whether a reader has read every partition in ``watermarks`` to its end offset.
    ``next_offsets`` holds, per partition that delivered, the offset after the last record read.
    A partition that delivered nothing counts only when it holds nothing (first == end): unlike
    ``lag()``, a partition whose records simply have not arrived yet is never read."""
    return bool(watermarks) and all(
        first >= end or next_offsets.get(tp, first) >= end for tp, (first, end) in watermarks.items())


TAIL_POLLS = 5  # polls past the end offsets, until one is empty (see ``batches_to_end``)


def batches_to_end(reader: "Consumer", what: str, *, limit_s: float,
                   stop: Optional[threading.Event] = None) -> Iterator[RecordBatch]:
    """The batches of ``reader`` (no group, from the beginning) up to the end offsets its
    partitions have now, then until a poll comes back empty (at most TAIL_POLLS more): Tansu
    reports an end offset short of what a partition holds (up to its last batch), so the end
    offsets alone stopped a reader short. A TransportError (retriable) past ``limit_s`` or on
    ``stop``, naming ``what``."""
    deadline = time.monotonic() + limit_s
    ends = reader.watermarks()
    read: dict[tuple[str, int], int] = {}
    tail = 0 if ends else TAIL_POLLS
    while tail < TAIL_POLLS:
        if stop is not None and stop.is_set():
            raise TransportError(f"stopped while reading {what}", retriable=True)
        if time.monotonic() > deadline:
            raise TransportError(f"could not read {what} to its end within {limit_s:.0f} s", retriable=True)
        batch = reader.poll_batch(1000, 300)
        for tp in zip(batch.topics, batch.partitions, batch.offsets):
            read[tp[:2]] = max(read.get(tp[:2], 0), tp[2] + 1)
        if len(batch):
            yield batch
        if tail or read_to_end(ends, read):
            tail = TAIL_POLLS if tail and not len(batch) else tail + 1


def log_assigned(tps: Iterable[Any]) -> None:
    log.info("assigned partitions: %s", topic_partitions(tps))


def heartbeat_interval_ms(settings: Settings) -> int:
    """A third of the session timeout (the usual ratio: two missed heartbeats are tolerated)."""
    return max(settings.connection.session_timeout_ms // 3, 500)


# --- sizes -------------------------------------------------------------------------------

MiB = 1 << 20
FETCH_FLOOR = 8 * MiB
"""Smallest whole-fetch response. Both clients keep fetched-but-unpolled records in memory,
so this bounds RSS per broker. 8 MiB is thousands of typical (KB-sized) samples, several
default batches ahead; with the default 4 partitions x 1 MiB partition share one response
could not exceed 4 MiB anyway, so the former 50 MiB (kafka-python) only ever mattered as
memory, with many partitions, never as throughput."""
PARTITION_FETCH_FLOOR = MiB
"""Kafka's own default max.partition.fetch.bytes."""
RECORD_OVERHEAD = 1024
"""Record-batch framing around one record at the fetch size limit (header, lengths, headers)."""
REQUEST_FLOOR = MiB
"""Kafka's default max.request.size / message.max.bytes."""
REQUEST_HEADROOM = 64 * 1024
"""An output may be a little larger than its input (re-encoded fields, triage headers)."""
QUEUE_FLOOR = 16 * MiB
"""librdkafka's local prefetch queue (default 64 MiB): two whole fetches ahead is enough."""
QUEUE_MESSAGES_FLOOR = 10_000
"""librdkafka keeps prefetching until this many records are queued (default 100 000)."""


@dataclass(frozen=True)
class Sizes:
    """Client size limits derived from ``max_message_bytes`` and ``batch_size``: large enough
    that the largest accepted record always fits, small enough that memory stays bounded."""

    fetch_bytes: int  # one fetch response, all partitions
    partition_fetch_bytes: int  # one partition's share of a fetch response
    receive_bytes: int  # largest response the client reads off the socket (librdkafka)
    queue_kbytes: int  # prefetched records held locally, KiB (librdkafka)
    queue_messages: int  # prefetch target in records (librdkafka)
    request_bytes: int  # producer's largest request / record


def client_sizes(max_message_bytes: int, batch_size: int) -> Sizes:
    fetch = max(FETCH_FLOOR, 2 * max_message_bytes)
    return Sizes(
        fetch_bytes=fetch,
        partition_fetch_bytes=max(PARTITION_FETCH_FLOOR, max_message_bytes + RECORD_OVERHEAD),
        # librdkafka requires receive.message.max.bytes >= fetch.max.bytes + 512
        receive_bytes=fetch + MiB,
        queue_kbytes=max(QUEUE_FLOOR, 4 * max_message_bytes) // 1024,
        queue_messages=max(QUEUE_MESSAGES_FLOOR, 4 * batch_size),
        request_bytes=max(REQUEST_FLOOR, max_message_bytes + REQUEST_HEADROOM),
    )


def settings_sizes(settings: Settings) -> Sizes:
    return client_sizes(settings.serving.max_message_bytes, settings.serving.batch_size)


# --- errors ------------------------------------------------------------------------------


def connect_error(settings: Settings, detail: str) -> TransportError:
    """Bootstrap failed (unreachable, or TLS/SASL refused): say where and what to check.
    Retriable: the broker may come up; the CLI still fails with this text."""
    return TransportError(
        f"cannot connect to {settings.connection.bootstrap_servers} ({detail}); check "
        "bootstrap_servers and the security settings (security_protocol, sasl_*, ssl_*)",
        retriable=True,
    )


def tcp_reason(bootstrap_servers: str, timeout_s: float = 1.0) -> Optional[str]:
    """Why a plain TCP connection to the first bootstrap server fails ("Connection refused",
    "timed out", ...), or None when it connects (then the Kafka handshake is what failed)."""
    import socket

    first = bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or first, int(port)), timeout=timeout_s):
            return None
    except (OSError, ValueError) as exc:
        return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


# --- sending -----------------------------------------------------------------------------

FLUSH_SLICE_S = 0.5
"""A producer waits for acknowledgements in slices this long, so a stop is seen within one."""
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0
MAX_REROUTES = 3
"""How often one record may be replaced: a dead letter that cannot be written either may be
rerouted again (e.g. without its payload), but a reroute that always fails must not spin."""

Reroute = Callable[[OutRecord, TransportError], Optional[OutRecord]]


def backoff_s(attempt: int) -> float:
    """Delay before retry ``attempt`` (1, 2, ...): 0.1 s doubling, capped at 5 s."""
    return min(BACKOFF_FIRST_S * 2 ** min(attempt - 1, 32), BACKOFF_MAX_S)


def _unacked(pending: Sequence[tuple[int, OutRecord, int]], why: str, last: Optional[TransportError]) -> TransportError:
    topics = ", ".join(dict.fromkeys(rec.topic for _, rec, _ in pending))
    detail = f" (last error: {last.message.removeprefix('kafka: ')})" if last is not None else ""
    return TransportError(f"{len(pending)} record(s) to {topics} not acknowledged: {why}{detail}", retriable=True)


def send_until_acked(
    producer: Producer,
    records: Sequence[OutRecord],
    *,
    reroute: Optional[Reroute] = None,
    timeout_s: float = 60.0,
    deadline_s: Optional[float] = None,
    stop: Optional[threading.Event] = None,
    on_retry: Optional[Callable[[int, list[TransportError]], None]] = None,
    on_refused: Optional[Callable[[int, list[TransportError]], None]] = None,
    sleep: Optional[Callable[[float], Any]] = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[OutRecord]:
    """Send ``records`` until every one is acknowledged; return what was delivered, in input
    order (a rerouted record's replacement stands in its place).

    Retriable failures are re-sent after ``backoff_s(attempt)``; ``on_retry(attempt, errors)``
    is called before each such wait. A non-retriable failure that is the world's fault
    (``errors.blame``: authorization, a missing topic) is retried the same way when
    ``on_refused(attempt, errors)`` is given (called before each wait; it may raise to give
    up), so the record is held, never dead-lettered. Any other non-retriable failure (the
    record's own: too large, invalid) goes to ``reroute(record, error)``, whose replacement
    (e.g. a dead letter) is sent at once instead; without ``reroute``, or when it returns None,
    the error is raised. ``timeout_s`` bounds one ``send_all``; ``deadline_s``
    bounds the whole call and ``stop`` aborts between attempts: both raise a retriable
    TransportError naming the topics and how many records are unacknowledged (the caller must
    not commit the inputs, so they are re-read, never lost). ``sleep`` (default ``stop.wait``
    or ``time.sleep``) and ``clock`` are injectable for tests."""
    if not records:
        return []
    wait = sleep or (stop.wait if stop is not None else time.sleep)
    started = clock()
    delivered: list[Optional[OutRecord]] = [None] * len(records)
    pending: list[tuple[int, OutRecord, int]] = [(i, rec, 0) for i, rec in enumerate(records)]  # slot, record, reroutes
    attempt = 0
    last: Optional[TransportError] = None
    while True:
        budget = timeout_s if deadline_s is None else max(min(timeout_s, deadline_s - (clock() - started)), 0.0)
        batch = [rec for _, rec, _ in pending]
        errors = producer.send_all(batch, budget) if stop is None else producer.send_all(batch, budget, stop=stop)
        retry: list[tuple[int, OutRecord, int]] = []
        failures: list[TransportError] = []
        refused: list[TransportError] = []
        for (slot, rec, hops), err in zip(pending, errors, strict=True):
            if err is None:
                delivered[slot] = rec
            elif err.retriable:
                retry.append((slot, rec, hops))
                failures.append(err)
            elif on_refused is not None and blame(err) == WORLD:
                retry.append((slot, rec, hops))
                refused.append(err)
            else:
                replacement = reroute(rec, err) if reroute is not None and hops < MAX_REROUTES else None
                if replacement is None:
                    raise err
                retry.append((slot, replacement, hops + 1))
        pending = retry
        if not pending:
            return [rec for rec in delivered if rec is not None]
        if failures or refused:  # replacements alone are sent again at once
            attempt += 1
            last = (failures or refused)[-1]
            if failures and on_retry is not None:
                on_retry(attempt, failures)
            if refused and on_refused is not None:
                on_refused(attempt, refused)
            delay = backoff_s(attempt)
            if deadline_s is not None:
                delay = min(delay, max(deadline_s - (clock() - started), 0.0))
            if delay > 0 and not (stop is not None and stop.is_set()):
                wait(delay)
        if stop is not None and stop.is_set():
            raise _unacked(pending, "stopped", last)
        if deadline_s is not None and clock() - started >= deadline_s:
            raise _unacked(pending, f"gave up after {deadline_s:g} s", last)
