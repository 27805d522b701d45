"""In-process cost of the scorer's pure core: ``process_batch`` (decode, ONNX, route, encode) on
bench/throughput.py's samples, without a broker, per record and per batch size.

    .venv/bin/python -m bench.process_batch                          # this checkout
    .venv/bin/python -m bench.process_batch --root /path/to/main     # another one, same harness

Alternate this checkout and a base in one sitting (the machine's load moves both alike). The
garbage collector is off while timing, as the scorer's sized young generation keeps it idle.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def measure(sizes: list[int], seconds: float) -> dict[str, Any]:
    from bench.throughput import Samples
    from triage.examples import example_paths
    from triage.lifecycle.loading import serving_model_from_file
    from triage.policies import make_policy
    from triage.records import RecordBatch
    from triage.scoring.handlers import BatchConfig, process_batch
    from triage.settings import Settings

    model_path, ref = example_paths()
    s = Settings(model=model_path, reference=ref)
    model, policy = serving_model_from_file(s.serving, s.policy), make_policy(s.policy)
    config = BatchConfig.of(s.serving, s.policy, s.topics)
    samples = Samples()
    out: dict[str, Any] = {}
    for n in sizes:
        values = [samples.value(i, 1_700_000_000_000) for i in range(n)]
        batch = RecordBatch(["t"] * n, [0] * n, list(range(n)), [1_700_000_000_000] * n, [b"k"] * n, values)
        process_batch(batch, model, policy, config)  # warm-up
        gc.disable()
        runs = []
        for _ in range(3):
            started, k = time.perf_counter(), 0
            while time.perf_counter() - started < seconds:
                process_batch(batch, model, policy, config)
                k += 1
            runs.append((time.perf_counter() - started) / k / n * 1e6)
        gc.enable()
        out[str(n)] = {"us_per_record": sorted(runs)[1], "runs": runs}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 100, 5])
    ap.add_argument("--seconds", type=float, default=2.0, help="per timed run (3 runs per size; the median is kept)")
    ap.add_argument("--root", default="", help="another checkout to measure with this harness")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.root and not args.inner:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--inner", "--seconds", str(args.seconds),
               "--sizes", *map(str, args.sizes)]
        # the code under test from --root (bench.throughput's samples too), this file as the harness
        env = {**os.environ, "PYTHONPATH": f"{args.root}{os.pathsep}{ROOT}"}
        return subprocess.run(cmd, env=env, cwd=args.root).returncode
    import triage

    print(json.dumps({"triage": str(Path(triage.__file__).parent), "loadavg": os.getloadavg(),
                      "process_batch": measure(args.sizes, args.seconds)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
