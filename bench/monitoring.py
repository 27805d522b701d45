"""triage's monitor core beside NannyML's CBPE and alibi-detect's CVMDriftOnline on the same
shifted streams (``triage simulate --shift``'s streams: digits, covariate / prior / concept).

Two steps, because the anchors live in their own venv (never in the ``test`` extra):

    python3 -m venv .venv-bench && .venv-bench/bin/pip install nannyml alibi-detect statsmodels
    .venv/bin/python bench/monitoring.py outputs --seeds 10          # v1 per seed scores the test rows
    nice .venv-bench/bin/python bench/monitoring.py compare          # the three on the same streams

The published run (docs/guide/monitoring.md), in parts that fit beside other work, then merged.
It was made before the shipped threshold became reference-aware, with a flag since replaced: its
``triage`` rows are the plain threshold and ``triage_refaware`` the shipped one. The same run
today, as written below, labels them ``triage_plain`` and ``triage``.

    B=".venv-bench/bin/python bench/monitoring.py"; O="--file /tmp/monbench-outputs.npz"
    $B compare $O --fa-only --fa-samples 3000000 --fa-erts-alibi --out /tmp/fa.json
    $B compare $O --fa-only --fa-samples 1000000 --fa-references 1000 5000 --fa-erts 10000 100000 \
        --lever-k 0.5 --lever-plain --fa-seeds-alibi 5 --audit-rates 0.01 --out /tmp/fa-levers.json
    $B compare $O --shift-at 6000 --fa-samples 0 --lever-k 0.5 --lever-plain \
        --only triage triage_conf nannyml_cbpe audit triage_plain triage_k=0.5 --out /tmp/delay.json
    $B compare $O --shift-at 6000 --fa-samples 0 --only alibi_cvm --out /tmp/delay-alibi.json
    $B compare $O --shift-at 200000 --after 60000 --fa-samples 0 --only audit --shifts concept \
        --out /tmp/audit-long.json
    $B compare $O --shift-at 6000 --fa-samples 0 --only triage nannyml_cbpe --out /tmp/estimate.json
    $B compare $O --shift-at 30000 --fa-samples 0 --only triage nannyml_cbpe --out /tmp/estimate-30k.json
    $B summarize /tmp/delay.json /tmp/delay-alibi.json /tmp/audit-long.json /tmp/fa.json /tmp/fa-levers.json \
        /tmp/estimate.json /tmp/estimate-30k.json

Then the review labels (``triage_reviewed``; about 25 CPU-min) and the alarm boost (5 seeds),
merged into the published JSON by stream (the shift-at-6,000 ``triage`` and ``nannyml_cbpe`` rows
replaced, the 30,000 ones kept):

    $B compare $O --shift-at 6000 --fa-samples 0 --only triage nannyml_cbpe triage_reviewed --out /tmp/r.json
    $B compare $O --shift-at 6000 --fa-samples 0 --only triage_reviewed --review rate=0.05 --label-delays 0 \
        --alarm-boost 0.2 2000 --seeds 5 --out /tmp/boost.json

The last two (about 1 CPU-min) measured the audit-corrected estimate (``--estimate-audit-rate``,
1% by default) after the rest; listed last, their ``triage`` and ``nannyml_cbpe`` rows replace
the earlier ones (the same delays, now with the corrected estimate beside the label-free one).

``compare`` imports only triage's pure core (numpy, scipy) and writes
bench/results/monitoring.json. Like with like:

- the same stream per (shift, seed); drift reference = its first ``--reference`` samples for
  triage and alibi, and CBPE is fitted on the same samples (with their labels, which triage
  does not get);
- estimation error on the same windows: ``--window`` samples, aligned so that every window
  starts at or after the end of the reference (CBPE's chunks = triage's windows); triage's
  estimate is corrected by ``--estimate-audit-rate`` audit labels (joined at once), and the
  label-free one it had before is measured on the same windows (``label_free``), both with
  their band's coverage;
- detection at the same ERT (expected in-distribution samples between false alarms):
  triage over all its detectors together (confidence, margin, class mix), ``triage-conf``
  one triage CUSUM on the confidence alone (the same information as alibi), alibi's
  ``CVMDriftOnline`` on the confidence with its own ERT calibration. Both triage variants
  are fed in batches of ``--batch`` samples (the delay's resolution), alibi one sample at a time;
  alibi stops at its first alarm after the shift (its cost is one predict per sample);
- alibi's thresholds depend only on (reference size, windows, ERT, simulations): simulated
  once with ``--bootstraps`` (its docs ask for 10 x ERT) and cached in /tmp;
- concept drift: the label-free signals cannot see it; the audit comparison
  (``TriageEstimateDisagreesWithAudit``: the audit slice's Clopper-Pearson upper bound below
  the estimate's band, at least 100 audit labels) is simulated at ``--audit-rates`` with labels
  arriving at once, with the audit estimator as shipped (cumulative per version) and over the
  last ``--audit-last`` labels (a lever);
- false alarms per million come from separate long in-distribution streams (``--fa-*``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")  # NannyML phones home otherwise
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from triage.monitoring.drift import detectors  # noqa: E402
from triage.monitoring.estimate import accuracy_estimate  # noqa: E402
from triage.monitoring.state import MonitorConfig  # noqa: E402
from triage.simulation.monitoring import SHIFTS, Outputs, Stream, replay, shifted_stream  # noqa: E402

OUTPUTS = Path("/tmp/triage-bench-monitoring-outputs.npz")
RESULT = ROOT / "bench" / "results" / "monitoring.json"
THRESHOLDS = Path("/tmp/triage-bench-cvm-thresholds")


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


def _first_window(args: argparse.Namespace) -> int:
    """Where the first window both estimate starts: the first multiple of the window past the reference."""
    return math.ceil(args.reference / args.window) * args.window


def _correct(out: Outputs, stream: Stream) -> np.ndarray:
    return out.predicted[stream.rows] == stream.truth


def _errors(windows: Sequence[tuple[int, int, float]], correct: np.ndarray, shift_at: int) -> dict[str, Any]:
    """Mean |estimate - realized| over (lo, hi, estimate) windows wholly before / after the shift."""
    errs: dict[str, list[float]] = {"before": [], "after": []}
    for lo, hi, value in windows:
        phase = "before" if hi <= shift_at else "after" if lo >= shift_at else None
        if phase:
            errs[phase].append(abs(value - float(correct[lo:hi].mean())))
    return {"mae_before": _mean(errs["before"]), "mae_after": _mean(errs["after"]),
            "windows_before": len(errs["before"]), "windows_after": len(errs["after"])}


def _mean(xs: Sequence[float]) -> Optional[float]:
    return float(np.mean(xs)) if len(xs) else None


def _alarm_summary(alarms: Sequence[int], shift_at: int, reference: int) -> dict[str, Any]:
    false = sum(1 for a in alarms if a <= shift_at)
    after = [a for a in alarms if a > shift_at]
    return {"delay": after[0] - shift_at if after else None, "false_alarms": false,
            "in_distribution_samples": shift_at - reference}


class _Nothing:
    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc: Any) -> None:
        pass


class _PlainThreshold:
    """Within: triage's monitor builds its detectors with the threshold it had before the
    reference-aware one (``threshold`` without ``reference``: the finite reference ignored)."""

    def __enter__(self) -> None:
        import triage.monitoring.state as state
        from triage.monitoring.drift import Detector, K_DEFAULT, threshold

        self.saved = state.detectors

        def build(references: Any, ert: float, k: float = K_DEFAULT) -> dict[str, Any]:
            h = threshold(ert * len(references), k)
            return {name: Detector(name, h, list(ref), k) for name, ref in references.items()}
        state.detectors = build

    def __exit__(self, *exc: Any) -> None:
        import triage.monitoring.state as state

        state.detectors = self.saved


def _coverage(bands: Sequence[tuple[int, int, float, float]], correct: np.ndarray, shift_at: int) -> dict[str, Any]:
    """Share of (lo, hi, lower, upper) windows wholly before / after the shift whose realized
    accuracy is in the band."""
    inside: dict[str, list[bool]] = {"before": [], "after": []}
    for lo, hi, lower, upper in bands:
        phase = "before" if hi <= shift_at else "after" if lo >= shift_at else None
        if phase:
            inside[phase].append(lower <= float(correct[lo:hi].mean()) <= upper)
    return {f"covered_{p}": _mean([float(x) for x in v]) for p, v in inside.items()}


def routed(out: Outputs, stream: Stream, policy: str, batch: int, window: int = 2_000,
           boost: Optional[tuple[float, np.ndarray]] = None) -> np.ndarray:
    """Which samples the scorer sends to review (its stack's uncertain and outlier reasons, margin
    acquisition): ``threshold`` (the default policy: uncertainty 1 - margin above 0.5) or
    ``rate=R`` (``--policy review-rate``: the uncertainty quantile over the last ``window``
    samples, the batch included, that sends R of them, outliers counted in). Outliers (score
    above 1) always go. ``boost``: (rate, mask) the rate on the samples the mask marks (after a
    drift alarm)."""
    u = 1.0 - out.margin[stream.rows].astype(np.float64)
    forced = np.nan_to_num(out.outlier[stream.rows].astype(np.float64)) > 1.0
    if policy == "threshold":
        return forced | (u > 0.5)
    target, review = float(policy.split("=")[1]), forced.copy()
    for lo in range(0, len(u), batch):
        hi = min(lo + batch, len(u))
        w, f = u[max(0, hi - window):hi], forced[max(0, hi - window):hi]
        free = w[~f]
        need = (target * len(w) - f.sum()) / len(free) if len(free) else 0.0
        if boost is not None and boost[1][lo]:
            need = (boost[0] * len(w) - f.sum()) / len(free) if len(free) else 0.0
        thr = np.inf if need <= 0 else -np.inf if need >= 1 else float(np.quantile(free, 1 - need, method="higher"))
        review[lo:hi] |= u[lo:hi] > thr
    return review


def triage_reviewed(out: Outputs, stream: Stream, args: argparse.Namespace, seed: int, shift: str) -> dict[str, Any]:
    """The shipped estimate with the scorer's routing: per ``--review`` policy, the reviewed
    samples' labels never joined (what the monitor did before; the audit labels still join at
    once) and joined ``--label-delays`` samples after scoring (their realized correctness replaces the expected one), with the same
    audit slice of the accepted samples; on the same windows as ``triage_full``."""
    config = MonitorConfig(window=args.window, ert=args.ert, reference=args.reference)
    start, correct = _first_window(args), _correct(out, stream)
    found: dict[str, Any] = {}
    alarms: list[int] = []
    if args.alarm_boost:
        alarms = sorted({at for at, _ in replay(out, stream, config, shift=shift, seed=seed, batch=args.batch).alarms})
    for policy in args.review + [f"{p}+alarm" for p in args.review if p.startswith("rate=") and args.alarm_boost]:
        boost = None
        if policy.endswith("+alarm"):  # the rate raised for alarm_boost[1] samples after an alarm, then as
            mask = np.zeros(len(stream.rows), dtype=bool)  # long a cool-down in which alarms raise nothing
            length, ready = int(args.alarm_boost[1]), 0
            for at in alarms:
                if at >= ready:
                    mask[at:at + length], ready = True, at + 2 * length
            boost = (args.alarm_boost[0], mask)
        review = routed(out, stream, policy.removesuffix("+alarm"), args.batch, boost=boost)
        found[f"{policy}:share"] = float(review.mean())
        found[f"{policy}:reviews_before"] = int(review[: stream.shift_at].sum())
        found[f"{policy}:reviews_after"] = int(review[stream.shift_at:].sum())
        for delay in ["never", *args.label_delays]:
            report = replay(out, stream, config, shift=shift, seed=seed, batch=args.batch,
                            audit_rate=args.estimate_audit_rate, reviewed=review,
                            label_delay=len(stream.rows) if delay == "never" else int(delay))
            ws = [w for w in report.windows if w.end - args.window >= start and w.end % args.window == 0]
            found[f"{policy}:delay={delay}"] = (
                _errors([(w.end - args.window, w.end, w.estimate) for w in ws], correct, stream.shift_at)
                | _coverage([(w.end - args.window, w.end, w.lower, w.upper) for w in ws], correct, stream.shift_at))
    return found


def triage_full(out: Outputs, stream: Stream, args: argparse.Namespace, seed: int, shift: str,
                k: Optional[float] = None) -> dict[str, Any]:
    """The shipped monitor core (its estimate corrected by ``--estimate-audit-rate``'s audit
    labels) and, on the same windows, the label-free estimate it had before (``label_free``)."""
    config = MonitorConfig(window=args.window, ert=args.ert, reference=args.reference,
                           **({"k": k} if k is not None else {}))
    report = replay(out, stream, config, shift=shift, seed=seed, batch=args.batch, audit_rate=args.estimate_audit_rate)
    start = _first_window(args)
    ws = [w for w in report.windows if w.end - args.window >= start and w.end % args.window == 0]
    correct = _correct(out, stream)
    conf = out.confidence[stream.rows].astype(np.float64)
    free = [(w.end - args.window, w.end, accuracy_estimate(conf[w.end - args.window:w.end], config.level)) for w in ws]
    alarms = sorted({at for at, _ in report.alarms})
    first = [(at, s) for at, s in report.alarms if at > stream.shift_at]
    return (_errors([(w.end - args.window, w.end, w.estimate) for w in ws], correct, stream.shift_at)
            | _coverage([(w.end - args.window, w.end, w.lower, w.upper) for w in ws], correct, stream.shift_at)
            | _alarm_summary(alarms, stream.shift_at, args.reference)
            | {"first_signal": first[0][1] if first else None,
               "label_free": _errors([(lo, hi, e.accuracy) for lo, hi, e in free], correct, stream.shift_at)
               | _coverage([(lo, hi, e.lower, e.upper) for lo, hi, e in free], correct, stream.shift_at)})


def triage_confidence(out: Outputs, stream: Stream, args: argparse.Namespace, seed: int, ert: float,
                      stop_after_shift: bool = True) -> dict[str, Any]:
    """One triage CUSUM on the confidence alone (what alibi sees), calibrated to the whole ERT."""
    conf = out.confidence[stream.rows].astype(np.float64)
    det = detectors({"confidence": conf[:args.reference].tolist()}, ert)["confidence"]
    rng = np.random.default_rng(seed)
    alarms: list[int] = []
    for lo in range(args.reference, len(conf), args.batch):
        hi = min(lo + args.batch, len(conf))
        if det.update(conf[lo:hi], rng):
            alarms.append(hi)
            if stop_after_shift and hi > stream.shift_at:
                break
    return _alarm_summary(alarms, stream.shift_at, args.reference)


def cbpe(out: Outputs, stream: Stream, args: argparse.Namespace) -> dict[str, Any]:
    """NannyML CBPE fitted on the labelled reference, estimating the same windows as triage."""
    import nannyml as nml
    import pandas as pd

    cols = {c: f"p_{c}" for c in out.classes}
    frame = pd.DataFrame({f"p_{c}": out.probs[stream.rows, i] for i, c in enumerate(out.classes)})
    frame["y_pred"] = out.predicted[stream.rows]
    frame["y_true"] = stream.truth
    est = nml.CBPE(y_pred_proba=cols, y_pred="y_pred", y_true="y_true", problem_type="classification_multiclass",
                   metrics=["accuracy"], chunk_size=args.window)
    est.fit(frame.iloc[:args.reference])
    start = _first_window(args)
    analysis = frame.iloc[start:].drop(columns="y_true").reset_index(drop=True)
    res = est.estimate(analysis).filter(period="analysis").to_df()
    windows, alerts = [], []
    for s, e, value, alert in zip(res[("chunk", "start_index")], res[("chunk", "end_index")],
                                  res[("accuracy", "value")], res[("accuracy", "alert")]):
        lo, hi = start + int(s), start + int(e) + 1
        if hi - lo == args.window:
            windows.append((lo, hi, float(value)))
            if alert:
                alerts.append(hi)
    errs = _errors(windows, _correct(out, stream), stream.shift_at)
    after = [a for a in alerts if a > stream.shift_at]
    return errs | {"alert_delay": after[0] - stream.shift_at if after else None,
                   "false_alert_windows": sum(1 for a in alerts if a <= stream.shift_at)}


def _cached_cvm() -> type:
    from alibi_detect.cd import CVMDriftOnline

    class CachedCVM(CVMDriftOnline):  # type: ignore[misc]
        """alibi's own thresholds (rank-based, so the same for any data of this reference size,
        windows and ERT), simulated once."""

        def _configure_thresholds(self) -> None:
            key = json.dumps([int(self.n), [int(w) for w in self.window_sizes], float(self.ert),
                              int(self.n_bootstraps), int(self.n_features)])
            path = THRESHOLDS / (hashlib.sha1(key.encode()).hexdigest()[:16] + ".npy")
            if path.exists():
                self.thresholds = np.load(path)
                return
            np.random.seed(0)  # alibi simulates with the global generator
            super()._configure_thresholds()
            THRESHOLDS.mkdir(exist_ok=True)
            np.save(path, self.thresholds)

    return CachedCVM


def _break_ties(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add noise below the smallest gap between distinct values: a random order among ties (what
    triage's randomized ranks do) and the same order otherwise."""
    distinct = np.unique(values)
    gap = float(np.diff(distinct).min()) if len(distinct) > 1 else 1.0
    return values + rng.random(len(values)) * gap / 2


