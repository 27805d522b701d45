"""Throughput of `triage serve` with 1 and 2 workers against a raw-bytes passthrough and a
quix-streams application doing the same job, on one embedded broker, in alternating rounds.

    python -m venv .venv-quix && .venv-quix/bin/pip install quixstreams onnxruntime numpy
    .venv/bin/python -m bench.workers --rounds 5 --samples 50000     # ~10 minutes

Each round runs every pipeline once (the order rotates from round to round) over its own
freshly preloaded 4-partition topic of the same samples as bench/throughput.py:
  passthrough  bench.worker --kind passthrough: consume -> produce the same bytes -> commit
  scorer-1     `triage serve` (the real command, one process)
  scorer-2     `triage serve --workers 2`
  base-N       `triage serve --workers N` run from the --baseline checkout (e.g. main): the
               same harness and rounds for a before/after of the scorer's code
  quix         bench/quix_app.py: decode, one ONNX call per message, outlier distance, route,
               produce, at-least-once (its own venv: quixstreams pins an older confluent-kafka)
samples/s comes from the output records' timestamps (set when each was produced): the first
output of each sample, from the 10% to the 90% quantile, so start-up, group joins and the
tail are left out alike for every pipeline. CPU is user+sys of the pipeline's processes (a
serve parent and its workers) per 1k samples: over the whole run (start-up included), and
"steady" between the 10% and 90% marks (sampled from /proc when the reader saw them). The machine is shared: compare ratios within a
round; the load average is recorded per run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Optional

from bench.throughput import ROOT, Samples, preload
from triage.examples import example_paths
from triage.runtime.broker import EmbeddedBroker
from triage.settings import Settings, env_var
from triage.transport import ensure_topics, make_consumer

KINDS = ("passthrough", "scorer-1", "scorer-2", "quix")
BASE_KINDS = ("base-1", "base-2")  # `triage serve` from --baseline (another checkout): before/after in one run
QUIX_PYTHON = ROOT / ".venv-quix" / "bin" / "python"


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """user+sys seconds of ``pid`` and its live descendants (a serve parent and its workers)."""
    stats: dict[int, tuple[int, float]] = {}  # pid -> (ppid, cpu)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK)
    tree, total, grew = {pid}, 0.0, True
    while grew:
        more = {p for p, (pp, _) in stats.items() if pp in tree and p not in tree}
        tree |= more
        grew = bool(more)
    for p in tree:
        total += stats.get(p, (0, 0.0))[1]
    return total


class Run:
    def __init__(self, broker: EmbeddedBroker, args: argparse.Namespace, samples: Samples) -> None:
        self.broker, self.args, self.samples = broker, args, samples
        tag = uuid.uuid4().hex[:8]
        self.topic, self.out, self.group = f"w-{tag}", f"w-{tag}-out", f"w-{tag}"
        self.settings = Settings(bootstrap_servers=broker.bootstrap_servers, kafka_client="confluent")
        ensure_topics(self.settings, [self.topic, *self.outputs()], args.partitions)

    def outputs(self) -> list[str]:
        return [self.out + ".predictions", self.out + ".review", self.out + ".dlq"]

    def command(self, kind: str) -> tuple[list[str], dict[str, str]]:
        n, bootstrap = self.args.samples, self.broker.bootstrap_servers
        model, ref = example_paths()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        if kind == "passthrough":
            return [sys.executable, "-m", "bench.worker", "--kind", "passthrough", "--backend", "confluent",
                    "--bootstrap", bootstrap, "--topic", self.topic, "--out", self.out, "--group", self.group,
                    "--expect", str(n), "--batch-size", str(self.args.batch_size)], env
        if kind == "quix":
            return [str(QUIX_PYTHON), str(ROOT / "bench" / "quix_app.py"), "--bootstrap", bootstrap,
                    "--topic", self.topic, "--out", self.out, "--group", self.group, "--expect", str(n),
                    "--model", str(model), "--reference", str(ref)], env
        flat = dict(bootstrap_servers=bootstrap, kafka_client="confluent", samples_topic=self.topic,
                    predictions_topic=self.out + ".predictions", review_topic=self.out + ".review",
                    dlq_topic=self.out + ".dlq", group_id=self.group, model=model, reference=ref,
                    batch_size=self.args.batch_size, metrics_port=0, metrics_host="127.0.0.1",
                    create_topics=False, session_timeout_ms=6000, workers=int(kind.split("-")[1]))
        env.update({env_var(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in flat.items()})
        if kind.startswith("base"):
            env["PYTHONPATH"] = self.args.baseline
        return [sys.executable, "-m", "triage", "serve"], env

    def first_outputs(self, pid: int, timeout_s: float) -> tuple[dict[bytes, int], list[float]]:
        """key -> the timestamp of its first output, once every sample has one (or timeout);
        and the pipeline's CPU seconds when 10% and 90% of the samples had an output."""
        reader = make_consumer(self.settings, self.outputs(), group_id=None)
        first: dict[bytes, int] = {}
        marks = [0.1 * self.args.samples, 0.9 * self.args.samples]
        cpu: list[float] = []
        deadline = time.monotonic() + timeout_s
        try:
            while len(first) < self.args.samples and time.monotonic() < deadline:
                batch = reader.poll_batch(2_000, 100)
                for k, ts in zip(batch.keys, batch.timestamps_ms):
                    if k is not None and (k not in first or ts < first[k]):
                        first[k] = ts
                while len(cpu) < 2 and len(first) >= marks[len(cpu)]:
                    cpu.append(tree_cpu(pid))
        finally:
            reader.close()
        return first, cpu

    def measure(self, kind: str) -> dict[str, Any]:
        n = self.args.samples
        preload(self.broker.bootstrap_servers, self.topic, n, self.samples)
        cmd, env = self.command(kind)
        cpu0, load = _cpu_children(), os.getloadavg()
        log = open(Path(self.args.logs) / f"{kind}-{self.group}.log", "wb")
        cwd = self.args.baseline if kind.startswith("base") else ROOT
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        try:
            first, steady_cpu = self.first_outputs(proc.pid, timeout_s=self.args.timeout_s)
        finally:
            if proc.poll() is None and kind.startswith(("scorer", "base")):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
        cpu = _cpu_children() - cpu0
        if len(first) < n:
            raise RuntimeError(f"{kind}: only {len(first)} of {n} samples got an output; see {log.name}")
        stamps = sorted(first.values())
        lo, hi = stamps[int(0.1 * n)], stamps[int(0.9 * n) - 1]
        steady = (steady_cpu[1] - steady_cpu[0]) / (0.8 * n) * 1000 if len(steady_cpu) == 2 else None
        return {"samples_per_s": 0.8 * n / max((hi - lo) / 1000.0, 1e-3), "cpu_s_per_1k": cpu / n * 1000,
                "steady_cpu_s_per_1k": steady, "exit_code": proc.returncode, "loadavg_1m": load[0]}


