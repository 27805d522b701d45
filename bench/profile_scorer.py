"""Profile the scorer on bench/throughput.py's workload with py-spy (sampling, all threads).

    .venv/bin/pip install py-spy
    .venv/bin/python -m bench.profile_scorer --samples 200000 --out bench/results/profile_scorer.json

Preloads the samples topic on an embedded broker, runs ``bench.worker --kind scorer`` under
``py-spy record --format raw``, and reports the share of the scorer thread's samples spent in
each stage of the hot path (inclusive: a stage counts every frame below it). With --native,
the cyclic collector and waits on librdkafka or a lock are stages of their own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from bench.throughput import ROOT, Samples, preload
from triage.runtime.broker import EmbeddedBroker
from triage.settings import Settings
from triage.transport import ensure_topics

# stage -> function names (the first match from the top of the stack wins)
STAGES = {
    "decode samples": ("decode_samples",),
    "stack features": ("fromiter",),
    "onnx + scores": ("score_batch",),
    "routing policy": ("decide",),
    "encode outputs": ("_encode_outputs", "dead_letter_from_batch"),
    "produce": ("send_until_acked", "send_all"),
    "commit": ("commit_offsets",),
    "poll": ("poll_batch",),
    "metrics": ("_observe",),
}


# native frames (--native) that override the stage: the collector, and threads waiting (no CPU)
GC_FRAMES = ("gc_collect_main",)
WAIT_FRAMES = ("cnd_wait", "cnd_timedwait", "pthread_cond_wait", "pthread_cond_timedwait", "PyThread_acquire_lock_timed")


def stage_of(stack: str) -> str:
    frames = [f.split(" (")[0].rsplit(".", 1)[-1] for f in stack.split(";")]  # "Class.method" -> "method"
    if any(f in WAIT_FRAMES for f in frames):
        return "waiting (no CPU)"
    if any(f in GC_FRAMES for f in frames):
        return "garbage collector"
    for frame in frames:  # outermost first: the loop's own stages
        for stage, names in STAGES.items():
            if frame in names:
                return stage
    return "other"


def profile(args: argparse.Namespace) -> dict[str, Any]:
    with EmbeddedBroker(log_file=Path(tempfile.mkdtemp()) / "broker.log") as broker:
        topic, out, group = "prof-in", "prof-out", "prof"
        s = Settings(bootstrap_servers=broker.bootstrap_servers, kafka_client="confluent")
        ensure_topics(s, [topic, out + ".predictions", out + ".review", out + ".dlq"], args.partitions)
        preload(broker.bootstrap_servers, topic, args.samples, Samples())
        raw = Path(args.raw or Path(tempfile.mkdtemp()) / "scorer.txt")
        cmd = [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw", "--rate", "250",
               *(["--native"] if args.native else []), "-o", str(raw), "--", sys.executable, "-m", "bench.worker", "--kind", "scorer",
               "--backend", "confluent", "--bootstrap", broker.bootstrap_servers, "--topic", topic,
               "--out", out, "--group", group, "--expect", str(args.samples), "--batch-size", str(args.batch_size)]
        root = Path(args.root)  # another checkout (e.g. main) to profile its code with the same harness
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-3000:])
        result = json.loads([ln for ln in done.stdout.splitlines() if ln.startswith("{")][-1])
    stages: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if "run (consumers/loop.py" not in stack:  # the scorer thread only
            continue
        stage = stage_of(stack)
        stages[stage] += int(n)
        if not stage.startswith("waiting"):
            functions[stack.split(";")[-1].split(" (")[0]] += int(n)
    waiting = stages.pop("waiting (no CPU)", 0)
    total = sum(stages.values())  # the thread's busy samples: shares are of those
    return {"samples_per_s": result["samples_per_s"], "cpu_s_per_1k": result["cpu_s_per_1k"],
            "loadavg": os.getloadavg(), "profile_samples": total, "waiting_samples": waiting,
            "stages_pct": {k: round(100 * v / total, 1) for k, v in stages.most_common()},
            "top_self_pct": {k: round(100 * v / total, 1) for k, v in functions.most_common(15)}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=200_000)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--root", default=str(ROOT), help="the checkout whose scorer is profiled")
    ap.add_argument("--out", default="")
    ap.add_argument("--raw", default="", help="keep py-spy's raw stacks in this file")
    ap.add_argument("--native", action="store_true", help="include native frames (C, librdkafka, numpy)")
    args = ap.parse_args()
    res = profile(args)
    print(json.dumps(res, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
