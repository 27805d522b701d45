"""triage's monitor core beside NannyML's CBPE and alibi-detect's CVMDriftOnline on the same
shifted streams (``triage simulate --shift``'s streams: digits, covariate / prior / concept).

Two steps, because the anchors live in their own venv (never in the ``test`` extra):

    python3 -m venv .venv-bench && .venv-bench/bin/pip install nannyml alibi-detect
    .venv/bin/python bench/monitoring.py outputs --seeds 3            # v1 per seed scores the test rows
    nice .venv-bench/bin/python bench/monitoring.py compare           # the three on the same streams

``compare`` imports only triage's pure core (numpy, scipy) and writes
bench/results/monitoring.json. Same configuration for all: drift reference = the stream's first
``--reference`` samples, window / chunk = ``--window``, ERT = ``--ert`` (triage: over all its
detectors together; alibi: its one detector on the confidence). False alarms at long ERTs
come from a separate in-distribution run (``--fa-samples``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")  # NannyML phones home otherwise
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from triage.monitoring.state import MonitorConfig  # noqa: E402
from triage.simulation.monitoring import SHIFTS, Outputs, Stream, replay, shifted_stream  # noqa: E402

OUTPUTS = Path("/tmp/triage-bench-monitoring-outputs.npz")
RESULT = ROOT / "bench" / "results" / "monitoring.json"


def outputs(args: argparse.Namespace) -> None:
    import tempfile

    from triage.settings import Settings
    from triage.simulation.datasets import load_labelled, split
    from triage.simulation.monitoring import score_outputs

    X, y = load_labelled("sklearn:digits")
    arrays: dict[str, np.ndarray] = {}
    for seed in range(args.seeds):
        parts = split(X, y, seed, 0.25)
        with tempfile.TemporaryDirectory() as root:
            out = score_outputs(parts, Settings().replace(seed=seed), Path(root))
        for name in ("confidence", "margin", "outlier", "predicted", "truth", "probs", "classes"):
            arrays[f"{seed}_{name}"] = np.asarray(getattr(out, name))
        arrays[f"{seed}_X"] = parts.X_test
    np.savez(args.file, seeds=np.array(args.seeds), **arrays)
    print(f"wrote {args.file}")


def _load(file: Path) -> list[tuple[Outputs, np.ndarray]]:
    z = np.load(file, allow_pickle=False)
    return [(Outputs(*(z[f"{s}_{n}"] for n in ("confidence", "margin", "outlier", "predicted", "truth", "probs",
                                                "classes"))), z[f"{s}_X"]) for s in range(int(z["seeds"]))]


def _realized(out: Outputs, stream: Stream, lo: int, hi: int) -> float:
    return float((out.predicted[stream.rows[lo:hi]] == stream.truth[lo:hi]).mean())


def cbpe(out: Outputs, stream: Stream, reference: int, window: int) -> dict[str, Any]:
    """NannyML CBPE fitted on the labelled reference, estimating per chunk of ``window``."""
    import nannyml as nml
    import pandas as pd

    cols = {c: f"p_{c}" for c in out.classes}
    frame = pd.DataFrame({f"p_{c}": out.probs[stream.rows, i] for i, c in enumerate(out.classes)})
    frame["y_pred"] = out.predicted[stream.rows]
    frame["y_true"] = stream.truth
    est = nml.CBPE(y_pred_proba=cols, y_pred="y_pred", y_true="y_true", problem_type="classification_multiclass",
                   metrics=["accuracy"], chunk_size=window)
    est.fit(frame.iloc[:reference])
    res = est.estimate(frame.iloc[reference:].drop(columns="y_true")).filter(period="analysis").to_df()
    errs: dict[str, list[float]] = {"before": [], "after": []}
    alerts_before, first_alert = 0, None
    for i, row in enumerate(res.itertuples(index=False)):
        lo, hi = reference + i * window, min(reference + (i + 1) * window, len(stream.rows))
        if hi - lo < window:
            continue
        value = float(res[("accuracy", "value")].iloc[i])
        alert = bool(res[("accuracy", "alert")].iloc[i])
        phase = "before" if hi <= stream.shift_at else "after" if lo >= stream.shift_at else None
        if phase:
            errs[phase].append(abs(value - _realized(out, stream, lo, hi)))
        if alert and hi <= stream.shift_at:
            alerts_before += 1
        if alert and hi > stream.shift_at and first_alert is None:
            first_alert = hi - stream.shift_at
    return {"mae_before": _mean(errs["before"]), "mae_after": _mean(errs["after"]),
            "alert_delay": first_alert, "false_alert_chunks": alerts_before}


def _mean(xs: list[float]) -> Optional[float]:
    return float(np.mean(xs)) if xs else None


def cvm(out: Outputs, stream: Stream, reference: int, ert: float, bootstraps: int) -> dict[str, Any]:
    """alibi-detect's CVMDriftOnline on the confidence, restarted after every alarm."""
    from alibi_detect.cd import CVMDriftOnline

    conf = out.confidence[stream.rows]
    # alibi refuses a (1 - 1/ERT)-quantile from fewer simulations; its docs ask for 10 x ERT
    det = CVMDriftOnline(conf[:reference].reshape(-1, 1), ert=ert, window_sizes=[50, 200],
                         n_bootstraps=max(bootstraps, int(10 * ert)), verbose=False)
    alarms = []
    for t in range(reference, len(conf)):
        if det.predict(conf[t:t + 1].reshape(1, 1), return_test_stat=False)["data"]["is_drift"]:
            alarms.append(t + 1)
            det.reset_state() if hasattr(det, "reset_state") else det.reset()
    return _alarm_summary(alarms, stream.shift_at, reference)


