"""Every ``triage_`` metric named in the alert rules or the dashboard is exported by a process
the stack ships (tests/deploy/shipped.py: scorer, retrain job, audit consumer, Label Studio
bridge): running ones are scraped, and the bridge's contract stands in for it until it is merged.
A rule or panel naming a metric nobody exports fails here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from tests.deploy.conftest import DEPLOY, PROM_DIR
from tests.deploy.metric_names import (LABEL_STUDIO_BRIDGE_METRICS, contract_names, dashboard_exprs, exported,
                                       referenced, rule_exprs)
from tests.deploy.processes import RetrainProcess, TriageProcess, has_command, wait_until
from tests.deploy.shipped import BY_COMMAND, COMMANDS_NOT_YET_MERGED
from tests.fixtures import REPO, ScorerProcess, _env
from triage.runtime.broker import free_port
from triage.settings import Settings

# Metrics the rules and dashboard use whose producer is not in this build yet. Shrink it as
# features land: the test below fails when a listed name is exported, so entries cannot rot.
NOT_YET_EXPORTED: set[str] = set()

BRIDGE_PREFIX = "triage_labelstudio_"


def _referenced() -> set[str]:
    return referenced(rule_exprs(PROM_DIR / "alerts.yml") + dashboard_exprs(DEPLOY / "grafana" / "dashboards" / "triage.json"))


def test_the_counted_processes_are_the_shipped_ones() -> None:
    """The exports below come from exactly the commands the stack runs (no helper process
    whose metrics the stack would never scrape)."""
    assert set(BY_COMMAND) == {"serve", "retrain", "audit", "label-studio"}


def test_bridge_metrics_in_rules_and_dashboard_are_in_its_contract() -> None:
    """Static (no processes): the dashboard and rules use only bridge names from its contract."""
    bridge_names = {n for n in _referenced() if n.startswith(BRIDGE_PREFIX)}
    assert bridge_names, "the dashboard has no Label Studio bridge panels"
    unknown = bridge_names - contract_names(LABEL_STUDIO_BRIDGE_METRICS)
    assert not unknown, f"not in the bridge's metric contract: {sorted(unknown)}"


def _bridge_metrics(settings: Settings, registry: Path, tmp_path: Path) -> str:
    """A running `triage label-studio` against an unreachable Label Studio: it must stay up and
    serve /metrics (readiness then says Label Studio is unreachable)."""
    nowhere = f"http://127.0.0.1:{free_port()}"
    bridge = TriageProcess(settings, ["label-studio", "--url", nowhere, "--project-title", "metrics test",
                                      "--registry", str(registry), "--webhook-port", "0", "--reconcile-s", "30"],
                           tmp_path, "label-studio-bridge",
                           extra_env={"TRIAGE_LABEL_STUDIO_API_KEY": "test-token",
                                      "TRIAGE_LABEL_STUDIO_WEBHOOK_SECRET": "test-secret"})
    try:
        return bridge.metrics()
    finally:
        bridge.stop()


@pytest.fixture
def exported_names(settings_factory: Callable[..., Settings], scorer_process: Callable[..., ScorerProcess],
                   example_model: tuple[Path, Path], tmp_path: Path) -> set[str]:
    """The union of what every shipped triage process exports."""
    model, ref = example_model
    s = settings_factory(model=model, reference=ref)
    scorer = scorer_process(s)
    dead = lambda: None if scorer.proc.poll() is None else scorer.log()  # noqa: E731
    texts = [wait_until(scorer.metrics, "scorer /metrics", dead)]
    retrain = RetrainProcess(s, ref, tmp_path)  # trains tmp_path/registry first
    try:
        texts.append(retrain.metrics())
    finally:
        retrain.stop()
    audit = TriageProcess(s, ["audit"], tmp_path, "audit")
    try:
        texts.append(audit.metrics())
    finally:
        audit.stop()
    names: set[str] = set()
    if "label-studio" in COMMANDS_NOT_YET_MERGED:
        names |= contract_names(LABEL_STUDIO_BRIDGE_METRICS)
    else:
        texts.append(_bridge_metrics(s, tmp_path / "registry", tmp_path))
    for text in texts:
        names |= exported(text)
    return names


def test_every_metric_in_rules_and_dashboard_is_exported(exported_names: set[str]) -> None:
    wanted = _referenced()
    assert len(wanted) > 30  # the extraction found the queries
    missing = wanted - exported_names - NOT_YET_EXPORTED
    assert not missing, f"rules/dashboard query metrics no shipped process exports: {sorted(missing)}"


def test_audit_exports_the_accepted_accuracy_with_its_interval(
    settings_factory: Callable[..., Settings], tmp_path: Path,
) -> None:
    """`triage audit` is the exporter of the accepted-accuracy estimate the alerts watch."""
    audit = TriageProcess(settings_factory(), ["audit"], tmp_path, "audit")
    try:
        names = exported(audit.metrics())
    finally:
        audit.stop()
    for name in ("triage_accepted_accuracy_estimate", "triage_accepted_accuracy_lower",
                 "triage_accepted_accuracy_upper", "triage_accepted_accuracy_samples", "triage_risk_alpha",
                 "triage_audit_records_total", "triage_records_consumed_total"):
        assert name in names, name


def test_bridge_exports_its_contract(settings_factory: Callable[..., Settings],
                                     example_model: tuple[Path, Path], tmp_path: Path) -> None:
    if "label-studio" in COMMANDS_NOT_YET_MERGED:
        assert not has_command("label-studio"), (
            "`triage label-studio` exists now: remove it from COMMANDS_NOT_YET_MERGED in tests/deploy/shipped.py")
        return  # nothing to run yet; its contract stands in for it in exported_names
    s = settings_factory()
    registry = tmp_path / "registry"
    train = subprocess.run([sys.executable, "-m", "triage", "train", "--data", str(example_model[1]),
                            "--registry", str(registry)], env={**os.environ, **_env(s)}, cwd=REPO,
                           capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stdout + train.stderr
    names = exported(_bridge_metrics(s, registry, tmp_path))
    missing = contract_names(LABEL_STUDIO_BRIDGE_METRICS) - names
    assert not missing, f"the bridge does not export {sorted(missing)}"


def test_not_yet_exported_list_has_no_stale_entries(exported_names: set[str]) -> None:
    landed = NOT_YET_EXPORTED & exported_names
    assert not landed, f"now exported, remove from NOT_YET_EXPORTED: {sorted(landed)}"
    unused = NOT_YET_EXPORTED - _referenced()
    assert not unused, f"no rule or panel uses these, remove from NOT_YET_EXPORTED: {sorted(unused)}"
