"""Faults of the environment, made real: the registry's ``data/`` on a small tmpfs that fills up
or turns read-only under the retrain ingest, a topic that refuses the scorer's writes (the real
client wrapped to answer with its own authorization error: the embedded broker has no ACLs), and
a process that stays blocked past ``--blocked-exit-s``. In every case nothing is dead-lettered,
nothing is committed while the fault lasts, and once it clears every record reaches its outcome
exactly once (the rule: docs/architecture.md#the-guarded-loop)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from consumers.scorer import Scorer
from consumers.trainer import Trainer
from tests.fixtures import DEADLINE_S, produce, read_all
from tests.helpers import TriageProcess, http_get, wait_until
from tests.reliability.helpers import Tally, output_ids, sample_values
from tests.reliability.world import committed, refusing_producer, send_labels, small_fs
from triage.commands.serve import initial_model
from triage.lifecycle.registry import Registry
from triage.settings import Settings

LABELS = 40
SAMPLES = 8


def _gauge(registry: Any, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def _dead_letters(s: Settings, timeout_s: float = 3.0) -> list[dict[str, Any]]:
    return read_all(s, [s.topics.dlq_topic], expect=1, timeout_s=timeout_s)


# --- the registry's disk: full, then read-only -------------------------------------------------


@pytest.mark.parametrize("fault", ["disk full", "read-only"])
def test_labels_wait_out_a_full_or_read_only_registry_and_land_once(
    fault: str, settings_factory: Callable[..., Settings], registry: Registry,
) -> None:
    s = settings_factory(blocked_exit_s=DEADLINE_S * 4, retrain_group_id=f"retrain-{uuid.uuid4().hex[:8]}")
    registry.data_dir.mkdir(exist_ok=True)
    manifest = registry.manifest(registry.current())
    classes, width = list(manifest["classes"]), int(manifest["feature_count"])
    with small_fs(registry.data_dir) as fs:
        trainer = Trainer(s, registry)
        ids = send_labels(s, LABELS, "L")
        if fault == "disk full":
            fs.fill()
        else:
            fs.read_only()
        ingest = threading.Thread(target=trainer.ingest, args=(classes, width), daemon=True)
        ingest.start()
        metrics = trainer.metrics.registry
        wait_until(lambda: _gauge(metrics, "triage_blocked", loop="retrain", reason="io") == 1 or not ingest.is_alive(),
                   f"the retrain ingest to hold its batch ({fault})")
        during = {"dead letters": len(_dead_letters(s)), "committed": committed(s, s.retrain.retrain_group_id,
                  s.topics.labels_topic), "in store": trainer.store.count(), "blocked": ingest.is_alive()}
        if fault == "disk full":
            fs.free()
        else:
            fs.writable()
        ingest.join(DEADLINE_S)
        assert not ingest.is_alive(), "the ingest did not go on once the fault cleared"

        def all_in() -> bool:
            if set(ids) <= {row["id"] for _, row in trainer.store.rows()}:
                return True
            trainer.ingest(classes, width)  # a drain reads for a bounded time: --every runs it again
            return False
        wait_until(all_in, "every label in the label store")
        rows = [row["id"] for _, row in trainer.store.rows()]
        after = {"dead letters": len(_dead_letters(s)), "committed": committed(s, s.retrain.retrain_group_id,
                 s.topics.labels_topic)}
        trainer.close()
    t = Tally(f"registry data/ {fault} under the retrain ingest", LABELS, len(set(rows) & set(ids)),
              len(set(ids) - set(rows)), len(rows) - len(set(rows))).record()
    print(f"while {fault}: {during}; after: {after}")
    assert during == {"dead letters": 0, "committed": 0, "in store": 0, "blocked": True}, during
    assert t.lost == 0 and t.duplicated == 0 and sorted(rows) == sorted(ids), t
    assert after == {"dead letters": 0, "committed": LABELS}, after
    assert _gauge(metrics, "triage_blocked", loop="retrain", reason="io") == 0


# --- a topic that refuses writes ---------------------------------------------------------------


def test_a_refused_topic_blocks_the_scorer_and_loses_nothing(
    settings_factory: Callable[..., Settings], example_model: tuple[Path, Path],
) -> None:
    from triage.runtime.http import OpsServer

    model, ref = example_model
    s = settings_factory(model=str(model), reference=str(ref), blocked_exit_s=DEADLINE_S * 4)
    refusing = threading.Event()
    refusing.set()
    producer = refusing_producer(s, {s.topics.predictions_topic, s.topics.review_topic}, refusing)
    scorer = Scorer(s, initial_model(s), producer=producer)
    ops = OpsServer("127.0.0.1", 0, scorer.metrics.registry, scorer.readiness, scorer.readiness_reasons).start()
    running = threading.Thread(target=scorer.run, daemon=True)
    running.start()
    samples = sample_values(SAMPLES, "auth")
    produce(s, s.topics.samples_topic, [(sid.encode(), v) for sid, v in samples])
    metrics = scorer.metrics.registry
    try:
        wait_until(lambda: _gauge(metrics, "triage_blocked", loop="scorer", reason="refused") == 1
                   or _gauge(metrics, "triage_dlq_records_total", stage="produce") > 0, "the scorer to hold its outputs")
        first = _gauge(metrics, "triage_blocked_seconds", loop="scorer")
        code, body = http_get(f"http://127.0.0.1:{ops.port}/readyz")
        dead_during = _dead_letters(s)
        wait_until(lambda: _gauge(metrics, "triage_blocked_seconds", loop="scorer") > first, "triage_blocked_seconds to rise")
        refusing.clear()
        out = read_all(s, s.topics.outputs(), expect=SAMPLES, stop_when=lambda got: len(got) >= SAMPLES)
        wait_until(lambda: http_get(f"http://127.0.0.1:{ops.port}/readyz")[0] == 200, "/readyz to recover")
    finally:
        scorer.stop_event.set()
        running.join(DEADLINE_S)
        ops.stop()
    ids = output_ids(s, out)
    sent = {sid for sid, _ in samples}
    t = Tally(f"topic refuses writes (authorization, {s.connection.kafka_client})", SAMPLES, len(set(ids) & sent),
              len(sent - set(ids)), len(ids) - len(set(ids))).record()
    print(f"while refused: /readyz {code} {body.strip()}; dead letters {len(dead_during)}; after: "
          f"{sum(r['topic'] == s.topics.dlq_topic for r in out)} dead letters")
    assert dead_during == [], "a refused topic dead-lettered records"
    assert code == 503 and json.loads(body)["checks"]["not_blocked"] is False, body
    assert "TOPIC_AUTHORIZATION_FAILED" in body or "TopicAuthorizationFailed" in body, body
    assert "refused" in json.loads(body)["reasons"]["not_blocked"], body
    # send_until_acked re-sends only what was not acknowledged: each sample's output exactly once
    assert t.lost == 0 and t.duplicated == 0, t
    assert all(r["topic"] != s.topics.dlq_topic for r in out)


# --- blocked past the deadline -----------------------------------------------------------------


def test_a_loop_blocked_past_its_deadline_exits_non_zero(
    settings_factory: Callable[..., Settings], registry: Registry, triage_process: Callable[..., TriageProcess],
) -> None:
    s = settings_factory(blocked_exit_s=3, retrain_group_id=f"retrain-{uuid.uuid4().hex[:8]}")
    registry.data_dir.mkdir(exist_ok=True)
    with small_fs(registry.data_dir) as fs:
        send_labels(s, 5, "D")
        fs.read_only()
        proc = triage_process("retrain", s, "--registry", str(registry.root), "--every", "3600")
        started = time.monotonic()
        try:
            code: Optional[int] = proc.proc.wait(DEADLINE_S)
        except Exception:  # noqa: BLE001 - reported below
            code = None
        waited = time.monotonic() - started
        dead = len(_dead_letters(s))
        print(f"blocked past --blocked-exit-s 3: exit {code} after {waited:.0f} s; dead letters {dead}")
        fs.writable()
    assert code == 1, f"exit {code}; log:\n{proc.log()[-3000:]}"
    assert "blocked for" in proc.log() and "Read-only file system" in proc.log()
    assert dead == 0 and committed(s, s.retrain.retrain_group_id, s.topics.labels_topic) == 0
