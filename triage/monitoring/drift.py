"""Drift alarms whose false-alarm rate is set by an expected run time (ERT). Pure.

Every signal is turned into a standard normal score under "no drift", and one two-sided CUSUM
runs on it; the CUSUM's threshold comes from the ERT, so one calibration serves every signal.

- **To a normal score.** A value is ranked against a reference sample of the same signal (a
  version's first outputs: ``triage.monitoring.state``), ties broken at random: for a new
  value exchangeable with the reference the rank is uniform, so ``u = (rank + V) / (n + 1)`` is
  U(0, 1) and ``z = Phi^-1(u)`` is N(0, 1) (the randomized probability integral transform). A
  category (the predicted class) becomes one 0/1 indicator per class, ranked the same way.
- **CUSUM.** ``S+ = max(0, S+ + z - k)``, ``S- = max(0, S- - z - k)``; an alarm when either
  exceeds ``h``, after which both restart at 0. Siegmund's approximation gives the one-sided
  run length on N(0, 1) data, ``ARL(h) = (exp(2kb) - 2kb - 1) / (2k^2)`` with ``b = h + 1.166``;
  two sides halve it. ``h`` is solved so that the false-alarm rate, averaged over the finite
  reference's sampling error, is one per ERT (``threshold``).
- **Many signals.** With ``m`` detectors each is calibrated to ``m x ERT``, so alarms from any of
  them come no more often than once per ERT on in-distribution data (a union bound).

Assumed: in-distribution samples are independent draws (shuffled traffic). Bursts of correlated
samples (one client replaying a batch) shorten the run length; the monitor's measured false-alarm
rate on real traffic is the check (docs/guide/monitoring.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from scipy.optimize import brentq
from scipy.special import ndtri

K_DEFAULT = 0.25  # CUSUM allowance: detects mean shifts of the normal score from about 2k = 0.5 sd fastest


def run_length(h: float, k: float = K_DEFAULT) -> float:
    """Expected samples between false alarms of the two-sided CUSUM on N(0, 1) data."""
    b = h + 1.166
    one_sided = (math.exp(2 * k * b) - 2 * k * b - 1) / (2 * k * k)
    return one_sided / 2


def threshold(ert: float, k: float = K_DEFAULT, reference: Optional[int] = None) -> float:
    """The ``h`` whose two-sided run length is ``ert`` samples; with ``reference`` (its size n),
    whose false-alarm rate averaged over the reference's own sampling error is ``1 / ert``.

    Ranked against n reference values, in-distribution scores keep a mean offset of about
    N(0, 1/n) for the reference's life (measured: sd 0.99/sqrt(n) at n = 1,000), and a CUSUM
    calibrated for mean 0 alarms more often on either side: +10% at n = 5,000, +28% to +97% at
    1,000 (bench/monitoring.py). The rate is averaged over that offset by Gauss-Hermite
    quadrature."""
    if ert <= run_length(0.0, k):
        raise ValueError(f"an expected run time of {ert:g} samples is too short for a CUSUM (k={k})")
    hi = 1.0
    while run_length(hi, k) < ert:
        hi *= 2
    h = float(brentq(lambda h: run_length(h, k) - ert, 0.0, hi, xtol=1e-6))
    if reference is None:
        return h
    nodes, weights = np.polynomial.hermite_e.hermegauss(41)
    mu, w = nodes / math.sqrt(reference), weights / weights.sum()
    def excess(h: float) -> float:
        return float(w @ false_alarm_rate(h, k, mu)) - 1 / ert

    while excess(hi) > 0:
        hi *= 2
    return float(brentq(excess, h, hi, xtol=1e-6))


def false_alarm_rate(h: float, k: float, mu: np.ndarray) -> np.ndarray:
    """False alarms per sample of the two-sided CUSUM on N(mu, 1) scores (Siegmund, per side)."""
    b = h + 1.166

    def arl(d: np.ndarray) -> np.ndarray:
        return (np.exp(-2 * d * b) + 2 * d * b - 1) / (2 * d * d)
    with np.errstate(over="ignore"):  # exp overflows to inf far out in the quadrature: a rate of 0, as it should
        return 1 / arl(mu - k) + 1 / arl(-mu - k)


def cusum(z: np.ndarray, pos: float, neg: float, k: float, h: float) -> tuple[float, float, int, float]:
    """Run the two-sided CUSUM over ``z`` from state (pos, neg): (pos, neg, alarms, peak statistic).

    Vectorised Lindley recursion: ``S_t = X_t - min(-S_0, min_{j<=t} X_j)`` with ``X`` the running
    sum of the increments; after an alarm both sides restart at 0 from the next sample."""
    alarms, peak, start = 0, max(pos, neg), 0
    while start < len(z):
        seg = z[start:]
        up = _lindley(seg - k, pos)
        down = _lindley(-seg - k, neg)
        stat = np.maximum(up, down)
        over = np.flatnonzero(stat > h)
        if len(over) == 0:
            return float(up[-1]), float(down[-1]), alarms, max(peak, float(stat.max()))
        at = int(over[0])
        alarms += 1
        peak = max(peak, float(stat[at]))
        pos, neg, start = 0.0, 0.0, start + at + 1
    return pos, neg, alarms, peak


def _lindley(x: np.ndarray, s0: float) -> np.ndarray:
    run = np.cumsum(x)
    return run - np.minimum(-s0, np.minimum.accumulate(run))


@dataclass
class Detector:
    """One signal: a CUSUM on the normal scores of its values against a fixed reference sample."""

    name: str
    h: float
    reference: list[float]
    k: float = K_DEFAULT
    pos: float = 0.0
    neg: float = 0.0
    alarms: int = 0
    seen: int = 0  # samples monitored
    last_alarm_at: Optional[int] = None  # ``seen`` at the latest alarm
    statistic: float = 0.0
    alarm_statistic: float = 0.0  # the statistic when the latest alarm was raised
    _sorted: Optional[np.ndarray] = field(default=None, repr=False)

    def update(self, values: np.ndarray, rng: np.random.Generator) -> int:
        """Feed values (in arrival order); returns the alarms they raised."""
        values = np.asarray(values, dtype=np.float64)
        if len(values) == 0:
            return 0
        self.pos, self.neg, raised, peak = cusum(self._scores(values, rng), self.pos, self.neg, self.k, self.h)
        if raised:
            self.last_alarm_at = self.seen + len(values)
            self.alarm_statistic = peak
        self.seen += len(values)
        self.alarms += raised
        self.statistic = max(self.pos, self.neg)
        return raised

    def _scores(self, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self._sorted is None:
            self._sorted = np.sort(np.asarray(self.reference, dtype=np.float64))
        ref = self._sorted
        below = np.searchsorted(ref, values, side="left")
        ties = np.searchsorted(ref, values, side="right") - below
        u = (below + rng.random(len(values)) * (ties + 1)) / (len(ref) + 1)
        return ndtri(np.clip(u, 1e-12, 1 - 1e-12))

    def state(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("name", "h", "reference", "k", "pos", "neg", "alarms", "seen",
                                              "last_alarm_at", "statistic", "alarm_statistic")}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Detector":
        return cls(**state)


def detectors(references: Mapping[str, Sequence[float]], ert: float, k: float = K_DEFAULT) -> dict[str, Detector]:
    """One detector per signal, from its reference sample, each calibrated to ``m x ert`` so
    that the set raises a false alarm at most once per ``ert`` (a category is passed as its
    0/1 indicator: ranks with random ties make it uniform too)."""
    h = threshold(ert * len(references), k, min(len(r) for r in references.values()))
    return {name: Detector(name, h, list(ref), k) for name, ref in references.items()}
