"""Merge the scorer's output partitions back into one stream in the order it was scored. Pure.

The monitor reads two topics of several partitions each, and a consumer fetches them unevenly:
all of one partition's backlog, then another's. Predictions are the confident samples and
review requests the unsure ones, so read as fetched the stream looks like long runs of high
then low confidence: a sequential drift test would alarm on the fetch pattern, not on the data.
The halves of one scored batch also land on different partitions at slightly different times.

So entries wait here, grouped in time buckets (``bucket_ms`` of the records' Kafka timestamps,
the scorer's produce time), and a bucket leaves only once it is complete, in uniformly random
order (the samples scored within one bucket are exchangeable: one or a few scored batches):

- **Every assigned partition has moved past it** (``watermark``): the oldest of the partitions'
  latest timestamps. A partition that has delivered nothing yet holds everything: on a restart
  into a backlog, the first partition fetched is not the whole stream.
- **Or the stream went idle after it arrived** (``release_idle``): on an empty poll every
  partition is read to its end, and a bucket whose first entry arrived more than ``grace_ms``
  ago (monitor's clock, so skew-free) has had time for the rest of its batch, still in flight
  to other partitions, to arrive.
- **Or it is ``max_hold_ms`` of event time behind the newest entry**: a partition that stopped
  receiving under steady traffic elsewhere would otherwise hold everything.

Each partition leaves in offset order, so "covered up to offset o" stays true.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Iterable, Optional

import numpy as np

TP = tuple[str, int]


class Reorder:
    def __init__(self, max_hold_ms: int, bucket_ms: int = 1000, grace_ms: int = 2000) -> None:
        self.max_hold_ms, self.bucket_ms, self.grace_ms = max_hold_ms, bucket_ms, grace_ms
        # tp -> (ts, offset, item, arrived_ms), in offset order (so arrived_ms is non-decreasing)
        self.waiting: dict[TP, deque[tuple[int, int, Any, float]]] = {}
        self.latest: dict[TP, int] = {}  # tp -> the latest timestamp it delivered
        self.read_to: dict[TP, int] = {}  # tp -> next offset not yet pushed

    def __len__(self) -> int:
        return sum(len(q) for q in self.waiting.values())

    def push(self, tp: TP, ts: int, offset: int, item: Any, arrived_ms: float) -> None:
        self.waiting.setdefault(tp, deque()).append((ts, offset, item, arrived_ms))
        self.latest[tp] = max(ts, self.latest.get(tp, ts))
        self.read_to[tp] = offset + 1

    def watermark(self, assigned: Iterable[TP] = ()) -> Optional[int]:
        """Entries up to this timestamp can leave (None: nothing can). ``assigned``: the
        partitions the consumer owns (empty: those that delivered)."""
        if not self.latest:
            return None
        newest = max(self.latest.values())
        holding = set(assigned) or set(self.latest)
        marks = [self.latest.get(tp) for tp in holding]
        floor = newest - self.max_hold_ms
        if any(m is None for m in marks):  # a partition not heard from yet
            return floor
        return max(min(marks), floor)  # type: ignore[type-var]

    def release(self, upto: Optional[int], rng: np.random.Generator) -> list[tuple[TP, int, Any]]:
        """(tp, offset, item) of the entries in the buckets that end at or before ``upto``,
        bucket by bucket, each in random order."""
        if upto is None:
            return []
        return self._release((upto + 1) // self.bucket_ms - 1, rng)

    def release_idle(self, now_ms: float, rng: np.random.Generator) -> list[tuple[TP, int, Any]]:
        """On an empty poll at ``now_ms`` (the clock ``arrived_ms`` was read from): every bucket
        up to the newest one holding an entry that arrived ``grace_ms`` or more ago."""
        cutoff, last = now_ms - self.grace_ms, None
        for q in self.waiting.values():
            for ts, _, _, arrived in q:
                if arrived > cutoff:
                    break
                b = ts // self.bucket_ms
                last = b if last is None else max(last, b)
        return [] if last is None else self._release(last, rng)

    def _release(self, last_bucket: int, rng: np.random.Generator) -> list[tuple[TP, int, Any]]:
        out: list[tuple[int, TP, int, Any]] = []
        for tp, q in self.waiting.items():
            while q and q[0][0] // self.bucket_ms <= last_bucket:
                ts, offset, item, _ = q.popleft()
                out.append((ts // self.bucket_ms, tp, offset, item))
        keys = rng.random(len(out))
        order = sorted(range(len(out)), key=lambda i: (out[i][0], keys[i]))
        return [(out[i][1], out[i][2], out[i][3]) for i in order]
