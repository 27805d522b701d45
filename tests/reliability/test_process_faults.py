"""Process faults under steady load: repeated SIGKILLs, and scaling 1 -> 3 -> 1 replicas."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Callable

import pytest

from tests.fixtures import ScorerProcess, read_all
from tests.reliability.helpers import Load, metric, scrape, tally, wait_serving, wait_until
from triage.settings import Settings

KILLS = 4


def _args(example_model: tuple[Path, Path]) -> tuple[str, ...]:
    model_path, ref = example_model
    return ("--model", str(model_path), "--reference", str(ref))


def _batches(proc: ScorerProcess) -> float:
    return metric(scrape(proc) or "", "triage_batches_total")


def _read_every_id(s: Settings, load: Load) -> list[dict[str, object]]:
    return read_all(s, s.topics.outputs(), expect=load.sent, timeout_s=180,
                    stop_when=lambda got: len({r["key"] for r in got}) >= load.sent)


def test_sigkill_at_random_points_under_load_loses_nothing(
    settings_factory: Callable[..., Settings], example_model: tuple[Path, Path],
    scorer_process: Callable[..., ScorerProcess],
) -> None:
    s = settings_factory(batch_size=200)
    rng = random.Random(7)
    load = Load(s, n=30_000, rate_per_s=1500, chunk=250).start()
    for k in range(KILLS):
        proc = scorer_process(s, *_args(example_model))
        wait_serving(proc)
        # kill only once it is really working (assigned, mid-stream), at a random moment; a
        # fast client may have drained the stream already, then the kill lands on an idle replica
        wait_until(lambda: _batches(proc) >= 1 or not load._thread.is_alive(), f"replica {k} to process a batch")
        time.sleep(rng.uniform(0.05, 2.0))
        proc.kill()
    final = scorer_process(s, *_args(example_model))
    load.join()
    out = _read_every_id(s, load)
    assert final.proc.poll() is None, final.log()
    t = tally(f"SIGKILL x{KILLS} at random points under load", s, load.acked, out).record()
    assert t.lost == 0, t
    assert t.samples_out == load.sent


def test_scale_one_to_three_and_back_under_load_loses_nothing(
    settings_factory: Callable[..., Settings], example_model: tuple[Path, Path],
    scorer_process: Callable[..., ScorerProcess],
) -> None:
    s = settings_factory(batch_size=50, topic_partitions=6)
    load = Load(s, n=15_000, rate_per_s=500).start()
    first = scorer_process(s, *_args(example_model))
    wait_serving(first)
    wait_until(lambda: _batches(first) >= 1, "the first replica to process a batch")
    extra = [scorer_process(s, *_args(example_model)) for _ in range(2)]
    for p in extra:
        wait_serving(p)
    # scaled up: each new replica takes partitions and scores some of the stream
    wait_until(lambda: all(_batches(p) >= 1 for p in extra), "the new replicas to process batches", timeout_s=120)
    for p in extra:
        assert p.terminate() == 0, p.log()  # scale back down: graceful leave
    load.join()
    out = _read_every_id(s, load)
    assert first.proc.poll() is None, first.log()
    t = tally("scale 1 -> 3 -> 1 replicas under load", s, load.acked, out).record()
    assert t.lost == 0, t
    assert _batches(first) >= 1