def _alarm_summary(alarms: list[int], shift_at: int, reference: int) -> dict[str, Any]:
    false = sum(1 for a in alarms if a <= shift_at)
    after = [a for a in alarms if a > shift_at]
    return {"delay": after[0] - shift_at if after else None, "false_alarms": false,
            "in_distribution_samples": shift_at - reference}


def compare(args: argparse.Namespace) -> None:
    runs = _load(args.file)
    config = MonitorConfig(window=args.window, ert=args.ert, reference=args.reference)
    rows: list[dict[str, Any]] = []
    runs = runs[: args.seeds or len(runs)]
    for shift in args.shifts:
        for seed, (out, X) in enumerate(runs):
            stream = shifted_stream(out, X, shift, args.shift_at, 2 * args.shift_at, np.random.default_rng(seed))
            t0 = time.process_time()
            tri = replay(out, stream, config, shift=shift, seed=seed).summary()
            t1 = time.process_time()
            nanny = cbpe(out, stream, args.reference, args.window)
            t2 = time.process_time()
            alibi = cvm(out, stream, args.reference, args.ert, args.bootstraps)
            t3 = time.process_time()
            rows.append({"shift": shift, "seed": seed, "triage": tri, "nannyml_cbpe": nanny, "alibi_cvm": alibi,
                         "cpu_s": {"triage": t1 - t0, "nannyml_cbpe": t2 - t1, "alibi_cvm": t3 - t2}})
            print(shift, seed, json.dumps(rows[-1]["cpu_s"]), flush=True)
    false_alarms = in_distribution(runs, args) if args.fa_samples else []
    RESULT.write_text(json.dumps({"config": vars(args) | {"file": str(args.file)}, "streams": rows,
                                  "false_alarms": false_alarms}, indent=1, default=str))
    print(f"wrote {RESULT}")


def in_distribution(runs: list[tuple[Outputs, np.ndarray]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Long unshifted streams: alarms against the configured ERT (triage at each ERT, alibi at the first)."""
    found = []
    for ert in args.fa_erts:
        config = MonitorConfig(window=args.window, ert=ert, reference=args.reference)
        for who in ("triage", "alibi_cvm"):
            if who == "alibi_cvm" and ert != args.fa_erts[0]:
                continue
            samples = args.fa_samples if who == "triage" else args.fa_samples_alibi
            alarms = total = 0
            t0 = time.process_time()
            for seed, (out, X) in enumerate(runs):
                length = args.reference + samples
                stream = shifted_stream(out, X, "prior", length, length, np.random.default_rng(100 + seed))
                if who == "triage":
                    s = replay(out, stream, config, shift="none", seed=seed).summary()
                else:
                    s = cvm(out, stream, args.reference, ert, args.bootstraps)
                alarms += s["false_alarms"]
                total += s["in_distribution_samples"]
            found.append({"who": who, "ert": ert, "samples": total, "alarms": alarms,
                          "expected": total / ert, "per_million": 1e6 * alarms / total,
                          "configured_per_million": 1e6 / ert, "cpu_s": time.process_time() - t0})
            print(json.dumps(found[-1]), flush=True)
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="step", required=True)
    o = sub.add_parser("outputs")
    o.add_argument("--seeds", type=int, default=3)
    o.add_argument("--file", type=Path, default=OUTPUTS)
    c = sub.add_parser("compare")
    c.add_argument("--file", type=Path, default=OUTPUTS)
    c.add_argument("--shift-at", type=int, default=20_000)
    c.add_argument("--reference", type=int, default=5_000)
    c.add_argument("--window", type=int, default=2_000)
    c.add_argument("--ert", type=float, default=10_000.0)
    c.add_argument("--bootstraps", type=int, default=20_000, help="alibi's threshold simulation")
    c.add_argument("--fa-erts", type=float, nargs="+", default=[10_000.0, 100_000.0])
    c.add_argument("--fa-samples", type=int, default=1_000_000, help="per seed, triage")
    c.add_argument("--fa-samples-alibi", type=int, default=50_000, help="per seed, alibi (one predict per sample)")
    c.add_argument("--shifts", nargs="+", default=list(SHIFTS))
    c.add_argument("--seeds", type=int, default=None, help="the first N of the outputs' seeds")
    args = p.parse_args()
    outputs(args) if args.step == "outputs" else compare(args)


if __name__ == "__main__":
    main()
