"""What reading the label store for a retrain costs: latest-wins against the aggregate per sample.

A generated store of ``--rows`` label rows (64 features each, 10 classes, ids relabelled,
corrected and undone now and then) is read by ``LabelStore.arrays`` as before (latest wins) and
with ``quality.aggregation`` (labelview.py), ``--repeats`` times each, alternating, in one
process (a fresh store object each time: no cache). Two stores: one annotator (the aggregate
must cost about what latest-wins costs: no crowd-kit), and three annotators where ``--overlap``
of the samples are labelled by all three (crowd-kit weighs the contested ones).

    .venv/bin/python -m bench.label_aggregate     # writes bench/results/label_aggregate.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from triage.lifecycle.labelstore import UNDO, LabelStore

OUT = Path(__file__).resolve().parent / "results" / "label_aggregate.json"


def rows(n: int, overlap: float, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out: list[dict[str, Any]] = []
    sid = 0
    while len(out) < n:
        truth = int(rng.integers(10))
        x = rng.normal(size=64).round(6).tolist()
        who = ["ann", "bob", "cid"] if rng.random() < overlap else [str(rng.choice(["ann", "bob", "cid"]))]
        for w in who:
            label = str(truth if rng.random() < 0.85 else rng.integers(10))
            out.append({"id": f"s{sid}", "label": label, "features": x, "annotator": w, "partition": sid % 3,
                        "offset": len(out)})
            if rng.random() < 0.02:  # an undo, then a new label
                out.append({**out[-1], "label": UNDO, "features": [], "offset": len(out)})
                out.append({**out[-2], "label": str(truth), "offset": len(out)})
        sid += 1
    return out[:n]


def timed(root: Path, aggregation: Any) -> float:
    store = LabelStore(root)
    start = time.perf_counter()
    store.arrays(None, 20, aggregation)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--overlap", type=float, default=0.2)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    results: dict[str, Any] = {"rows": args.rows, "repeats": args.repeats, "overlap": args.overlap}
    with tempfile.TemporaryDirectory() as tmp:
        for name, overlap in (("one_annotator", 0.0), ("three_annotators", args.overlap)):
            root = Path(tmp) / name
            data = rows(args.rows, overlap, seed=0)
            if overlap == 0.0:
                data = [{**r, "annotator": "ann"} for r in data]
            LabelStore(root).append(data)
            timed(root, "weighted")  # imports (crowd-kit, pandas) paid once, outside the figures
            got: dict[str, list[float]] = {"latest_wins": [], "weighted": []}
            for _ in range(args.repeats):
                got["latest_wins"].append(timed(root, None))
                got["weighted"].append(timed(root, "weighted"))
            results[name] = {k: {"median_s": float(np.median(v)), "runs_s": v} for k, v in got.items()}
            print(name, {k: round(float(np.median(v)), 3) for k, v in got.items()})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
