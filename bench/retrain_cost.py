"""What a retrain costs under each certification mode, on the same registry and labels.

The risk benchmark's task (``bench.risk_control.TASK``): ``triage train`` on 1,500 rows (auto
family), then 600 new labels; the same retrain (``retraining.retrain_once``) runs on copies of
that registry with ``--certification strict`` (no fold models) and ``cross-fit`` (five fold
models of the chosen family), alternating, ``--repeats`` times each, in one process.

    .venv/bin/python -m bench.retrain_cost     # writes bench/results/retrain_cost.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
from sklearn.datasets import make_classification

from bench.risk_control import OUT, TASK
from triage.lifecycle.bundles import train_initial
from triage.lifecycle.labelstore import LabelStore
from triage.lifecycle.registry import Registry
from triage.lifecycle.retraining import retrain_once
from triage.settings import PolicySettings, RetrainSettings

INITIAL, LABELS = 1_500, 600
MODES = ("cross-fit", "strict")


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    X, y = make_classification(n_samples=INITIAL + LABELS, **TASK)
    y = y.astype(str)
    pol = PolicySettings(policy="risk", risk_alpha=0.05, risk_delta=0.1)
    seconds: dict[str, list[float]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        root = Registry(Path(tmp) / "v1")
        train_initial(X[:INITIAL], y[:INITIAL], root, retrain=RetrainSettings(), policy=pol, outlier_quantile=0.995,
                      progress=lambda m: None)
        LabelStore(root.data_dir).append(
            {"id": f"l{i}", "label": str(y[i]), "features": X[i].tolist(), "annotator": "bench", "partition": 0,
             "offset": i} for i in range(INITIAL, INITIAL + LABELS))
        for r in range(args.repeats):
            for mode in MODES:
                copy = Path(tmp) / f"{mode}-{r}"
                shutil.copytree(root.root, copy)
                reg = Registry(copy)
                t0 = time.perf_counter()
                retrain_once(reg, LabelStore(reg.data_dir), retrain=RetrainSettings(certification=mode),
                             policy=pol, outlier_quantile=0.995, progress=lambda m: None)
                seconds[mode].append(time.perf_counter() - t0)
                print(f"{mode}: {seconds[mode][-1]:.1f} s", flush=True)
    median = {m: float(np.median(v)) for m, v in seconds.items()}
    result = {"initial_rows": INITIAL, "labels": LABELS, "seconds": seconds, "median_seconds": median,
              "strict_over_cross_fit": median["strict"] / median["cross-fit"]}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "retrain_cost.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
