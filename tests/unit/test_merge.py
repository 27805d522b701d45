"""The monitor's merge of its partitions back into scoring order (triage.monitoring.merge),
attacked with the fetch patterns a consumer produces: batch halves landing on different
partitions at different times, empty polls in between, a restart into a backlog fetched one
partition at a time, and a partition that never receives. The invariant a drift test needs:
the outputs of one scored batch (within one time bucket) leave together, never as a run of
only its reviews or only its predictions."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pytest

from triage.monitoring.merge import Reorder

BUCKET, GRACE = 1_000, 2_000
PARTS = [("p", 0), ("p", 1), ("r", 0), ("r", 1)]


def _scored(rng: np.random.Generator, batches: int, every_ms: int, max_delay_ms: int) -> list[tuple[float, tuple[str, int], int, int]]:
    """(arrival ms, partition, produce ts, batch) per output, in each partition's append order:
    a batch of 50 is stamped within 5 ms; each (batch, partition) lands after its own delay."""
    out = []
    for b in range(batches):
        t = 10_000 + b * every_ms
        delay = {tp: rng.uniform(0, max_delay_ms) for tp in PARTS}
        for _ in range(50):
            tp = PARTS[int(rng.integers(0, 4))]
            out.append((t + delay[tp], tp, t + int(rng.integers(0, 5)), b))
    out.sort(key=lambda e: (e[1], e[0]))  # append order per partition
    return out


def _run(reorder: Reorder, outputs: list[Any], rng: np.random.Generator, *, poll_ms: int, max_records: int,
         assigned: list[tuple[str, int]], one_partition_per_poll: bool) -> list[list[tuple[Any, int, int]]]:
    """Deliver as a consumer would; returns every release (a list of (tp, offset, batch))."""
    queues: dict[tuple[str, int], list[tuple[float, int, int]]] = defaultdict(list)
    for arrival, tp, ts, b in outputs:
        queues[tp].append((arrival, ts, b))
    pos = dict.fromkeys(queues, 0)
    releases, now = [], 0.0
    end = max(a for a, *_ in outputs) + 10 * GRACE
    while now < end:
        ready = [tp for tp in queues if pos[tp] < len(queues[tp]) and queues[tp][pos[tp]][0] <= now]
        if one_partition_per_poll:
            ready = ready[:1]
        got = 0
        for tp in ready:
            while got < max_records and pos[tp] < len(queues[tp]) and queues[tp][pos[tp]][0] <= now:
                _, ts, b = queues[tp][pos[tp]]
                reorder.push(tp, ts, pos[tp], b, now)
                pos[tp] += 1
                got += 1
        released = (reorder.release(reorder.watermark(assigned), rng) if got
                    else reorder.release_idle(now, rng))
        if released:
            releases.append(released)
        now += poll_ms
    return releases


def _check(releases: list[list[Any]], outputs: list[Any]) -> None:
    seen = [(tp, off) for rel in releases for tp, off, _ in rel]
    assert len(seen) == len(set(seen)) == len(outputs), "every output leaves exactly once"
    done: dict[Any, set[int]] = defaultdict(set)
    for rel in releases:  # after each release, what left is a prefix of every partition ("covered to o")
        for tp, off, _ in rel:
            done[tp].add(off)
        assert all(s == set(range(len(s))) for s in done.values()), "a partition left out of offset order"
    where: dict[int, set[int]] = defaultdict(set)
    for k, rel in enumerate(releases):
        for _, _, b in rel:
            where[b].add(k)
    split = sorted(b for b, ks in where.items() if len(ks) > 1)
    assert not split, f"scored batches split across releases: {split[:10]}"


@pytest.mark.parametrize("seed", range(20))
def test_live_traffic_with_in_flight_halves_and_empty_polls_never_splits_a_batch(seed: int) -> None:
    """Batches every 1.5 s (idle in between, so polls come back empty), their halves landing up
    to 0.8 s apart on different partitions."""
    rng = np.random.default_rng(seed)
    outputs = _scored(rng, 40, 1_500, 800)
    releases = _run(Reorder(60_000, BUCKET, GRACE), outputs, rng, poll_ms=100, max_records=500,
                    assigned=PARTS, one_partition_per_poll=False)
    _check(releases, outputs)


@pytest.mark.parametrize("seed", range(20))
def test_a_restart_into_a_backlog_fetched_one_partition_at_a_time_never_splits_a_batch(seed: int) -> None:
    """Everything is already there; each poll returns up to 200 records of one partition."""
    rng = np.random.default_rng(seed)
    outputs = [(0.0, tp, ts, b) for _, tp, ts, b in _scored(rng, 60, 250, 0)]
    releases = _run(Reorder(60_000, BUCKET, GRACE), outputs, rng, poll_ms=100, max_records=200,
                    assigned=PARTS, one_partition_per_poll=True)
    _check(releases, outputs)


def test_a_silent_partition_holds_no_longer_than_max_hold() -> None:
    """Steady traffic on three partitions, none ever on the fourth (assigned): samples still
    leave, at most max_hold behind the newest, and nothing is lost."""
    rng = np.random.default_rng(0)
    outputs = [e for e in _scored(rng, 200, 100, 50) if e[1] != ("r", 1)]
    reorder = Reorder(5_000, BUCKET, GRACE)
    releases = _run(reorder, outputs, rng, poll_ms=50, max_records=500, assigned=PARTS, one_partition_per_poll=False)
    seen = sum(len(r) for r in releases)
    assert seen == len(outputs)
    assert len(releases) > 10, "released as it went, not only at the end"


def test_a_partition_not_heard_from_holds_the_watermark() -> None:
    r = Reorder(60_000, BUCKET, GRACE)
    r.push(("r", 0), 5_000, 0, "x", 0.0)
    assert r.watermark([("r", 0)]) == 5_000
    assert r.watermark([("r", 0), ("p", 0)]) == 5_000 - 60_000  # p may still hold bucket 4's predictions
    assert r.release(r.watermark([("r", 0), ("p", 0)]), np.random.default_rng(0)) == []
    assert r.release_idle(1_000.0, np.random.default_rng(0)) == []  # arrived 1 s ago: within the grace
    assert [o for _, o, _ in r.release_idle(2_000.0, np.random.default_rng(0))] == [0]
