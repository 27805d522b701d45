"""The rollback race: a model offered to the scorer must not be swapped in once a rollback has
made another version CURRENT (the watcher and the swap both check the registry)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from consumers.model_watcher import ModelWatcher
from consumers.scorer import Scorer
from tests.unit.test_isolation import FakeConsumer, FakeProducer
from triage.lifecycle.registry import Registry
from triage.lifecycle.loading import serving_model_from_registry
from triage.settings import Settings


@pytest.fixture
def two_versions(tmp_path: Path, registry_template: Path) -> Registry:
    """v1 (the session's template) and v2, a copy of it registered as a second version."""
    reg = Registry(shutil.copytree(registry_template, tmp_path / "reg"))
    manifest = {k: v for k, v in reg.manifest("v1").items() if k not in ("version", "sha256", "path", "status")}
    reg.add_bundle(reg.model_path("v1").read_bytes(), manifest, reg.canary("v1"))
    return reg


def _scorer_and_watcher(reg: Registry) -> tuple[Scorer, ModelWatcher]:
    s = Settings(registry=reg.root)
    scorer = Scorer(s, serving_model_from_registry(reg, "v1", s.serving),
                    consumer=FakeConsumer([]), producer=FakeProducer())  # type: ignore[arg-type]
    watcher = ModelWatcher(s, reg, scorer)
    scorer.still_current = watcher._still_current  # what start() wires, without the Kafka reader
    return scorer, watcher


def test_offer_overtaken_by_a_rollback_is_not_swapped_in(two_versions: Registry) -> None:
    reg = two_versions
    scorer, watcher = _scorer_and_watcher(reg)
    reg.promote("v2")
    assert watcher.sync() is not None and scorer.pending_version == "v2"
    reg.rollback()  # CURRENT is v1 again before the scorer reached its next batch
    scorer._swap_if_pending()
    assert scorer.model.version == "v1" and scorer.pending_version is None


def test_sync_withdraws_an_offer_when_current_returns_to_the_running_version(two_versions: Registry) -> None:
    reg = two_versions
    scorer, watcher = _scorer_and_watcher(reg)
    reg.promote("v2")
    watcher.sync()
    reg.rollback()
    assert watcher.sync() is None
    assert scorer.pending_version is None and scorer.model.version == "v1"


def test_offer_still_current_is_swapped_in(two_versions: Registry) -> None:
    reg = two_versions
    scorer, watcher = _scorer_and_watcher(reg)
    reg.promote("v2")
    watcher.sync()
    watcher.sync()  # already offered: not loaded twice
    scorer._swap_if_pending()
    assert scorer.model.version == "v2"


def test_a_model_the_policy_cannot_take_is_refused_not_fatal(two_versions: Registry) -> None:
    reg = two_versions
    scorer, watcher = _scorer_and_watcher(reg)
    real = scorer.policy.on_model

    def picky(model: object) -> None:
        if getattr(model, "version", "") == "v2":
            raise IndexError("per-class arrays sized for another model")
        real(model)  # type: ignore[arg-type]

    scorer.policy.on_model = picky  # type: ignore[method-assign]
    reg.promote("v2")
    watcher.sync()
    scorer._swap_if_pending()
    assert scorer.model.version == "v1"
    assert scorer.metrics.swaps.labels(result="refused")._value.get() == 1
