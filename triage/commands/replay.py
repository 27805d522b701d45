"""``triage replay``: replay a dataset onto the samples topic as production traffic.

Used by docker-compose's sample producer and handy for load tests against a real cluster.
Rows are sent in order (looping if asked), each as a sample with a unique id and ``ts``,
at a steady rate: one chunk per tick, never per-message sleeps.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import threading
import time
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from triage.cli import install_stop_handlers, subcommand
from triage.contracts import Sample, encode
from triage.lifecycle.data import load_dataset
from triage.errors import ConfigError, TransportError
from triage.records import OutRecord
from triage.settings import Settings
from triage.transport import Producer, check_broker, ensure_topics, make_producer, send_until_acked

log = logging.getLogger("triage.replay")

TICKS_PER_SECOND = 10


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, help="dataset to replay (npz with X, or CSV)")
    p.add_argument("--rate", type=float, default=50.0, help="samples per second (0 = as fast as possible)")
    p.add_argument("--count", type=int, default=0, help="stop after this many samples (0 = one pass, or forever with --loop)")
    p.add_argument("--loop", action="store_true", help="start over at the end of the dataset")
    p.add_argument("--id-prefix", default="replay", help="sample ids are PREFIX-N")
    p.add_argument("--heartbeat", type=Path, default=None,
                   help="touch this file after every acknowledged chunk (for container health checks)")


def sample_records(X: np.ndarray, *, prefix: str, loop: bool, count: int, topic: str,
                   start: int = 0) -> Iterator[OutRecord]:
    """The samples to send, in dataset order; ``ts`` is stamped when the record is built."""
    rows = itertools.cycle(range(len(X))) if loop else iter(range(len(X)))
    n = itertools.count(start)
    limit = count if count > 0 else None
    for i in itertools.islice(rows, limit):
        sid = f"{prefix}-{next(n)}"
        value = encode(Sample(sid, X[i].tolist(), int(time.time() * 1000)))
        yield OutRecord(topic, sid.encode(), value)


def chunk_size(rate: float) -> int:
    """Records per tick: ``rate`` spread over ticks (fast path sends big chunks)."""
    if rate <= 0:
        return 1000
    return max(1, int(round(rate / TICKS_PER_SECOND)))


def validate(rate: float, count: int, X: np.ndarray, data: Path) -> None:
    if rate < 0:
        raise ConfigError(f"--rate must be >= 0 (samples per second), got {rate}")
    if count < 0:
        raise ConfigError(f"--count must be >= 0, got {count}")
    if not len(X):
        raise ConfigError(f"{data}: the dataset has no rows to replay")


@subcommand("replay", "Replay a dataset onto the samples topic at a steady rate (a sample producer).",
            ("kafka", "topics"), _args)
def run(settings: Settings, args: argparse.Namespace) -> int:
    X, _ = load_dataset(args.data)
    validate(args.rate, args.count, X, args.data)
    check_broker(settings)
    stop = threading.Event()
    install_stop_handlers(stop)
    if settings.connection.create_topics:
        ensure_topics(settings, [settings.topics.samples_topic])
    producer = make_producer(settings)
    sent = send_paced(producer, sample_records(X, prefix=args.id_prefix, loop=args.loop,
                                               count=args.count, topic=settings.topics.samples_topic),
                      args.rate, stop, heartbeat=args.heartbeat)
    producer.close()
    log.info("replayed %d samples from %s to %s", sent, args.data, settings.topics.samples_topic)
    print(f"replayed {sent} samples to {settings.topics.samples_topic}", flush=True)
    return 0


def send_paced(producer: Producer, records: Iterator[OutRecord], rate: float, stop: threading.Event,
               heartbeat: Optional[Path] = None) -> int:
    """Send chunk by chunk, keeping to ``rate`` against a fixed schedule (no drift).
    Failed records are retried with backoff until acknowledged or stopped."""
    size = chunk_size(rate)
    started = time.monotonic()
    sent = 0
    while not stop.is_set():
        chunk = list(itertools.islice(records, size))
        if not chunk:
            break
        try:
            send_until_acked(producer, chunk, stop=stop, on_retry=lambda attempt, errors: log.warning(
                "%d samples not acknowledged (%s); retrying", len(errors), errors[0].message))
        except TransportError:
            if stop.is_set():
                break  # stopped while the broker was unreachable
            raise
        sent += len(chunk)
        if heartbeat is not None:
            heartbeat.touch()
        if rate > 0:
            due = started + sent / rate
            delay = due - time.monotonic()
            if delay > 0:
                stop.wait(delay)
    return sent
