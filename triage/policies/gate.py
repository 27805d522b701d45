"""The acceptable-performance gate: may this model version's predictions feed production?

Evaluated once per model version from its held-out metrics (the fitted routing dict).
A gate that is configured but cannot be checked (no held-out labels) stays closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class GateState:
    open: bool
    why: str


def evaluate_gate(
    routing: Optional[dict[str, Any]], *, min_accuracy: Optional[float], min_coverage: Optional[float]
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
