"""Every metric named in the alert rules and the dashboard is exported by a running scorer
(and by the retrain job, when this build has one)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from tests.deploy.conftest import DEPLOY, PROM_DIR
from tests.deploy.metric_names import dashboard_exprs, exported, referenced, rule_exprs
from tests.deploy.processes import RetrainProcess, has_command, wait_until
from tests.fixtures import ScorerProcess
from triage.settings import Settings

pytestmark = pytest.mark.integration

# Metrics the rules and dashboard use whose producer is not in this build yet. Shrink it as
# features land: the test below fails when a listed name is exported, so entries cannot rot.
NOT_YET_EXPORTED = {
    # exported by the separate `triage audit` process, per model version, once audit labels
    # have arrived (a labelled gauge has no series before its first label value)
    "triage_accepted_accuracy_estimate",
    "triage_accepted_accuracy_lower",
    "triage_accepted_accuracy_upper",
}


def _referenced() -> set[str]:
    return referenced(rule_exprs(PROM_DIR / "alerts.yml") + dashboard_exprs(DEPLOY / "grafana" / "dashboards" / "triage.json"))


@pytest.fixture
def exported_names(settings_factory: Callable[..., Settings], scorer_process: Callable[..., ScorerProcess],
                   example_model: tuple[Path, Path], tmp_path: Path) -> set[str]:
    """The union of what every available triage process exports."""
    model, ref = example_model
    s = settings_factory(model=model, reference=ref)
    scorer = scorer_process(s)
    dead = lambda: None if scorer.proc.poll() is None else scorer.log()  # noqa: E731
    texts = [wait_until(scorer.metrics, "scorer /metrics", dead)]
    if has_command("retrain"):
        retrain = RetrainProcess(s, ref, tmp_path)
        try:
            texts.append(retrain.metrics())
        finally:
            retrain.stop()
    names: set[str] = set()
    for text in texts:
        names |= exported(text)
    return names


def test_every_metric_in_rules_and_dashboard_is_exported(exported_names: set[str]) -> None:
    wanted = _referenced()
    assert len(wanted) > 30  # the extraction found the queries
    missing = wanted - exported_names - NOT_YET_EXPORTED
    assert not missing, f"rules/dashboard query metrics no process exports: {sorted(missing)}"


def test_not_yet_exported_list_has_no_stale_entries(exported_names: set[str]) -> None:
    landed = NOT_YET_EXPORTED & exported_names
    assert not landed, f"now exported, remove from NOT_YET_EXPORTED: {sorted(landed)}"
    unused = NOT_YET_EXPORTED - _referenced()
    assert not unused, f"no rule or panel uses these, remove from NOT_YET_EXPORTED: {sorted(unused)}"
