"""Throughput/latency benchmark: scorer vs the transport limit vs the naive loop, both backends.

    .venv/bin/python -m bench.throughput                 # the full table (a few minutes)
    .venv/bin/python -m bench.throughput --rss-run       # + 1M-sample RSS stability run

One run, one embedded broker. For each backend and kind (passthrough, scorer, naive):
  capacity   N samples preloaded, worker started, samples/s from its first record to its
             last commit; CPU-seconds per 1k samples (worker process, all its threads; not the
             broker); peak RSS of the worker;
  latency    a steady offered load of about half that capacity for a few seconds; p50/p99 of
             record timestamp -> output acknowledgement (the first 10% is warm-up).
Then a hot-swap under load (scorer, each backend): a second ServingModel (same ONNX, another
version) is loaded, warmed and offered mid-run; reported: lost and duplicated samples, the
p99 in the swap window against the steady p99, and the worst 0.5 s output rate.
Writes bench/results/throughput.json and prints the table with the target ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Optional

import numpy as np
from confluent_kafka import Producer

from triage.runtime.broker import EmbeddedBroker
from triage.examples import example_paths
from triage.settings import Settings
from triage.transport import ensure_topics

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("passthrough", "scorer", "naive")


class Samples:
    """Sample JSON built from the bundled reference rows (~420 bytes each, as in the tests)."""

    def __init__(self) -> None:
        _, ref = example_paths()
        with np.load(ref) as d:
            X = d["X"]
        self.rows = [json.dumps(r.tolist()).encode() for r in X[:1000]]
        # a few far-out rows so the outlier route is exercised too
        rng = np.random.default_rng(0)
        for i in range(0, len(self.rows), 100):
            self.rows[i] = json.dumps((40 + 40 * rng.random(X.shape[1])).tolist()).encode()

    def value(self, i: int, ts_ms: int) -> bytes:
        return b'{"id":"s%d","features":%s,"ts":%d,"meta":{"src":"bench"}}' % (i, self.rows[i % len(self.rows)], ts_ms)


def _producer(bootstrap: str) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all",
                     "queue.buffering.max.messages": 2_000_000, "partitioner": "murmur2_random"})


def preload(bootstrap: str, topic: str, n: int, samples: Samples) -> None:
    p = _producer(bootstrap)
    now = int(time.time() * 1000)
    for i in range(n):
        while True:
            try:
                p.produce(topic, samples.value(i, now), b"s%d" % i)
                break
            except BufferError:
                p.poll(0.05)
        if i % 10_000 == 0:
            p.poll(0)
    assert p.flush(120) == 0, "preload not acknowledged"


def offer_load(bootstrap: str, topic: str, rate: float, seconds: float, samples: Samples) -> int:
    """Produce at a steady ``rate`` for ``seconds`` (5 ms ticks); returns how many were sent."""
    p = _producer(bootstrap)
    total = int(rate * seconds)
    sent = 0
    start = time.time()
    while sent < total:
        now = time.time()
        due = min(int(rate * (now - start)) + 1, total)
        ts = int(now * 1000)
        while sent < due:
            try:
                p.produce(topic, samples.value(sent, ts), b"s%d" % sent, timestamp=ts)
                sent += 1
            except BufferError:
                p.poll(0.01)
        p.poll(0)
        if sent < total:
            time.sleep(0.005)
    assert p.flush(60) == 0
    return sent


class Bench:
    def __init__(self, broker: EmbeddedBroker, args: argparse.Namespace) -> None:
        self.broker = broker
        self.args = args
        self.samples = Samples()

    def _topics(self, backend: str) -> tuple[str, str, str]:
        tag = uuid.uuid4().hex[:8]
        topic, out, group = f"bench-{tag}", f"bench-{tag}-out", f"bench-{tag}"
        s = Settings(bootstrap_servers=self.broker.bootstrap_servers, kafka_client="confluent")
        ensure_topics(s, [topic, out + ".predictions", out + ".review", out + ".dlq"], self.args.partitions)
        return topic, out, group

    def _worker(self, kind: str, backend: str, topic: str, out: str, group: str, expect: int,
                extra: list[str]) -> subprocess.Popen[str]:
        cmd = [sys.executable, "-m", "bench.worker", "--kind", kind, "--backend", backend,
               "--bootstrap", self.broker.bootstrap_servers, "--topic", topic, "--out", out,
               "--group", group, "--expect", str(expect), "--batch-size", str(self.args.batch_size), *extra]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)

    @staticmethod
    def _result(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            raise RuntimeError(f"worker timed out:\n{stderr[-3000:]}") from None
        lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"worker failed ({proc.returncode}):\n{stderr[-3000:]}")
        return json.loads(lines[-1])

    def capacity(self, kind: str, backend: str, n: int, extra: Optional[list[str]] = None) -> dict[str, Any]:
        topic, out, group = self._topics(backend)
        preload(self.broker.bootstrap_servers, topic, n, self.samples)
        proc = self._worker(kind, backend, topic, out, group, n, extra or [])
        return self._result(proc, timeout=max(600, n / 200))

    def _under_load(self, kind: str, backend: str, rate: float, seconds: float, extra: list[str]) -> tuple[dict[str, Any], int]:
        topic, out, group = self._topics(backend)
        n = int(rate * seconds)
        proc = self._worker(kind, backend, topic, out, group, n, ["--wait-ready", "--warmup", "0.1", *extra])
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the worker's consumer has its partitions
        if line.strip() != "READY":
            proc.kill()
            raise RuntimeError(f"worker never became ready: {line!r} {proc.stderr.read()[-3000:] if proc.stderr else ''}")
        sent = offer_load(self.broker.bootstrap_servers, topic, rate, seconds, self.samples)
        return self._result(proc, timeout=seconds * 10 + 120), sent

    def latency(self, kind: str, backend: str, rate: float) -> dict[str, Any]:
        res, _ = self._under_load(kind, backend, rate, self.args.latency_seconds, [])
        return res

    def hot_swap(self, backend: str, rate: float) -> dict[str, Any]:
        seconds = self.args.swap_seconds
        res, sent = self._under_load("scorer", backend, rate, seconds,
                                     ["--swap-at", str(seconds / 2), "--track-ids"])
        ids = set(res.pop("ids"))
        expected = {f"s{i}" for i in range(sent)}
        res["offered_rate"] = rate
        res["lost"] = len(expected - ids)
        res["unexpected"] = len(ids - expected)
        return res


def _slim(r: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in r.items() if k not in ("batches", "batch_p99_ms", "rss_trace")}


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a and b else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    log = (Path(args.out).parent / "broker.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "command": " ".join(["python -m bench.throughput", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg(), "python": platform.python_version()},
        "settings": {"batch_size": args.batch_size, "partitions": args.partitions,
                     "latency_seconds": args.latency_seconds, "capacity_samples": args.samples},
        "backends": {},
    }
    with EmbeddedBroker(log_file=log) as broker:
        bench = Bench(broker, args)
        for backend in args.backends:
            res: dict[str, Any] = {}
            for kind in args.kinds:
                n = args.samples if kind != "naive" else max(args.samples // args.naive_divisor, 2000)
                if backend == "kafka-python":
                    n = max(n // args.kafka_python_divisor, 2000)
                cap = bench.capacity(kind, backend, n)
                print(f"[{backend}] {kind:11s} capacity {cap['samples_per_s']:9.0f}/s  cpu {cap['cpu_s_per_1k']:.3f} s/1k  rss {cap['peak_rss_mb']:.0f} MB", flush=True)
                lat = bench.latency(kind, backend, cap["samples_per_s"] * args.load_fraction)
                print(f"[{backend}] {kind:11s} at {cap['samples_per_s'] * args.load_fraction:7.0f}/s  p50 {lat['p50_ms']:.1f} ms  p99 {lat['p99_ms']:.1f} ms", flush=True)
                res[kind] = {**_slim(cap), "latency": {"offered_per_s": cap["samples_per_s"] * args.load_fraction,
                                                      **{k: lat[k] for k in ("p50_ms", "p99_ms", "samples_per_s", "cpu_s_per_1k", "peak_rss_mb")}}}
            if "scorer" in res and not args.no_swap:
                sw = bench.hot_swap(backend, res["scorer"]["samples_per_s"] * args.load_fraction)
                res["hot_swap"] = _slim(sw)
                w = sw.get("swap_window", {})
                print(f"[{backend}] hot-swap    lost {sw['lost']} dup {sw['duplicates']} final {sw['final_model']}  "
                      f"p99 steady {w.get('p99_steady_ms')} window {w.get('p99_window_ms')}  "
                      f"rate min {w.get('rate_min_window_per_s')} / steady {w.get('rate_steady_per_s')}", flush=True)
            if args.rss_run and "scorer" in args.kinds:
                rss = bench.capacity("scorer", backend, args.rss_samples, ["--rss-every", str(args.rss_samples // 20)])
                trace = rss["rss_trace"]
                base = trace[1][1] if len(trace) > 1 else trace[0][1]  # after 10%: warmed up
                values = [v for _, v in trace[1:]]
                res["rss_run"] = {"samples": rss["samples"], "samples_per_s": rss["samples_per_s"],
                                  "rss_mb_trace": [(n, round(v / 2**20, 1)) for n, v in trace],
                                  "drift_pct": 100 * (max(values) - base) / base,
                                  "min_vs_base_pct": 100 * (min(values) - base) / base,
                                  "end_vs_base_pct": 100 * (values[-1] - base) / base}
                print(f"[{backend}] rss-run     {rss['samples']} samples, drift {res['rss_run']['drift_pct']:+.1f}%", flush=True)
            results["backends"][backend] = res
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["ratios"] = ratios(results["backends"])
    return results


def ratios(b: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for backend, r in b.items():
        pt, sc, nv = (r.get(k, {}).get("samples_per_s") for k in KINDS)
        out[backend] = {
            "e2e_over_passthrough": ratio(sc, pt), "target_e2e_over_passthrough": 0.8,
            "e2e_over_naive": ratio(sc, nv), "target_e2e_over_naive": 10.0,
        }
        sw = r.get("hot_swap", {}).get("swap_window", {})
        if sw:
            out[backend]["swap_p99_over_steady"] = ratio(sw.get("p99_window_ms"), sw.get("p99_steady_ms"))
            out[backend]["target_swap_p99_over_steady"] = 2.0
            out[backend]["swap_lost"] = r["hot_swap"]["lost"]
        if "rss_run" in r:
            out[backend]["rss_drift_pct"] = r["rss_run"]["drift_pct"]
            out[backend]["rss_min_vs_base_pct"] = r["rss_run"]["min_vs_base_pct"]
            out[backend]["target_rss_abs_pct"] = 10.0
    if "confluent" in b and "kafka-python" in b:
        out["confluent_e2e_over_kafka_python_e2e"] = ratio(
            b["confluent"].get("scorer", {}).get("samples_per_s"), b["kafka-python"].get("scorer", {}).get("samples_per_s"))
        out["target_confluent_over_kafka_python"] = 5.0
    return out


def table(results: dict[str, Any]) -> str:
    lines = ["| backend | pipeline | samples/s | p50 ms | p99 ms | offered/s | CPU s / 1k | peak RSS MB |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for backend, r in results["backends"].items():
        for kind in KINDS:
            if kind not in r:
                continue
            k = r[kind]
            lat = k["latency"]
            lines.append(f"| {backend} | {kind} | {k['samples_per_s']:,.0f} | {lat['p50_ms']:.1f} | {lat['p99_ms']:.1f} | "
                         f"{lat['offered_per_s']:,.0f} | {k['cpu_s_per_1k']:.3f} | {k['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", nargs="+", default=["confluent", "kafka-python"])
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    ap.add_argument("--samples", type=int, default=100_000, help="capacity-run samples (confluent)")
    ap.add_argument("--kafka-python-divisor", type=int, default=4, help="kafka-python runs use samples/this")
    ap.add_argument("--naive-divisor", type=int, default=10, help="naive runs use samples/this")
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--load-fraction", type=float, default=0.5)
    ap.add_argument("--latency-seconds", type=float, default=8.0)
    ap.add_argument("--swap-seconds", type=float, default=16.0)
    ap.add_argument("--no-swap", action="store_true")
    ap.add_argument("--rss-run", action="store_true", help="also run 1M samples through the scorer, tracing RSS")
    ap.add_argument("--rss-samples", type=int, default=1_000_000)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "throughput.json"))
    args = ap.parse_args(argv)
    results = run(args)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print()
    print(table(results))
    print()
    print(json.dumps(results["ratios"], indent=2))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
