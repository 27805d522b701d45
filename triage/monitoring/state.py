"""What ``triage monitor`` knows, per model version, as plain values. Pure: observations in,
numbers out; the whole state round-trips through ``state()`` / ``from_state`` (the checkpoint).

An observation is one scored sample as the scorer published it: its calibrated confidence
(the top-class probability), margin, outlier score (NaN when outlier detection is off) and
predicted label. Per version the monitor keeps

- a sliding window of confidences: the label-free accuracy estimate (``estimate``), with
  whether each sample was auto-accepted, its sample id and predicted label, and its realized
  correctness once its label comes in (``add_review_label``, ``add_label``): a labelled
  sample's realized correctness replaces its expected one;
- ``correct - confidence`` of its last ``recent_labels`` labelled audit samples: the
  estimate's bias correction (``estimate.correction``; the accepted estimate, which the audit
  comparison checks against those labels, stays label-free);
- drift detectors (``drift``) on confidence, margin, outlier score and the predicted-class mix.
  The first ``reference`` observations of a version are its reference (the version's own
  traffic when it started serving); the detectors are built when it is full, calibrated to the
  configured expected run time over however many detectors that makes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from triage.monitoring.drift import K_DEFAULT, Detector, detectors
from triage.monitoring.estimate import MIN_LABELS, Correction, Estimate, accuracy_estimate, correction

SIGNALS = ("confidence", "margin", "outlier")


@dataclass(frozen=True)
class MonitorConfig:
    window: int = 2_000
    ert: float = 1_000_000.0
    reference: int = 5_000
    k: float = K_DEFAULT
    level: float = 0.95
    recent_labels: int = 200  # audit labels behind the estimate's correction (--audit-recent-labels)
    min_labels: int = MIN_LABELS


@dataclass
class Observations:
    """A batch of observations of one version, in arrival order."""

    confidence: list[float] = field(default_factory=list)
    margin: list[float] = field(default_factory=list)
    outlier: list[float] = field(default_factory=list)
    label: list[str] = field(default_factory=list)
    accepted: list[bool] = field(default_factory=list)  # auto-accepted (a plain prediction)
    sample_id: list[str] = field(default_factory=list)  # "" when unknown (its label cannot be joined)

    def add(self, confidence: float, margin: float, outlier: Optional[float], label: str, accepted: bool,
            sample_id: str = "") -> None:
        self.sample_id.append(sample_id)
        self.accepted.append(accepted)
        self.confidence.append(confidence)
        self.margin.append(margin)
        self.outlier.append(float("nan") if outlier is None else outlier)
        self.label.append(label)

    def __len__(self) -> int:
        return len(self.label)


class Ring:
    """The last ``size`` values."""

    def __init__(self, size: int) -> None:
        self.values, self.next = np.full(size, np.nan), 0

    def add(self, x: np.ndarray) -> None:
        size = len(self.values)
        idx = (self.next + np.arange(len(x))) % size
        self.values[idx[-size:]] = x[-size:]
        self.next = int((self.next + len(x)) % size)

    def filled(self) -> np.ndarray:
        return self.values[~np.isnan(self.values)]

    def state(self) -> dict[str, Any]:
        return {"values": [None if v != v else v for v in self.values.tolist()], "next": self.next}

    @classmethod
    def from_state(cls, state: dict[str, Any], size: int) -> "Ring":
        ring = cls(size)
        values = np.array([np.nan if v is None else v for v in state["values"]], dtype=np.float64)
        if len(values) == size:
            ring.values, ring.next = values, int(state["next"])
        else:  # the window size changed: keep the newest values
            ring.add(values[~np.isnan(values)])
        return ring


class VersionMonitor:
    def __init__(self, version: str, config: MonitorConfig) -> None:
        self.version, self.config = version, config
        self.window, self.accepted = Ring(config.window), Ring(config.window)
        self.window_accepted = Ring(config.window)  # 1.0 where the window's sample was auto-accepted
        self.residuals = Ring(config.recent_labels)  # correct - confidence of labelled audit samples
        self.residual_ids: list[str] = [""] * config.recent_labels  # aligned with ``residuals``' slots
        self.residual_slot: dict[str, int] = {}  # sample id -> its slot in ``residuals``
        # aligned with ``window``'s slots: realized correctness (NaN: no label yet), id, predicted label
        self.known = Ring(config.window)
        self.ids: list[str] = [""] * config.window
        self.predicted: list[str] = [""] * config.window
        self.slot: dict[str, int] = {}  # sample id -> its slot in the window
        self.seen = 0
        self.reference: dict[str, list[float]] = {s: [] for s in SIGNALS}
        self.reference_labels: list[str] = []
        self.detectors: dict[str, Detector] = {}

    # --- updates ---------------------------------------------------------------------------
    def observe(self, obs: Observations, rng: np.random.Generator) -> list[str]:
        """Fold a batch in; returns the signals that raised an alarm."""
        conf = np.asarray(obs.confidence, dtype=np.float64)
        accepted = np.asarray(obs.accepted, dtype=bool)
        self._place(obs)
        self.window.add(conf)
        self.window_accepted.add(accepted.astype(np.float64))
        self.accepted.add(conf[accepted])
        self.seen += len(conf)
        values = {"confidence": conf, "margin": np.asarray(obs.margin, dtype=np.float64),
                  "outlier": np.asarray(obs.outlier, dtype=np.float64)}
        labels = list(obs.label)
        if not self.detectors:
            take = self.config.reference - len(self.reference_labels)
            for s in SIGNALS:
                self.reference[s].extend(values[s][:take].tolist())
            self.reference_labels.extend(labels[:take])
            values = {s: v[take:] for s, v in values.items()}
            labels = labels[take:]
            if len(self.reference_labels) < self.config.reference:
                return []
            self._build()
        labels_arr = np.asarray(labels, dtype=object)
        alarms = []
        for name, det in self.detectors.items():
            if name.startswith("class:"):
                x = (labels_arr == name[6:]).astype(np.float64)
            else:
                x = values[name]
                x = x[~np.isnan(x)]
            if det.update(x, rng):
                alarms.append(name)
        return alarms

    def _place(self, obs: Observations) -> None:
        """The batch's ids and predicted labels into the slots ``window.add`` is about to fill."""
        size, n = len(self.ids), len(obs)
        ids = obs.sample_id if len(obs.sample_id) == n else [""] * n
        slots = (self.window.next + np.arange(n)) % size
        for i in range(max(0, n - size), n):
            j = int(slots[i])
            if self.slot.get(self.ids[j]) == j:
                del self.slot[self.ids[j]]
            self.ids[j], self.predicted[j] = ids[i], obs.label[i]
            self.known.values[j] = np.nan
            if ids[i]:
                self.slot[ids[i]] = j

    def _build(self) -> None:
        labels = np.asarray(self.reference_labels, dtype=object)
        references: dict[str, list[float]] = {}
        for s in SIGNALS:
            ref = np.asarray(self.reference[s], dtype=np.float64)
            if not np.isnan(ref).all():
                references[s] = ref[~np.isnan(ref)].tolist()
        for c in sorted(set(self.reference_labels)):
            references[f"class:{c}"] = (labels == c).astype(np.float64).tolist()
        self.detectors = detectors(references, self.config.ert, self.config.k)
        self.reference = {s: [] for s in SIGNALS}  # now held by the detectors
        self.reference_labels = []

    def add_label(self, confidence: float, correct: Optional[bool], sample_id: str = "") -> None:
        """A labelled audit sample of this version (its scored confidence, and whether it was
        right; None: its label was taken back). A sample labelled again replaces its residual."""
        value = np.nan if correct is None else float(correct) - confidence
        r = self.residual_slot.get(sample_id) if sample_id else None
        if r is not None:
            self.residuals.values[r] = value
        elif correct is not None:
            r = self.residuals.next
            if self.residual_slot.get(self.residual_ids[r]) == r:
                del self.residual_slot[self.residual_ids[r]]
            self.residuals.add(np.array([value]))
            self.residual_ids[r] = sample_id
            if sample_id:
                self.residual_slot[sample_id] = r
        j = self.slot.get(sample_id) if sample_id else None
        if j is not None:
            self.known.values[j] = np.nan if correct is None else float(correct)

    def add_review_label(self, sample_id: str, label: Optional[str]) -> bool:
        """The standing label of a sample in the window (a reviewed one, in queue order; None:
        taken back): its realized correctness replaces its expected one. False when the sample
        is not in the window."""
        j = self.slot.get(sample_id)
        if j is None:
            return False
        self.known.values[j] = np.nan if label is None else float(self.predicted[j] == label)
        return True

    def labelled(self) -> int:
        """Samples in the window whose correctness is known."""
        return int(np.sum(~np.isnan(self.known.values)))

    # --- reading ---------------------------------------------------------------------------
    @property
    def calibrated(self) -> bool:
        """The detectors are built (the reference phase is over)."""
        return bool(self.detectors)

    def correction(self) -> Optional[Correction]:
        return correction(self.residuals.filled(), self.config.min_labels)

    def estimate(self) -> Estimate:
        """Accuracy of everything the version scored (its last ``window`` samples), its accepted
        samples corrected by the audit labels' bias when there are enough of them."""
        filled = ~np.isnan(self.window.values)
        return accuracy_estimate(self.window.values[filled], self.config.level, self.window_accepted.values[filled],
                                 self.correction(), self.known.values[filled])

    def estimate_accepted(self) -> Estimate:
        """Accuracy of what it auto-accepted, without labels: the audit comparison checks this
        against the audit slice, so no audit label goes into it."""
        return accuracy_estimate(self.accepted.filled(), self.config.level)

    # --- checkpoint ------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"version": self.version, "window": self.window.state(), "accepted": self.accepted.state(),
                "window_accepted": self.window_accepted.state(), "residuals": self.residuals.state(),
                "residual_ids": self.residual_ids,
                "known": self.known.state(), "ids": self.ids, "predicted": self.predicted,
                "seen": self.seen, "reference": self.reference,
                "reference_labels": self.reference_labels,
                "detectors": {n: d.state() for n, d in self.detectors.items()}}

    @classmethod
    def from_state(cls, state: dict[str, Any], config: MonitorConfig) -> "VersionMonitor":
        m = cls(state["version"], config)
        m.window = Ring.from_state(state["window"], config.window)
        m.accepted = Ring.from_state(state["accepted"], config.window)
        if "window_accepted" in state:
            m.window_accepted = Ring.from_state(state["window_accepted"], config.window)
        else:  # a checkpoint from before the correction: its samples count as uncorrected
            m.window_accepted.add(np.zeros(len(m.window.filled())))
        if "residuals" in state:
            m.residuals = Ring.from_state(state["residuals"], config.recent_labels)
            ids = state.get("residual_ids")
            if ids is not None and len(ids) == config.recent_labels == len(state["residuals"]["values"]):
                m.residual_ids = list(ids)
                m.residual_slot = {sid: r for r, sid in enumerate(m.residual_ids) if sid}
            # else: a checkpoint from before the ids, or another size: its residuals are not relabelled
        if "ids" in state and len(state["ids"]) == config.window == len(m.window.values):
            m.known = Ring.from_state(state["known"], config.window)
            m.ids, m.predicted = list(state["ids"]), list(state["predicted"])
            m.slot = {sid: j for j, sid in enumerate(m.ids) if sid}
        # else: a checkpoint from before the labels were joined, or another window size: no label known
        m.seen = int(state["seen"])
        m.reference = {s: list(state["reference"].get(s, [])) for s in SIGNALS}
        m.reference_labels = list(state["reference_labels"])
        m.detectors = {n: Detector.from_state(d) for n, d in state["detectors"].items()}
        return m
