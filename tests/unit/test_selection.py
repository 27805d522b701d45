from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from triage.cli import main
from triage.errors import ConfigError
from triage.lifecycle.selection import STRATEGIES, coverage_radius, select


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    return load_digits(return_X_y=True)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_strategies_are_deterministic_unique_and_sized(digits, strategy: str) -> None:  # type: ignore[no-untyped-def]
    X, y = digits
    a = select(X, 40, strategy, seed=3, y=y)
    b = select(X, 40, strategy, seed=3, y=y)
    assert (a == b).all() and len(set(a.tolist())) == 40


def test_kcenter_covers_better_than_random(digits) -> None:  # type: ignore[no-untyped-def]
    X, _ = digits
    kc = coverage_radius(X, select(X, 50, "kcenter"))
    rnd = np.mean([coverage_radius(X, select(X, 50, "random", seed=s)) for s in range(5)])
    assert kc < rnd


def test_stratified_kmeans_hits_every_class(digits) -> None:  # type: ignore[no-untyped-def]
    X, y = digits
    chosen = select(X, 20, "stratified-kmeans", y=y)
    assert set(y[chosen].tolist()) == set(range(10))


def test_budget_errors_are_clear(digits) -> None:  # type: ignore[no-untyped-def]
    X, _ = digits
    with pytest.raises(ConfigError, match="between 1 and the pool size"):
        select(X, len(X) + 1, "kcenter")
    with pytest.raises(ConfigError, match="unknown strategy"):
        select(X, 5, "magic")


def test_select_cli_writes_indices_and_subset(tmp_path: Path, digits, capsys) -> None:  # type: ignore[no-untyped-def]
    X, y = digits
    pool = tmp_path / "pool.npz"
    np.savez(pool, X=X, y=y)
    out, subset = tmp_path / "ids.txt", tmp_path / "subset.npz"
    assert main(["select", "--data", str(pool), "--budget", "25", "--strategy", "kcenter", "--out", str(out),
                 "--subset-out", str(subset)]) == 0, capsys.readouterr().err
    ids = [int(line) for line in out.read_text().split()]
    with np.load(subset) as d:
        assert len(ids) == 25 and (d["index"] == ids).all() and (d["X"] == X[ids]).all()
    capsys.readouterr()
    assert main(["select", "--data", str(pool), "--budget", "0"]) == 2
    assert "--budget must be between 1" in capsys.readouterr().err
