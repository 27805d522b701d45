"""``triage serve --workers N`` against the real broker: one /metrics with every worker's totals,
a SIGKILLed worker restarted without losing a sample, a worker that keeps dying stops the
whole, and a SIGTERM stops every worker cleanly."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from tests.fixtures import produce, read_all
from tests.helpers import TriageProcess, http_get, metric_value, wait_until
from tests.integration.streams import mixed_stream
from triage.records import OutRecord
from triage.settings import Settings
from triage.transport import make_producer


def workers_of(pid: int) -> list[int]:
    """Pids of the worker processes of the parent ``pid`` (not multiprocessing's resource tracker)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"spawn_main" in cmdline:
            out.append(int(entry))
    return sorted(out)


def ready(proc: TriageProcess, workers: int) -> Optional[dict[str, Any]]:
    code, body = http_get(proc.url + "/readyz")
    doc = json.loads(body)
    return doc if code == 200 and doc["checks"] == {f"worker_{i}": True for i in range(workers)} else None


def outcomes(records: list[dict[str, Any]]) -> dict[str, set[str]]:
    """sample id -> the topics its outputs went to."""
    out: dict[str, set[str]] = {}
    for r in records:
        out.setdefault(json.loads(r["value"])["id"], set()).add(r["topic"])
    return out


def test_two_workers_serve_one_metrics_page_with_both_workers_totals(
    settings_factory: Callable[..., Settings], example_model: tuple[Path, Path],
    scorer_process: Callable[..., TriageProcess],
) -> None:
    model_path, ref = example_model
    s = settings_factory()  # 4 partitions: each worker owns two
    proc = scorer_process(s, "--model", str(model_path), "--reference", str(ref), "--workers", "2")
    wait_until(lambda: ready(proc, 2), "both workers ready (each with partitions assigned)", alive=proc.dead)
    assert len(workers_of(proc.proc.pid)) == 2
    records, valid, outliers = mixed_stream(ref, 600, 10, seed=2)
    produce(s, s.topics.samples_topic, records)
    out = read_all(s, s.topics.outputs(), expect=len(records))
    partitions = {r["partition"] for r in out}

    def counted() -> Optional[str]:
        text = proc.metrics()
        return text if metric_value(text, "triage_records_consumed_total", loop="scorer") >= len(records) else None

    text = wait_until(counted, "the merged counters to reach every record", alive=proc.dead)
    # Each worker owns only some partitions, so only the sum of both reaches the total.
    assert len(partitions) > 1
    assert metric_value(text, "triage_records_consumed_total", loop="scorer") == len(records)
    assert metric_value(text, "triage_samples_total") == len(records)
    by_topic = {t: sum(1 for r in out if r["topic"] == t) for t in s.topics.outputs()}
    assert metric_value(text, "triage_samples_total", route="dlq") == by_topic[s.topics.dlq_topic]
    assert metric_value(text, "triage_confidence_count") == len(valid | outliers)
    assert metric_value(text, "triage_confidence_bucket", le="+Inf") == len(valid | outliers)
    assert metric_value(text, "triage_ready") == 1
    assert metric_value(text, "triage_workers") == 2 and metric_value(text, "triage_workers_running") == 2
    assert metric_value(text, "triage_worker_restarts_total") == 0
    assert http_get(proc.url + "/healthz")[0] == 200
    assert proc.terminate() == 0
    log = proc.log()
    assert log.count("scorer stopped cleanly") == 2, log[-3000:]
    assert "every worker stopped cleanly" in log


def test_a_sigkilled_worker_is_restarted_and_no_sample_is_lost(
    settings_factory: Callable[..., Settings], example_model: tuple[Path, Path],
    scorer_process: Callable[..., TriageProcess],
) -> None:
    model_path, ref = example_model
    s = settings_factory(batch_size=50)
    proc = scorer_process(s, "--model", str(model_path), "--reference", str(ref), "--workers", "2")
    wait_until(lambda: ready(proc, 2), "both workers ready", alive=proc.dead)
    records, valid, outliers = mixed_stream(ref, 3000, 0, seed=3)
    records = [(k, v) for k, v in records if k is not None and k.decode() in valid]  # no malformed ones
    ids = set(valid)
    producer = make_producer(s)

    def feed() -> None:  # a steady stream, so the kill lands mid-stream
        for i in range(0, len(records), 100):
            producer.send_all([OutRecord(s.topics.samples_topic, k, v) for k, v in records[i:i + 100]], 60)
            time.sleep(0.05)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        wait_until(lambda: metric_value(proc.metrics(), "triage_samples_total") > 300, "some samples scored",
                   alive=proc.dead)
        victim = workers_of(proc.proc.pid)[0]
        os.kill(victim, signal.SIGKILL)
    finally:
        feeder.join(120)
        producer.close()
    wait_until(lambda: metric_value(proc.metrics(), "triage_worker_restarts_total") == 1, "the restart",
               alive=proc.dead)
    assert victim not in workers_of(proc.proc.pid) and len(workers_of(proc.proc.pid)) == 2
    out = read_all(s, s.topics.outputs(), expect=len(records))
    got = outcomes(out)
    # Nothing lost; at-least-once allows the killed worker's uncommitted batches to be scored
    # again by the partition's next owner: duplicates, each to the same topic as the first.
    assert set(got) == ids
    assert all(len(topics) == 1 for topics in got.values()), {i: t for i, t in got.items() if len(t) > 1}
    assert not [r for r in out if r["topic"] == s.topics.dlq_topic]
    assert len(out) - len(ids) <= 4 * 50 * 2, "more duplicates than the killed worker's uncommitted batches"
    wait_until(lambda: ready(proc, 2), "both workers ready again", alive=proc.dead)
    assert proc.terminate() == 0


def test_a_worker_that_keeps_dying_stops_the_scorer_non_zero(
    settings_factory: Callable[..., Settings], example_model: tuple[Path, Path],
    scorer_process: Callable[..., TriageProcess],
) -> None:
    model_path, ref = example_model
    s = settings_factory()
    proc = scorer_process(s, "--model", str(model_path), "--reference", str(ref), "--workers", "2",
                          "--worker-max-restarts", "2", "--worker-restart-window-s", "300")
    wait_until(lambda: workers_of(proc.proc.pid), "the workers", alive=proc.dead)

    def kill_every_worker() -> Optional[int]:  # an OOM killer that never lets a worker live
        code = proc.proc.poll()
        if code is not None:
            return code if code else -1
        for pid in workers_of(proc.proc.pid):
            os.kill(pid, signal.SIGKILL)
        return None

    code = wait_until(kill_every_worker, "the parent to give up", timeout_s=120, every_s=0.1)
    assert code == 1, proc.log()[-3000:]
    log = proc.log()
    assert "died 3 times within 300 s" in log
    assert workers_of(proc.proc.pid) == []
