"""Every ``triage_`` metric named in the alert rules or the dashboard is exported by a process
the stack ships (tests/deploy/shipped.py: scorer, retrain job, audit consumer, monitor, Label
Studio bridge), each running once and scraped. A rule or panel naming a metric nobody exports fails here."""

from __future__ import annotations

import uuid

import pytest

from tests.deploy.conftest import DEPLOY, PROM_DIR
from tests.deploy.metric_names import LABEL_STUDIO_BRIDGE_METRICS, contract_names, dashboard_exprs, referenced, rule_exprs
from tests.deploy.shipped import BY_COMMAND
from tests.helpers import RetrainProcess, TriageProcess, exported
from triage.examples import example_paths
from triage.runtime.broker import EmbeddedBroker, free_port
from triage.settings import Settings
from triage.transport import ensure_topics

BRIDGE_PREFIX = "triage_labelstudio_"


def _referenced() -> set[str]:
    return referenced(rule_exprs(PROM_DIR / "alerts.yml") + dashboard_exprs(DEPLOY / "grafana" / "dashboards" / "triage.json"))


def test_bridge_metrics_in_rules_and_dashboard_are_in_its_contract() -> None:
    """Static (no processes): the dashboard and rules use only bridge names from its contract."""
    bridge_names = {n for n in _referenced() if n.startswith(BRIDGE_PREFIX)}
    assert bridge_names, "the dashboard has no Label Studio bridge panels"
    unknown = bridge_names - contract_names(LABEL_STUDIO_BRIDGE_METRICS)
    assert not unknown, f"not in the bridge's metric contract: {sorted(unknown)}"


@pytest.fixture(scope="module")
def exported_by(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Shipped command -> the names its running process exports: the scorer, the retrain job, the
    audit consumer, and the Label Studio bridge against an unreachable Label Studio (it must stay
    up and serve /metrics; readiness then says Label Studio is unreachable). Started once."""
    tmp = tmp_path_factory.mktemp("exported")
    model, ref = example_paths()
    tag = uuid.uuid4().hex[:8]
    s = Settings(bootstrap_servers=broker.bootstrap_servers, session_timeout_ms=6000, group_id=f"g-{tag}",
                 samples_topic=f"samples-{tag}", predictions_topic=f"predictions-{tag}", review_topic=f"review-{tag}",
                 labels_topic=f"labels-{tag}", models_topic=f"models-{tag}", dlq_topic=f"dlq-{tag}",
                 model=model, reference=ref, metrics_port=0, metrics_host="127.0.0.1")
    ensure_topics(s, s.topics.all())
    nowhere = f"http://127.0.0.1:{free_port()}"
    scorer = TriageProcess(s, ["serve"], tmp, "scorer")
    retrain = RetrainProcess(s, ref, tmp)  # trains tmp/registry first
    procs = {
        "serve": scorer, "retrain": retrain, "audit": TriageProcess(s, ["audit"], tmp, "audit"),
        "monitor": TriageProcess(s, ["monitor", "--monitor-state-dir", str(tmp / "monitor")], tmp, "monitor"),
        "label-studio": TriageProcess(s, ["label-studio", "--url", nowhere, "--project-title", "metrics test",
                                          "--registry", str(tmp / "registry"), "--webhook-port", "0",
                                          "--reconcile-s", "30"], tmp, "label-studio-bridge",
                                      extra_env={"TRIAGE_LABEL_STUDIO_API_KEY": "test-token",
                                                 "TRIAGE_LABEL_STUDIO_WEBHOOK_SECRET": "test-secret"}),
    }
    try:
        return {command: exported(proc.metrics()) for command, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.stop()


def test_the_shipped_processes_are_the_ones_scraped(exported_by: dict[str, set[str]]) -> None:
    assert set(exported_by) == set(BY_COMMAND)


def test_every_metric_in_rules_and_dashboard_is_exported(exported_by: dict[str, set[str]]) -> None:
    wanted = _referenced()
    assert len(wanted) > 30  # the extraction found the queries
    missing = wanted - set().union(*exported_by.values())
    assert not missing, f"rules/dashboard query metrics no shipped process exports: {sorted(missing)}"


def test_audit_exports_the_accepted_accuracy_with_its_interval(exported_by: dict[str, set[str]]) -> None:
    """`triage audit` is the exporter of the accepted-accuracy estimate the alerts watch."""
    for name in ("triage_accepted_accuracy_estimate", "triage_accepted_accuracy_lower",
                 "triage_accepted_accuracy_upper", "triage_accepted_accuracy_samples", "triage_risk_alpha",
                 "triage_audit_records_total", "triage_records_consumed_total"):
        assert name in exported_by["audit"], name


def test_bridge_exports_its_contract(exported_by: dict[str, set[str]]) -> None:
    missing = contract_names(LABEL_STUDIO_BRIDGE_METRICS) - exported_by["label-studio"]
    assert not missing, f"the bridge does not export {sorted(missing)}"
