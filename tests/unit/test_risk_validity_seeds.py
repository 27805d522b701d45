"""The risk certificate of what ships, over 200 seeds (slow tier: tests/conftest.py BY_PATH).

Each seed is a fresh draw of labelled and test rows; ``tests/riskcheck.py`` runs the shipped
path (`triage train` defaults but a half holdout, served and routed as the scorer does) and judges the served
version on 20,000 fresh rows. The certificate promises a violation rate (accepted error > alpha)
of at most delta; each assertion allows for binomial noise by asking only that the 95%
Clopper-Pearson interval of the rate reaches down to delta. Figures: docs/guide/risk.md.

    .venv/bin/python -m pytest -m slow -n 0 -s tests/unit/test_risk_validity_seeds.py
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from tests import riskcheck

SEEDS = 200


def _logged(seed: int, result: Any) -> Any:
    """One line per seed (``-s``), so a run cut short still leaves its figures."""
    print(f"seed {seed}: {result}", flush=True)
    return result


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return riskcheck.pool()


def test_strict_certificate_holds_over_200_seeds(data: tuple[np.ndarray, np.ndarray]) -> None:
    t0 = time.perf_counter()
    runs = [_logged(seed, riskcheck.train_run(seed, data, "strict", wrong_too=True)) for seed in range(SEEDS)]
    strict = riskcheck.violation_rate([r["shipped"] for r in runs])
    wrong = riskcheck.violation_rate([r["in_sample"] for r in runs])
    print("\n" + riskcheck.describe("strict (default)", strict, time.perf_counter() - t0))
    print(riskcheck.describe("in-sample (wrong on purpose)", wrong))
    assert riskcheck.holds(strict)
    assert riskcheck.breaks(wrong)
    assert strict["mean_coverage"] > 0.2


def test_cross_fit_violation_rate_is_measured(data: tuple[np.ndarray, np.ndarray]) -> None:
    """Cross-fit is an approximation: its rate is reported (docs), not promised."""
    t0 = time.perf_counter()
    rate = riskcheck.violation_rate([_logged(seed, riskcheck.train_run(seed, data, "cross-fit"))["shipped"]
                                     for seed in range(SEEDS)])
    print("\n" + riskcheck.describe("cross-fit (opt-in)", rate, time.perf_counter() - t0))
    assert rate["runs"] == SEEDS and rate["mean_coverage"] > 0.2


def test_retrains_with_the_gate_keep_the_certificate_at_every_version(data: tuple[np.ndarray, np.ndarray]) -> None:
    t0 = time.perf_counter()
    steps = [_logged(seed, riskcheck.retrain_run(seed, data)) for seed in range(SEEDS)]
    print(f"\nretrain with gate: {SEEDS} seeds x {riskcheck.VERSIONS} retrains, {time.perf_counter() - t0:.0f} s")
    rates = []
    for k in range(riskcheck.VERSIONS + 1):
        rate = riskcheck.violation_rate([s[k]["judged"] for s in steps])
        promoted = sum(s[k]["version"] != s[max(k - 1, 0)]["version"] for s in steps)
        print(riskcheck.describe(f"after retrain {k} ({promoted} promotions)", rate))
        rates.append(rate)
    assert all(riskcheck.holds(rate) for rate in rates)
