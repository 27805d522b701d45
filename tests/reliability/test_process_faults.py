"""Process faults under steady load: repeated SIGKILLs (malformed records among the load end in
the DLQ all the same), and scaling 1 -> 3 -> 1 replicas."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Callable

from tests.fixtures import produce, read_all
from tests.helpers import ScorerProcess, wait_until
from tests.integration.streams import MALFORMED
from tests.reliability.helpers import Load, tally
from triage.settings import Settings

KILLS = 4


def _args(example_model: tuple[Path, Path]) -> tuple[str, ...]:
    model_path, ref = example_model
    return ("--model", str(model_path), "--reference", str(ref))


def _batches(proc: ScorerProcess) -> float:
    return proc.metric("triage_batches_total")


def _read_every_id(s: Settings, load: Load, extra: int = 0) -> list[dict[str, object]]:
    """Outputs until every id the load sent (and ``extra`` other keys) has one."""
    want = load.sent + extra
    return read_all(s, s.topics.outputs(), expect=want, timeout_s=180,
                    stop_when=lambda got: len({r["key"] for r in got}) >= want)


def test_sigkill_at_random_points_under_load_loses_nothing(
    settings_factory: Callable[..., Settings], example_model: tuple[Path, Path],
    scorer_process: Callable[..., ScorerProcess],
) -> None:
    s = settings_factory(batch_size=200)
    rng = random.Random(7)
    # malformed records and a tombstone ahead of the load: the first replicas dead-letter them
    bad = [(f"bad{i}".encode(), v) for i, v in enumerate(MALFORMED)] + [(b"tomb", None)]
    produce(s, s.topics.samples_topic, bad)
    load = Load(s, n=30_000, rate_per_s=1500, chunk=250).start()
    for k in range(KILLS):
        proc = scorer_process(s, *_args(example_model))
        # kill only once it is really working (assigned, mid-stream), at a random moment; a
        # fast client may have drained the stream already, then the kill lands on an idle replica
        wait_until(lambda: _batches(proc) >= 1 or not load.running, f"replica {k} to process a batch",
                   alive=proc.dead)
        time.sleep(rng.uniform(0.05, 2.0))  # the stimulus: a random moment
        proc.kill()
    final = scorer_process(s, *_args(example_model))
    load.finish()  # the kills are over: no need for the rest of the load
    out = _read_every_id(s, load, extra=len(bad))
    assert final.proc.poll() is None, final.log()
    t = tally(f"SIGKILL x{KILLS} at random points under load", s, load.acked, out).record()
    assert t.lost == 0, t
    assert t.samples_out == load.sent
    dead_letters = {r["value"] or b"" for r in out if r["topic"] == s.topics.dlq_topic}
    assert dead_letters == set(MALFORMED) | {b""}, "a malformed record was lost (or mangled) across the kills"


def test_scale_one_to_three_and_back_under_load_loses_nothing(
    settings_factory: Callable[..., Settings], example_model: tuple[Path, Path],
    scorer_process: Callable[..., ScorerProcess],
) -> None:
    s = settings_factory(batch_size=50, topic_partitions=6)
    # Up to 120 s of load, ended once the scale-down is seen: on a loaded machine the new
    # replicas can take longer to join than a fixed 30 s stream lasts, and then never score.
    load = Load(s, n=60_000, rate_per_s=500).start()
    first = scorer_process(s, *_args(example_model))
    wait_until(lambda: _batches(first) >= 1, "the first replica to process a batch", alive=first.dead)
    extra = [scorer_process(s, *_args(example_model)) for _ in range(2)]
    # scaled up: each new replica takes partitions and scores some of the stream
    wait_until(lambda: all(_batches(p) >= 1 for p in extra) or not load.running, "the new replicas to process batches",
               timeout_s=120,
               alive=lambda: next((d for d in (p.dead() for p in extra) if d), None))
    assert all(_batches(p) >= 1 for p in extra), "a new replica never scored: the load ended before it joined"
    for p in extra:
        assert p.terminate() == 0, p.log()  # scale back down: graceful leave
    # scaled down: the survivor takes every partition back and scores more of the stream, then the load ends
    before = _batches(first)
    wait_until(lambda: _batches(first) > before or not load.running, "the survivor to score after the scale-down",
               alive=first.dead)
    load.finish()
    out = _read_every_id(s, load)
    assert first.proc.poll() is None, first.log()
    t = tally("scale 1 -> 3 -> 1 replicas under load", s, load.acked, out).record()
    assert t.lost == 0, t
    assert _batches(first) >= 1
