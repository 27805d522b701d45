"""Soak: push N samples (default 1M) through one ``triage serve`` and watch it for leaks.

    .venv/bin/python bench/soak.py                 # 1M samples -> bench/results/soak.json
    .venv/bin/python bench/soak.py --samples 50000 --out /tmp/soak.json

Starts an embedded broker, one scorer subprocess and a producer thread; samples the
scorer's RSS, open file descriptors and thread count from /proc every few seconds, and the
processed count from its /metrics. Assert-free: it records figures, the slow test
(tests/reliability/test_soak.py) checks flatness with generous bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from triage.runtime.broker import EmbeddedBroker, free_port  # noqa: E402
from triage.examples import example_paths  # noqa: E402
from triage.records import OutRecord  # noqa: E402
from triage.settings import Settings  # noqa: E402
from triage.transport import ensure_topics, make_producer  # noqa: E402


def proc_stats(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
        "threads": int(fields["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def processed(port: int) -> Optional[float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    total = 0.0
    for line in text.splitlines():
        if line.startswith("triage_samples_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def produce(settings: Settings, n: int, chunk: int, errors: list[str]) -> None:
    with np.load(example_paths()[1]) as d:
        X = d["X"].astype(int)  # digits are small integers: compact JSON
    rows = [",".join(map(str, r)) for r in X.tolist()]
    producer = make_producer(settings)
    try:
        for lo in range(0, n, chunk):
            recs = [OutRecord(settings.topics.samples_topic, f"s{i}".encode(),
                              f'{{"id":"s{i}","features":[{rows[i % len(rows)]}]}}'.encode())
                    for i in range(lo, min(lo + chunk, n))]
            pending = recs
            for _ in range(20):
                errs = producer.send_all(pending, 60)
                pending = [r for r, e in zip(pending, errs) if e is not None]
                if not pending:
                    break
                time.sleep(1)
            if pending:
                errors.append(f"producer gave up on {len(pending)} records")
                return
    finally:
        producer.close()


def run_soak(samples: int, *, batch_size: int = 1000, interval_s: float = 2.0,
             timeout_s: float = 3600.0, workdir: Optional[Path] = None) -> dict[str, Any]:
    workdir = workdir or Path(os.environ.get("TMPDIR", "/tmp")) / f"triage-soak-{uuid.uuid4().hex[:6]}"
    workdir.mkdir(parents=True, exist_ok=True)
    model, ref = example_paths()
    tag = uuid.uuid4().hex[:8]
    with EmbeddedBroker(log_file=workdir / "tansu.log") as broker:
        s = Settings(
            bootstrap_servers=broker.bootstrap_servers, kafka_client="kafka-python", group_id=f"soak-{tag}",
            session_timeout_ms=6000, samples_topic=f"samples-{tag}", predictions_topic=f"predictions-{tag}",
            review_topic=f"review-{tag}", labels_topic=f"labels-{tag}", models_topic=f"models-{tag}",
            dlq_topic=f"dlq-{tag}", batch_size=batch_size,
        )
        ensure_topics(s, s.topics.all())
        port = free_port()
        env = {**os.environ, "TRIAGE_BOOTSTRAP_SERVERS": s.connection.bootstrap_servers, "TRIAGE_KAFKA_CLIENT": "kafka-python",
               "TRIAGE_GROUP_ID": s.connection.group_id, "TRIAGE_SESSION_TIMEOUT_MS": "6000",
               "TRIAGE_METRICS_PORT": str(port), "TRIAGE_METRICS_HOST": "127.0.0.1",
               "TRIAGE_BATCH_SIZE": str(batch_size), "TRIAGE_MODEL": str(model), "TRIAGE_REFERENCE": str(ref)}
        for name in ("samples", "predictions", "review", "labels", "models", "dlq"):
            env[f"TRIAGE_{name.upper()}_TOPIC"] = getattr(s, f"{name}_topic")
        with open(workdir / "scorer.log", "ab") as log:
            scorer = subprocess.Popen([sys.executable, "-m", "triage", "serve"], env=env, cwd=REPO,
                                      stdout=log, stderr=subprocess.STDOUT)
        errors: list[str] = []
        series: list[dict[str, float]] = []
        started = time.monotonic()
        producer = threading.Thread(target=produce, args=(s, samples, 5000, errors), daemon=True)
        producer.start()
        done = 0.0
        try:
            while time.monotonic() - started < timeout_s and scorer.poll() is None:
                count = processed(port)
                if count is not None:
                    done = count
                    series.append({"t": round(time.monotonic() - started, 1), "processed": count, **proc_stats(scorer.pid)})
                    if count >= samples:
                        break
                time.sleep(interval_s)
            elapsed = time.monotonic() - started
        finally:
            exit_code = scorer.poll()
            scorer.terminate()
            try:
                scorer.wait(60)
            except subprocess.TimeoutExpired:
                scorer.kill()
    return summarize(samples, done, elapsed, series, errors, exit_code)


def summarize(samples: int, done: float, elapsed: float, series: list[dict[str, float]],
              errors: list[str], exit_code: Optional[int]) -> dict[str, Any]:
    # "warm" = first sample after 10% of the stream: imports, model and client buffers are in
    warm = next((p for p in series if p["processed"] >= 0.1 * samples), series[0] if series else {})
    end = series[-1] if series else {}

    def span(key: str) -> dict[str, float]:
        vals = [p[key] for p in series]
        return {"start": series[0][key], "warm": warm.get(key, 0), "end": end.get(key, 0),
                "min": min(vals), "max": max(vals)} if vals else {}

    step = max(1, len(series) // 200)
    return {
        "samples": samples,
        "processed": done,
        "seconds": round(elapsed, 1),
        "samples_per_second": round(done / elapsed, 1) if elapsed else 0.0,
        "scorer_exit_code_during_run": exit_code,
        "errors": errors,
        "rss_mb": span("rss_mb"),
        "fds": span("fds"),
        "threads": span("threads"),
        "series": series[::step],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--interval", type=float, default=2.0, help="seconds between /proc samples")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "soak.json")
    args = ap.parse_args()
    result = run_soak(args.samples, batch_size=args.batch_size, interval_s=args.interval)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    brief = {k: v for k, v in result.items() if k != "series"}
    print(json.dumps(brief, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
