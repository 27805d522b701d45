"""Replay pacing: a dataset's rows as samples, sent at a steady rate.

One chunk per tick against a fixed schedule (no drift, never per-message sleeps); failed
records are retried with backoff until acknowledged or stopped. ``triage replay`` is the
command around it (docker-compose's sample producer, load tests against a real cluster).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from triage.contracts import Sample, encode
from triage.errors import TransportError
from triage.records import OutRecord
from triage.transport import Producer, send_until_acked

log = logging.getLogger("triage.replay")

TICKS_PER_SECOND = 10
FAST_CHUNK = 1000
"""Records per chunk at rate 0 (as fast as possible)."""


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
        return FAST_CHUNK
    return max(1, int(round(rate / TICKS_PER_SECOND)))


def send_paced(producer: Producer, records: Iterator[OutRecord], rate: float, stop: threading.Event,
               heartbeat: Optional[Path] = None) -> int:
    """Send chunk by chunk, keeping to ``rate`` records per second (0 = as fast as possible)
    against a fixed schedule (no drift). Failed records are retried with backoff until
    acknowledged or stopped. ``heartbeat`` is touched after every acknowledged chunk."""
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
