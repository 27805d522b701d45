"""The acceptable-performance gate: may this model version's predictions feed production?

Evaluated once per model version from its held-out metrics (the fitted routing dict).
A gate that is configured but cannot be checked (no held-out labels) stays closed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from triage.policies.base import Routing
from triage.scoring.routing import CONFIDENT, GATE, HELD_GATE
from triage.settings import PolicySettings

log = logging.getLogger("triage.policy")


@dataclass(frozen=True)
class GateState:
    open: bool
    why: str


def evaluate_gate(
    routing: Optional[Routing], *, min_accuracy: Optional[float], min_coverage: Optional[float]
) -> GateState:
    if min_accuracy is None and min_coverage is None:
        return GateState(True, "no gate configured")
    holdout = (routing or {}).get("holdout") or {}
    risk = (routing or {}).get("risk") or {}
    problems: list[str] = []
    passed: list[str] = []
    if min_accuracy is not None:
        acc = holdout.get("accuracy")
        if acc is None:
            problems.append("no held-out accuracy for this version (serve with --reference holding y)")
        elif acc < min_accuracy:
            problems.append(f"held-out accuracy {acc:.4f} < gate_min_accuracy {min_accuracy}")
        else:
            passed.append(f"held-out accuracy {acc:.4f} >= {min_accuracy}")
    if min_coverage is not None:
        cov = risk.get("coverage")
        if cov is None:
            problems.append("no certified risk coverage for this version (needs held-out labels)")
        elif cov < min_coverage:
            problems.append(
                f"risk bound alpha={risk.get('alpha')} holds only at coverage {cov:.4f} < gate_min_coverage {min_coverage}"
            )
        else:
            passed.append(f"risk bound alpha={risk.get('alpha')} holds at coverage {cov:.4f} >= {min_coverage}")
    if problems:
        return GateState(False, "; ".join(problems))
    return GateState(True, "; ".join(passed))


def _to_review(reason: np.ndarray, hold: np.ndarray, accepted: np.ndarray) -> None:
    reason[accepted] = GATE


def _provisional(reason: np.ndarray, hold: np.ndarray, accepted: np.ndarray) -> None:
    hold[accepted] = HELD_GATE


# What a closed gate does to would-be-accepted rows, by gate_mode.
CLOSED: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], None]] = {
    "review": _to_review,
    "provisional": _provisional,
}


class Gate:
    """The gate as the policy stack runs it: re-evaluated per model version, logged when it
    opens or closes, applied to every batch."""

    def __init__(self, policy: PolicySettings) -> None:
        self.min_accuracy = policy.gate_min_accuracy
        self.min_coverage = policy.gate_min_coverage
        self.mode = policy.gate_mode
        self._close = CLOSED[policy.gate_mode]
        self.state = GateState(True, "")

    @property
    def open(self) -> bool:
        return self.state.open

    def on_routing(self, routing: Routing, version: str) -> None:
        old = self.state
        self.state = evaluate_gate(routing, min_accuracy=self.min_accuracy, min_coverage=self.min_coverage)
        if self.state.open != old.open or not old.why:
            if self.state.open:
                log.info("gate OPEN for model %s: %s", version, self.state.why)
            else:
                log.warning("gate CLOSED for model %s: %s -> nothing auto-accepted (%s)", version, self.state.why, self.mode)

    def apply(self, reason: np.ndarray, hold: np.ndarray) -> None:
        """While closed, nothing is auto-accepted (review with reason gate, or provisional)."""
        if not self.state.open:
            self._close(reason, hold, reason == CONFIDENT)
