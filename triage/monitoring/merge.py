"""Merge the scorer's output partitions back into one stream in the order it was scored. Pure.

The monitor reads two topics of several partitions each, and a consumer fetches them unevenly:
all of one partition's backlog, then another's. Predictions are the confident samples and
review requests the unsure ones, so read as fetched the stream looks like long runs of high
then low confidence: a sequential drift test would alarm on the fetch pattern, not on the data.
Within one scored batch the scorer also writes all its predictions before its review requests.

So entries wait here until every partition has moved past their time bucket (``bucket_ms`` of
the records' Kafka timestamps, the scorer's produce time) and leave bucket by bucket, each
bucket in uniformly random order: the samples scored within one bucket are exchangeable (one or
a few scored batches), and a drift test then sees them as the traffic brought them. The
watermark is the oldest of the partitions' latest timestamps; nothing waits more than
``max_hold_ms`` of event time behind the newest entry (a partition that stopped receiving
would otherwise hold everything), and an empty poll releases everything (``release_all``).
Each partition leaves in offset order, so "covered up to offset o" stays true.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Iterable, Optional

import numpy as np

TP = tuple[str, int]


class Reorder:
    def __init__(self, max_hold_ms: int, bucket_ms: int = 1000) -> None:
        self.max_hold_ms, self.bucket_ms = max_hold_ms, bucket_ms
        self.waiting: dict[TP, deque[tuple[int, int, Any]]] = {}  # tp -> (ts, offset, item), in offset order
        self.latest: dict[TP, int] = {}  # tp -> the latest timestamp it delivered
        self.read_to: dict[TP, int] = {}  # tp -> next offset not yet pushed

    def __len__(self) -> int:
        return sum(len(q) for q in self.waiting.values())

    def push(self, tp: TP, ts: int, offset: int, item: Any) -> None:
        self.waiting.setdefault(tp, deque()).append((ts, offset, item))
        self.latest[tp] = max(ts, self.latest.get(tp, ts))
        self.read_to[tp] = offset + 1

    def watermark(self, at_end: Iterable[TP] = ()) -> Optional[int]:
        """Entries up to this timestamp can leave (None: nothing can)."""
        if not self.latest:
            return None
        done = set(at_end)
        holding = [ts for tp, ts in self.latest.items() if tp not in done]
        newest = max(self.latest.values())
        mark = min(holding) if holding else newest
        return max(mark, newest - self.max_hold_ms)

    def release(self, upto: Optional[int], rng: np.random.Generator) -> list[tuple[TP, int, Any]]:
        """(tp, offset, item) of the entries in the buckets that end at or before ``upto``
        (every entry with ``upto=None`` is too many: use ``release_all``), bucket by bucket, each
        in random order."""
        if upto is None:
            return []
        return self._release((upto + 1) // self.bucket_ms - 1, rng)

    def release_all(self, rng: np.random.Generator) -> list[tuple[TP, int, Any]]:
        return self._release(None, rng)

    def _release(self, last_bucket: Optional[int], rng: np.random.Generator) -> list[tuple[TP, int, Any]]:
        out: list[tuple[int, float, TP, int, Any]] = []
        for tp, q in self.waiting.items():
            while q and (last_bucket is None or q[0][0] // self.bucket_ms <= last_bucket):
                ts, offset, item = q.popleft()
                out.append((ts // self.bucket_ms, 0.0, tp, offset, item))
        keys = rng.random(len(out))
        order = sorted(range(len(out)), key=lambda i: (out[i][0], keys[i]))
        return [(out[i][2], out[i][3], out[i][4]) for i in order]