def cvm(out: Outputs, stream: Stream, args: argparse.Namespace, ert: float, seed: int, *, jitter: bool,
        stop_after_shift: bool = True) -> dict[str, Any]:
    """alibi-detect's CVMDriftOnline on the confidence, restarted after every alarm."""
    conf = out.confidence[stream.rows].astype(np.float64)
    if jitter:
        conf = _break_ties(conf, np.random.default_rng(10_000 + seed))
    det = _cached_cvm()(conf[:args.reference].reshape(-1, 1), ert=ert, window_sizes=args.cvm_windows,
                        n_bootstraps=max(args.bootstraps, int(10 * ert)), batch_size=16, verbose=False)
    alarms = []
    for t in range(args.reference, len(conf)):
        if det.predict(conf[t:t + 1].reshape(1, 1), return_test_stat=False)["data"]["is_drift"]:
            alarms.append(t + 1)
            det.reset_state()
            if stop_after_shift and t + 1 > stream.shift_at:
                break
    return _alarm_summary(alarms, stream.shift_at, args.reference)


def audit_alarms(out: Outputs, stream: Stream, rate: float, last: Optional[int], window: int, seed: int,
                 level: float = 0.95, min_labels: int = 100) -> list[int]:
    """Samples streamed at each start of ``TriageEstimateDisagreesWithAudit``'s condition: the audit
    slice's upper bound (cumulative per version as ``AuditEstimator`` keeps it, or over its
    ``last`` labels) below the lower end of the estimate's band over the last ``window`` samples."""
    from scipy.special import betaincinv
    from scipy.stats import norm

    conf = out.confidence[stream.rows].astype(np.float64)
    correct = _correct(out, stream).astype(np.int64)
    at = np.flatnonzero(np.random.default_rng(20_000 + seed).random(len(conf)) < rate)  # audited samples
    n = np.arange(1, len(at) + 1)
    k = np.cumsum(correct[at])
    if last:
        k = k - np.concatenate([np.zeros(last, dtype=np.int64), k[:-last]])[: len(k)]
        n = np.minimum(n, last)
    a = (1 - level) / 2
    upper = np.where(k == n, 1.0, betaincinv(k + 1, np.maximum(n - k, 1), 1 - a))
    c1, c2 = np.concatenate([[0.0], np.cumsum(conf)]), np.concatenate([[0.0], np.cumsum(conf * (1 - conf))])
    end = at + 1
    lo = np.maximum(end - window, 0)
    m = end - lo
    est = (c1[end] - c1[lo]) / m
    lower = est - norm.ppf(0.5 + level / 2) * np.sqrt(c2[end] - c2[lo]) / m
    on = (upper < lower) & (n >= min_labels)
    starts = np.flatnonzero(on & ~np.concatenate([[False], on[:-1]]))
    return [int(end[i]) for i in starts]


