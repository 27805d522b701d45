"""``triage simulate --shift``: the monitor's core on a shifted replay, measured against the truth.

The served model (v1 trained on the whole pool, as ``triage train`` trains it) scores the
held-out test rows once. A stream of ``length`` samples is drawn from those rows with
replacement, in-distribution (uniform) before ``shift_at`` and shifted after:

- ``covariate``: rows drawn with weight ``exp(strength * z)``, ``z`` the row's standardized
  projection on the test rows' first principal component, signed toward the side where the
  model is less confident (the shift that hurts); every row keeps its label, so P(y|x) is
  unchanged.
- ``prior``: the first half of the classes (sorted) are drawn ``strength`` times as often;
  within a class rows are uniform.
- ``concept``: rows uniform, but a third of the classes (at least two) have their labels
  rotated among themselves: P(y|x) changes, the inputs and outputs do not.

The stream goes through ``VersionMonitor`` in batches of ``batch`` samples, as ``triage
monitor`` folds its buckets in: the first ``reference`` samples are the drift reference,
then the detectors run. With ``reviewed`` (a mask, the scorer's routing), those samples go to
review, the rest are accepted (without it every sample is accepted); with ``audit_rate``, that
share of the accepted samples is audited as the scorer audits them. An audited sample's true
label joins at once (the best case) and a reviewed one's ``label_delay`` samples after it was
scored, correcting the estimate (audit labels) and replacing the labelled samples' expected
correctness by their realized one, as ``triage monitor`` does. Per
window of ``window`` samples: the estimate and its band against
the realized accuracy on the rows' true labels. Overall: the estimate's mean absolute error
before and after the shift (windows straddling it left out), the detection delay (samples
from ``shift_at`` to the end of the batch that raised the first alarm after it) and false
alarms per million in-distribution samples against ``1e6 / ert``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from triage.monitoring.state import MonitorConfig, Observations, VersionMonitor

SHIFTS = ("covariate", "prior", "concept")


@dataclass(frozen=True)
class Outputs:
    """What the scorer publishes for each test row (the monitor's inputs)."""

    confidence: np.ndarray
    margin: np.ndarray
    outlier: np.ndarray
    predicted: np.ndarray  # label strings
    truth: np.ndarray  # label strings (before any concept shift)
    probs: Optional[np.ndarray] = None  # (n, C) calibrated probabilities, columns in ``classes`` order
    classes: Optional[np.ndarray] = None


@dataclass(frozen=True)
class Stream:
    rows: np.ndarray  # test-row index of every sample
    truth: np.ndarray  # the sample's true label after the shift (concept relabels)
    shift_at: int


@dataclass
class Window:
    end: int  # samples streamed at the window's end
    phase: str  # "before", "after" or "mixed"
    estimate: float
    lower: float
    upper: float
    realized: float


@dataclass
class ShiftReport:
    shift: str
    seed: int
    shift_at: int
    length: int
    ert: float
    windows: list[Window] = field(default_factory=list)
    alarms: list[tuple[int, str]] = field(default_factory=list)  # (samples streamed, signal)
    reference: int = 0

    def _mae(self, phase: str) -> Optional[float]:
        errs = [abs(w.estimate - w.realized) for w in self.windows if w.phase == phase]
        return float(np.mean(errs)) if errs else None

    def _outside(self, phase: str) -> Optional[float]:
        ws = [w for w in self.windows if w.phase == phase]
        return float(np.mean([not w.lower <= w.realized <= w.upper for w in ws])) if ws else None

    def summary(self) -> dict[str, Any]:
        in_dist = max(self.shift_at - self.reference, 0)
        false = sum(1 for at, _ in self.alarms if at <= self.shift_at)
        after = [at for at, _ in self.alarms if at > self.shift_at]
        return {
            "shift": self.shift, "seed": self.seed, "shift_at": self.shift_at, "length": self.length,
            "mae_before": self._mae("before"), "mae_after": self._mae("after"),
            "realized_before": _mean([w.realized for w in self.windows if w.phase == "before"]),
            "realized_after": _mean([w.realized for w in self.windows if w.phase == "after"]),
            "outside_band_before": self._outside("before"), "outside_band_after": self._outside("after"),
            "delay": (after[0] - self.shift_at) if after else None,
            "false_alarms": false, "in_distribution_samples": in_dist,
            "false_alarms_per_million": 1e6 * false / in_dist if in_dist else None,
            "configured_per_million": 1e6 / self.ert,
        }


def _mean(xs: Sequence[float]) -> Optional[float]:
    return float(np.mean(xs)) if len(xs) else None


def shifted_stream(outputs: Outputs, X: np.ndarray, shift: str, shift_at: int, length: int,
                   rng: np.random.Generator, strength: float = 4.0) -> Stream:
    """``length`` test-row draws: uniform before ``shift_at``, shifted after (module docstring)."""
    if shift not in SHIFTS:
        raise ValueError(f"unknown shift {shift!r}; one of {', '.join(SHIFTS)}")
    n = len(outputs.truth)
    before = rng.integers(0, n, size=min(shift_at, length))
    weights = np.ones(n)
    truth = outputs.truth.copy()
    if shift == "covariate":
        centred = np.asarray(X, dtype=np.float64) - np.asarray(X, dtype=np.float64).mean(axis=0)
        pc1 = np.linalg.svd(centred, full_matrices=False)[2][0]
        z = centred @ pc1
        z = (z - z.mean()) / (z.std() or 1.0)
        if np.corrcoef(z, outputs.confidence)[0, 1] > 0:  # toward where the model is less sure: a harmful shift
            z = -z
        weights = np.exp(np.log(strength) * z)  # strength: the weight ratio one sd apart
    elif shift == "prior":
        classes = np.unique(truth)
        weights = np.where(np.isin(truth, classes[: max(1, len(classes) // 2)]), strength, 1.0)
    else:
        classes = np.unique(truth)
        moved = classes[: max(2, len(classes) // 3)]
        rotate = dict(zip(moved, np.roll(moved, 1)))
        truth = np.array([rotate.get(t, t) for t in truth])
    after = rng.choice(n, size=max(length - shift_at, 0), p=weights / weights.sum())
    rows = np.concatenate([before, after]).astype(np.int64)
    labels = np.concatenate([outputs.truth[before], truth[after]])
    return Stream(rows, labels, shift_at)


def replay(outputs: Outputs, stream: Stream, config: MonitorConfig, *, shift: str, seed: int,
           batch: int = 100, audit_rate: float = 0.0, reviewed: Optional[np.ndarray] = None,
           label_delay: int = 0) -> ShiftReport:
    """Feed the stream to the monitor's ``VersionMonitor`` batch by batch (module docstring)."""
    monitor = VersionMonitor("v1", config)
    rng = np.random.default_rng(seed)
    audited = np.random.default_rng(20_000 + seed).random(len(stream.rows)) < audit_rate
    review = np.zeros(len(stream.rows), dtype=bool) if reviewed is None else np.asarray(reviewed, dtype=bool)
    audited &= ~review
    labelled = np.flatnonzero(audited | review)
    due = labelled + np.where(audited[labelled], 0, label_delay)  # joined once this many samples were scored
    labelled, due = labelled[np.argsort(due, kind="stable")], np.sort(due, kind="stable")
    joined = 0
    ids = [f"s{i}" for i in range(len(stream.rows))]
    report = ShiftReport(shift, seed, stream.shift_at, len(stream.rows), config.ert, reference=config.reference)
    rows, truth = stream.rows, stream.truth
    correct = outputs.predicted[rows] == truth
    for start in range(0, len(rows), batch):
        r = rows[start:start + batch]
        obs = Observations(confidence=outputs.confidence[r].tolist(), margin=outputs.margin[r].tolist(),
                           outlier=outputs.outlier[r].tolist(), label=outputs.predicted[r].tolist(),
                           accepted=(~review[start:start + batch]).tolist(), sample_id=ids[start:start + batch])
        end = start + len(r)
        report.alarms.extend((end, signal) for signal in monitor.observe(obs, rng))
        while joined < len(labelled) and due[joined] < end:
            i = int(labelled[joined])
            if audited[i]:
                monitor.add_label(float(outputs.confidence[rows[i]]), bool(correct[i]), ids[i])
            else:
                monitor.add_review_label(ids[i], str(truth[i]))
            joined += 1
        if end % config.window == 0 or end == len(rows):
            est = monitor.estimate()
            lo = max(0, end - config.window)
            phase = "before" if end <= stream.shift_at else "after" if lo >= stream.shift_at else "mixed"
            report.windows.append(Window(end, phase, est.accuracy, est.lower, est.upper,
                                         float(correct[lo:end].mean())))
    return report


def score_outputs(split: Any, settings: Any, root: Any) -> Outputs:
    """v1 trained on the whole pool as ``triage train`` trains it, scoring the test rows as the
    scorer does (the outputs ``triage monitor`` would read)."""
    from triage.scoring.scores import score_batch
    from triage.simulation.replay import _served, new_registry

    registry = new_registry(root, split, np.arange(len(split.X_pool)), settings)
    model = _served(registry, settings)
    scores = score_batch(model, split.X_test, settings.policy.acquisition)
    classes = np.asarray(model.classes).astype(str)
    return Outputs(scores.confidence, scores.margin, scores.outlier, classes[scores.predicted],
                   np.asarray(split.y_test).astype(str), scores.probs, classes)


def monitor_config(settings: Any) -> MonitorConfig:
    m = settings.monitor
    return MonitorConfig(window=m.monitor_window, ert=m.drift_ert_samples, reference=m.drift_reference_samples,
                         k=m.drift_k, level=m.estimate_level, recent_labels=settings.policy.audit_recent_labels)


def aggregate(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Means over seeds (delay over the seeds that detected), false alarms pooled."""
    def mean(key: str) -> Optional[float]:
        vals = [s[key] for s in summaries if s[key] is not None]
        return float(np.mean(vals)) if vals else None

    in_dist = sum(s["in_distribution_samples"] for s in summaries)
    false = sum(s["false_alarms"] for s in summaries)
    return {"seeds": len(summaries), "mae_before": mean("mae_before"), "mae_after": mean("mae_after"),
            "realized_before": mean("realized_before"), "realized_after": mean("realized_after"),
            "outside_band_after": mean("outside_band_after"),
            "detected": sum(s["delay"] is not None for s in summaries), "delay": mean("delay"),
            "false_alarms": false, "in_distribution_samples": in_dist,
            "false_alarms_per_million": 1e6 * false / in_dist if in_dist else None,
            "configured_per_million": summaries[0]["configured_per_million"] if summaries else None}


def table(shift: str, agg: dict[str, Any]) -> str:
    def f(x: Optional[float], spec: str = ".3f") -> str:
        return "-" if x is None else format(x, spec)

    return "\n".join([
        "| shift | MAE before | MAE after | realized after | detected | delay (samples) | false alarms / 1M (configured) |",
        "|---|---|---|---|---|---|---|",
        f"| {shift} | {f(agg['mae_before'])} | {f(agg['mae_after'])} | {f(agg['realized_after'])} | "
        f"{agg['detected']}/{agg['seeds']} | {f(agg['delay'], '.0f')} | "
        f"{f(agg['false_alarms_per_million'], '.0f')} ({f(agg['configured_per_million'], '.0f')}) |"])


def to_json(report: ShiftReport) -> dict[str, Any]:
    return {"summary": report.summary(), "windows": [asdict(w) for w in report.windows],
            "alarms": [{"at": at, "signal": s} for at, s in report.alarms]}