def summarize(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    def per_round(a: str, b: str) -> list[float]:
        return [r[a]["samples_per_s"] / r[b]["samples_per_s"] for r in rounds if a in r and b in r]

    ratios = {f"{a}/{b}": per_round(a, b) for a, b in (
        ("scorer-1", "passthrough"), ("scorer-2", "passthrough"), ("scorer-1", "quix"), ("scorer-2", "quix"),
        ("scorer-2", "scorer-1"), ("base-1", "passthrough"), ("base-2", "passthrough"), ("scorer-1", "base-1"),
        ("scorer-2", "base-2"))}
    out: dict[str, Any] = {"ratios_median": {k: statistics.median(v) for k, v in ratios.items() if v},
                           "ratios_per_round": ratios}
    out["samples_per_s_median"] = {k: statistics.median(r[k]["samples_per_s"] for r in rounds) for k in rounds[0]}
    out["cpu_s_per_1k_median"] = {k: statistics.median(r[k]["cpu_s_per_1k"] for r in rounds) for k in rounds[0]}
    out["steady_cpu_s_per_1k_median"] = {k: statistics.median(r[k]["steady_cpu_s_per_1k"] for r in rounds)
                                         for k in rounds[0] if all(r[k]["steady_cpu_s_per_1k"] for r in rounds)}
    return out


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--samples", type=int, default=50_000)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS + BASE_KINDS)
    ap.add_argument("--baseline", default="", help="a checkout whose `triage serve` runs as base-1/base-2")
    ap.add_argument("--timeout-s", type=float, default=600.0)
    ap.add_argument("--logs", default="/tmp/triage-bench-workers")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "workers.json"))
    args = ap.parse_args(argv)
    if "quix" in args.kinds and not QUIX_PYTHON.exists():
        ap.error(f"{QUIX_PYTHON} is missing: python -m venv .venv-quix && .venv-quix/bin/pip install quixstreams onnxruntime numpy")
    if any(k in BASE_KINDS for k in args.kinds) and not args.baseline:
        ap.error("base-1/base-2 need --baseline (a checkout, e.g. /work/main)")
    Path(args.logs).mkdir(parents=True, exist_ok=True)
    samples = Samples()
    rounds: list[dict[str, dict[str, Any]]] = []
    started = os.getloadavg()
    with EmbeddedBroker(log_file=Path(args.logs) / "broker.log") as broker:
        for r in range(args.rounds):
            order = args.kinds[r % len(args.kinds):] + args.kinds[:r % len(args.kinds)]
            results: dict[str, dict[str, Any]] = {}
            for kind in order:
                results[kind] = Run(broker, args, samples).measure(kind)
                res = results[kind]
                print(f"round {r + 1} {kind:11s} {res['samples_per_s']:9.0f}/s  cpu {res['cpu_s_per_1k']:.3f} s/1k "
                      f"(steady {res['steady_cpu_s_per_1k'] or 0:.3f})  load {res['loadavg_1m']:.1f}", flush=True)
            rounds.append({k: results[k] for k in args.kinds})
    doc = {"command": " ".join(["python -m bench.workers", *(argv if argv is not None else sys.argv[1:])]),
           "machine": {"cpus": os.cpu_count(), "loadavg_start": started, "loadavg_end": os.getloadavg()},
           "settings": {"samples": args.samples, "batch_size": args.batch_size, "partitions": args.partitions},
           "rounds": rounds, **summarize(rounds)}
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({k: doc[k] for k in ("ratios_median", "samples_per_s_median", "cpu_s_per_1k_median",
                                          "steady_cpu_s_per_1k_median")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