def audit(out: Outputs, stream: Stream, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    found = {}
    for rate in args.audit_rates:
        for last in (None, args.audit_last):
            alarms = audit_alarms(out, stream, rate, last, args.window, seed)
            name = f"rate={rate:g}" + (f",last={last}" if last else ",cumulative")
            found[name] = _alarm_summary(alarms, stream.shift_at, 0)
    return found


def _with(context: Any, run: Any) -> Any:
    with context:
        return run()


def compare(args: argparse.Namespace) -> None:
    runs = _load(args.file)
    runs = runs[: args.seeds or len(runs)]
    rows: list[dict[str, Any]] = []
    if not args.fa_only:
        for shift in args.shifts:
            for seed, (out, X) in enumerate(runs):
                stream = shifted_stream(out, X, shift, args.shift_at, args.shift_at + args.after,
                                        np.random.default_rng(seed))
                cpu, row = {}, {"shift": shift, "seed": seed, "shift_at": args.shift_at}
                for who, run in (("triage", lambda: triage_full(out, stream, args, seed, shift)),
                                 ("triage_conf", lambda: triage_confidence(out, stream, args, seed, args.ert)),
                                 ("triage_reviewed", lambda: triage_reviewed(out, stream, args, seed, shift)),
                                 ("nannyml_cbpe", lambda: cbpe(out, stream, args)),
                                 ("alibi_cvm", lambda: cvm(out, stream, args, args.ert, seed, jitter=False)),
                                 ("alibi_cvm_ties_broken", lambda: cvm(out, stream, args, args.ert, seed, jitter=True)),
                                 ("audit", lambda: audit(out, stream, args, seed)),
                                 *((("triage_plain", lambda: _with(_PlainThreshold(), lambda: triage_full(
                                     out, stream, args, seed, shift))),) if args.lever_plain else ()),
                                 *((f"triage_k={k:g}", lambda k=k: triage_full(out, stream, args, seed, shift, k))
                                   for k in args.lever_k)):
                    if args.only and who not in args.only:
                        continue
                    t0 = time.process_time()
                    row[who] = run()
                    cpu[who] = round(time.process_time() - t0, 2)
                rows.append(row | {"cpu_s": cpu})
                print(json.dumps(rows[-1]), flush=True)
    false_alarms = in_distribution(runs, args) if args.fa_samples else []
    result = {"config": vars(args) | {"file": str(args.file), "out": str(args.out)}, "streams": rows,
              "false_alarms": false_alarms}
    args.out.write_text(json.dumps(result, indent=1, default=str))
    print(f"wrote {args.out}")


def in_distribution(runs: list[tuple[Outputs, np.ndarray]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Long unshifted streams: alarms against the configured ERT."""
    found = []

    def record(who: str, ert: float, reference: int, alarms: int, total: int, t0: float, **extra: Any) -> None:
        found.append({"who": who, "ert": ert, "reference": reference, "samples": total, "alarms": alarms,
                      "expected": total / ert if ert else None, "per_million": 1e6 * alarms / total,
                      "configured_per_million": 1e6 / ert if ert else None,
                      "cpu_s": round(time.process_time() - t0, 1)} | extra)
        print(json.dumps(found[-1]), flush=True)

    def stream(seed: int, out: Outputs, X: np.ndarray, samples: int, reference: int) -> Stream:
        length = reference + samples
        return shifted_stream(out, X, "prior", length, length, np.random.default_rng(100 + seed))

    for reference in args.fa_references:
        variants = [(ert, None, False) for ert in args.fa_erts] + [(args.ert, k, False) for k in args.lever_k]
        variants += [(ert, None, True) for ert in args.fa_erts] if args.lever_plain else []
        for ert, k, plain in variants:
            config = MonitorConfig(window=args.window, ert=ert, reference=reference,
                                   **({"k": k} if k is not None else {}))
            t0, alarms, total = time.process_time(), 0, 0
            for seed, (out, X) in enumerate(runs):
                s = _with(_PlainThreshold() if plain else _Nothing(), lambda: replay(
                    out, stream(seed, out, X, args.fa_samples, reference), config, shift="none", seed=seed,
                    batch=args.fa_batch).summary())
                alarms, total = alarms + s["false_alarms"], total + s["in_distribution_samples"]
            record("triage_plain" if plain else "triage" if k is None else f"triage_k={k:g}", ert, reference,
                   alarms, total, t0)
    sub = argparse.Namespace(**(vars(args) | {"reference": args.reference}))
    for ert in args.fa_erts_alibi:
        for who in ("triage_conf", "alibi_cvm", "alibi_cvm_ties_broken"):
            t0, alarms, total = time.process_time(), 0, 0
            for seed, (out, X) in enumerate(runs[: args.fa_seeds_alibi]):
                st = stream(seed, out, X, args.fa_samples_alibi, args.reference)
                if who == "triage_conf":
                    s = triage_confidence(out, st, sub, seed, ert, stop_after_shift=False)
                else:
                    s = cvm(out, st, sub, ert, seed, jitter=who.endswith("broken"), stop_after_shift=False)
                alarms, total = alarms + s["false_alarms"], total + s["in_distribution_samples"]
            record(who, ert, args.reference, alarms, total, t0)
    for rate in args.audit_rates:
        for last in (None, args.audit_last):
            t0, alarms, total = time.process_time(), 0, 0
            for seed, (out, X) in enumerate(runs):
                st = stream(seed, out, X, args.fa_samples, 0)
                alarms += len(audit_alarms(out, st, rate, last, args.window, seed))
                total += len(st.rows)
            record("audit", 0.0, 0, alarms, total, t0, rate=rate, last=last)
    return found


def _t_interval(xs: Sequence[float]) -> Optional[list[float]]:
    from scipy.stats import t

    xs = [x for x in xs if x is not None]
    if len(xs) < 2:
        return None
    m, half = float(np.mean(xs)), float(t.ppf(0.975, len(xs) - 1) * np.std(xs, ddof=1) / np.sqrt(len(xs)))
    return [m, m - half, m + half]


def _median_interval(delays: Sequence[Optional[int]]) -> dict[str, Any]:
    """Median delay (undetected = never) and a distribution-free >= 95% interval from order statistics."""
    from scipy.stats import binom

    xs = sorted(math.inf if d is None else float(d) for d in delays)
    n = len(xs)
    j = max([i for i in range(1, n // 2 + 1) if binom.cdf(i - 1, n, 0.5) <= 0.025], default=0)
    def val(x: float) -> Optional[float]:
        return None if x == math.inf else x
    return {"detected": sum(d is not None for d in delays), "n": n, "median": val(float(np.median(xs))),
            "interval": [val(xs[j - 1]), val(xs[n - j])] if j else None,
            "coverage": float(1 - 2 * binom.cdf(j - 1, n, 0.5)) if j else None}


def _poisson(alarms: int, samples: int) -> list[float]:
    from scipy.stats import chi2

    lo = chi2.ppf(0.025, 2 * alarms) / 2 if alarms else 0.0
    hi = chi2.ppf(0.975, 2 * alarms + 2) / 2
    return [1e6 * alarms / samples, 1e6 * lo / samples, 1e6 * hi / samples]


DETECTORS = ("triage", "triage_conf", "alibi_cvm", "alibi_cvm_ties_broken")  # and triage_k=K levers


def summarize(args: argparse.Namespace) -> None:
    """Merge ``compare`` outputs into bench/results/monitoring.json with per-shift aggregates."""
    parts = [json.loads(Path(f).read_text()) for f in args.inputs]
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}  # one row per stream, whichever runs measured it
    for r in (r for p in parts for r in p["streams"]):
        row = merged.setdefault((r["shift"], r["seed"], r.get("shift_at")), {})
        row.update(r | {"cpu_s": row.get("cpu_s", {}) | r["cpu_s"]})
    streams = list(merged.values())
    fas = [r for p in parts for r in p["false_alarms"]]
    shifts: dict[str, Any] = {}
    for key in dict.fromkeys((r["shift"], r.get("shift_at")) for r in streams):
        shift = key[0] if key[1] is None else f"{key[0]}@{key[1]}"
        rs = [r for r in streams if (r["shift"], r.get("shift_at")) == key]
        agg: dict[str, Any] = {"seeds": len(rs)}
        for who in ("triage", "nannyml_cbpe", *(w for w in rs[0] if w.startswith("triage_k="))):
            if who not in rs[0]:
                continue
            for phase in ("before", "after"):
                agg[f"{who}_mae_{phase}"] = _t_interval([r[who][f"mae_{phase}"] for r in rs])
                if who == "triage" and "label_free" in rs[0][who]:
                    free = [r[who]["label_free"] for r in rs]
                    agg[f"triage_label_free_mae_{phase}"] = _t_interval([f[f"mae_{phase}"] for f in free])
                    if "nannyml_cbpe" in rs[0]:  # paired on the same streams: tighter than the intervals apart
                        agg[f"triage_minus_cbpe_mae_{phase}"] = _t_interval(
                            [r[who][f"mae_{phase}"] - r["nannyml_cbpe"][f"mae_{phase}"] for r in rs
                             if r[who][f"mae_{phase}"] is not None and r["nannyml_cbpe"][f"mae_{phase}"] is not None])
                    for name, src in (("triage", [r[who] for r in rs]), ("triage_label_free", free)):
                        agg[f"{name}_covered_{phase}"] = _mean([x[f"covered_{phase}"] for x in src
                                                                if x[f"covered_{phase}"] is not None])
        if "triage_reviewed" in rs[0]:
            agg["triage_reviewed"] = _reviewed_summary(rs)
        for who in DETECTORS + tuple(w for w in rs[0] if w.startswith(("triage_k=", "triage_refaware", "triage_plain"))):
            if who not in rs[0]:
                continue
            agg[f"{who}_delay"] = _median_interval([r[who]["delay"] for r in rs])
        if "nannyml_cbpe" in rs[0]:
            agg["nannyml_cbpe_alert_delay"] = _median_interval([r["nannyml_cbpe"]["alert_delay"] for r in rs])
        for name in rs[0].get("audit", {}):
            agg[f"audit_{name}_delay"] = _median_interval([r["audit"][name]["delay"] for r in rs])
        shifts[shift] = agg
    false_alarms = []
    for r in fas:
        false_alarms.append(r | {"per_million_interval": _poisson(r["alarms"], r["samples"])})
    RESULT.write_text(json.dumps({"runs": [p["config"] for p in parts], "summary": shifts,
                                  "false_alarms": false_alarms, "streams": streams}, indent=1, default=str))
    print(markdown(shifts, false_alarms))
    print(f"wrote {RESULT}")


def _reviewed_summary(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per routing and label delay: MAE [95% t], band coverage, and paired differences on the same
    streams against CBPE and against the review labels never joined (the monitor before)."""
    found: dict[str, Any] = {}
    for name, first in rs[0]["triage_reviewed"].items():
        if not isinstance(first, dict):
            found[name] = _mean([r["triage_reviewed"][name] for r in rs])  # the reviewed share, or reviews
            continue
        policy = name.split(":")[0]
        for phase in ("before", "after"):
            mine = [r["triage_reviewed"][name][f"mae_{phase}"] for r in rs]
            found[f"{name}:mae_{phase}"] = _t_interval(mine)
            found[f"{name}:covered_{phase}"] = _mean([r["triage_reviewed"][name][f"covered_{phase}"] for r in rs
                                                      if r["triage_reviewed"][name][f"covered_{phase}"] is not None])
            for other, theirs in (("cbpe", [r.get("nannyml_cbpe", {}).get(f"mae_{phase}") for r in rs]),
                                  ("never", [r["triage_reviewed"][f"{policy}:delay=never"][f"mae_{phase}"] for r in rs]),
                                  *((("unboosted", [r["triage_reviewed"][name.replace("+alarm", "")][f"mae_{phase}"]
                                                    for r in rs]),) if "+alarm" in name else ())):
                found[f"{name}:minus_{other}_mae_{phase}"] = _t_interval(
                    [a - b for a, b in zip(mine, theirs) if a is not None and b is not None])
    return found


def markdown(shifts: dict[str, Any], false_alarms: list[dict[str, Any]]) -> str:
    def mae(c: Optional[list[float]]) -> str:
        return "-" if c is None else f"{c[0]:.4f} [{c[1]:.4f}, {c[2]:.4f}]"

    def delay(c: Optional[dict[str, Any]]) -> str:
        if c is None:
            return "-"
        med = "never" if c["median"] is None else f"{c['median']:,.0f}"
        iv = "" if not c["interval"] else " [" + ", ".join("never" if x is None else f"{x:,.0f}" for x in c["interval"]) + "]"
        return f"{med}{iv} ({c['detected']}/{c['n']})"

    def share(x: Optional[float]) -> str:
        return "-" if x is None else f"{x:.2f}"

    lines = ["| stream | phase | triage (audit-corrected) | triage label-free | CBPE | "
             "band coverage corrected / label-free |", "|---|---|---|---|---|---|"]
    for name, a in shifts.items():
        for p in ("before", "after"):
            if f"triage_mae_{p}" in a:
                lines.append(f"| {name} | {p} | {mae(a[f'triage_mae_{p}'])} | "
                             f"{mae(a.get(f'triage_label_free_mae_{p}'))} | "
                             f"{mae(a.get(f'nannyml_cbpe_mae_{p}'))} | {share(a.get(f'triage_covered_{p}'))} / "
                             f"{share(a.get(f'triage_label_free_covered_{p}'))} |")
    lines += ["", "| stream | phase | routing:delay | MAE | coverage | minus CBPE | minus never |",
              "|---|---|---|---|---|---|---|"]
    for name, a in shifts.items():
        rev = a.get("triage_reviewed", {})
        for p in ("before", "after"):
            for key in (k[: -len(f":mae_{p}")] for k in rev if k.endswith(f":mae_{p}")):
                lines.append(f"| {name} | {p} | {key} ({share(rev.get(key.split(':')[0] + ':share'))}) | "
                             f"{mae(rev[f'{key}:mae_{p}'])} | {share(rev.get(f'{key}:covered_{p}'))} | "
                             f"{mae(rev.get(f'{key}:minus_cbpe_mae_{p}'))} | {mae(rev.get(f'{key}:minus_never_mae_{p}'))} |")
    whos = sorted({k[:-6] for a in shifts.values() for k in a if k.endswith("_delay")})
    lines += ["", "| stream | " + " | ".join(whos) + " |", "|---|" + "---|" * len(whos)]
    for name, a in shifts.items():
        lines.append(f"| {name} | " + " | ".join(delay(a.get(f"{w}_delay")) for w in whos) + " |")
    lines += ["", "| who | reference | ERT | samples | alarms | per million [95%] | configured |", "|---|---|---|---|---|---|---|"]
    for r in false_alarms:
        who = r["who"] + (f" rate={r['rate']:g} " + ("cumulative" if not r["last"] else f"last={r['last']}")
                          if r["who"] == "audit" else "")
        pm = r["per_million_interval"]
        lines.append(f"| {who} | {r['reference']} | {r['ert']:g} | {r['samples']:,} | {r['alarms']} | "
                     f"{pm[0]:.1f} [{pm[1]:.1f}, {pm[2]:.1f}] | {r['configured_per_million'] or '-'} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="step", required=True)
    o = sub.add_parser("outputs")
    o.add_argument("--seeds", type=int, default=10)
    o.add_argument("--file", type=Path, default=OUTPUTS)
    c = sub.add_parser("compare")
    c.add_argument("--file", type=Path, default=OUTPUTS)
    c.add_argument("--shift-at", type=int, default=10_000)
    c.add_argument("--after", type=int, default=20_000, help="samples streamed after the shift")
    c.add_argument("--reference", type=int, default=1_000)
    c.add_argument("--window", type=int, default=2_000)
    c.add_argument("--ert", type=float, default=10_000.0)
    c.add_argument("--batch", type=int, default=10, help="triage's batches in the delay runs")
    c.add_argument("--cvm-windows", type=int, nargs="+", default=[50, 200])
    c.add_argument("--bootstraps", type=int, default=100_000, help="alibi's threshold simulations (at least 10 x ERT)")
    c.add_argument("--lever-k", type=float, nargs="*", default=[], help="triage also at these CUSUM allowances")
    c.add_argument("--lever-plain", action="store_true",
                   help="triage also with the threshold it had before the reference-aware one")
    c.add_argument("--audit-rates", type=float, nargs="+", default=[0.01, 0.05])
    c.add_argument("--audit-last", type=int, default=200, help="the windowed audit lever: its last N labels")
    c.add_argument("--estimate-audit-rate", type=float, default=0.01, help="audited share whose labels correct "
                   "triage's estimate (labels at once; 0: the label-free estimate)")
    c.add_argument("--review", nargs="+", default=["threshold", "rate=0.05"],
                   help="the scorer's routing for triage_reviewed: threshold (default policy) or rate=R")
    c.add_argument("--label-delays", type=int, nargs="*", default=[0, 500, 1000],
                   help="samples between a reviewed sample's scoring and its label (triage_reviewed; audit "
                   "labels join at once)")
    c.add_argument("--alarm-boost", type=float, nargs=2, default=None, metavar=("RATE", "SAMPLES"),
                   help="triage_reviewed also with every rate=R routing raised to RATE for SAMPLES samples after "
                   "each drift alarm (issue 22 item 4)")
    c.add_argument("--fa-references", type=int, nargs="+", default=[1_000, 5_000])
    c.add_argument("--fa-erts", type=float, nargs="+", default=[10_000.0, 100_000.0, 1_000_000.0])
    c.add_argument("--fa-samples", type=int, default=2_000_000, help="per seed, triage")
    c.add_argument("--fa-batch", type=int, default=2_000, help="triage's batches in the long runs (alarms are "
                   "counted per sample whatever the batch)")
    c.add_argument("--fa-erts-alibi", type=float, nargs="*", default=[10_000.0])
    c.add_argument("--fa-samples-alibi", type=int, default=50_000, help="per seed (one predict per sample)")
    c.add_argument("--fa-seeds-alibi", type=int, default=10)
    c.add_argument("--fa-only", action="store_true", help="only the long runs")
    c.add_argument("--out", type=Path, default=RESULT)
    c.add_argument("--shifts", nargs="+", default=list(SHIFTS))
    c.add_argument("--only", nargs="*", default=[], help="run only these (triage, triage_conf, nannyml_cbpe, "
                   "alibi_cvm, alibi_cvm_ties_broken, audit, ...)")
    c.add_argument("--seeds", type=int, default=None, help="the first N of the outputs' seeds")
    s = sub.add_parser("summarize")
    s.add_argument("inputs", nargs="+", type=Path, help="compare --out files")
    args = p.parse_args()
    {"outputs": outputs, "compare": compare, "summarize": summarize}[args.step](args)


if __name__ == "__main__":
    main()
