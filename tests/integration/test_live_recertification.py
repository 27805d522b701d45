"""Live re-certification end to end on the embedded broker: two risk scorers with an audit slice,
audit labels whose accuracy dropped, and `triage audit`'s consumer without and with the control,
then restarted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
from prometheus_client import CollectorRegistry

from consumers.audit import AuditConsumer
from tests.fixtures import decoded, produce, read_all, registry_v1
from tests.helpers import wait_until
from tests.integration.test_hotswap import start_inprocess, stop_inprocess
from triage.contracts import encode
from triage.metrics import AuditMetrics
from triage.policies.risk import NEVER
from triage.settings import Settings

ALPHA = 0.05


def _audit(s: Settings, **policy: Any) -> AuditConsumer:
    """One run of `triage audit` until it has read everything (a fresh process each time)."""
    settings = s.replace(**policy)
    consumer = AuditConsumer(settings, metrics=AuditMetrics(CollectorRegistry()))
    consumer.run(idle_exit_s=3.0)
    return consumer


def _gauge(consumer: AuditConsumer, name: str, **labels: str) -> float:
    value = consumer.metrics.registry.get_sample_value(name, labels)
    assert value is not None, name
    return value


def _stream(s: Settings, X: np.ndarray, prefix: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Score X[700:] under ids ``prefix<i>``; returns (predictions, review requests)."""
    rows = [(f"{prefix}{i}".encode(), encode({"id": f"{prefix}{i}", "features": X[i].tolist()}))
            for i in range(700, len(X))]
    produce(s, s.topics.samples_topic, rows)

    def ours(out: list[dict[str, Any]], topic: str) -> list[dict[str, Any]]:
        return [d for d in decoded(out, topic) if d["id"].startswith(prefix)]

    def every_sample_routed(out: list[dict[str, Any]]) -> bool:
        review = [d for d in ours(out, s.topics.review_topic) if d["reason"] != "audit"]
        return len(ours(out, s.topics.predictions_topic)) + len(review) >= len(rows)

    out = read_all(s, [s.topics.predictions_topic, s.topics.review_topic], expect=len(rows),
                   stop_when=every_sample_routed)
    return ours(out, s.topics.predictions_topic), ours(out, s.topics.review_topic)


def test_a_drop_on_live_audit_labels_raises_the_bound_and_tightens_every_scorer(
    settings_factory: Callable[..., Settings], digits: tuple[np.ndarray, np.ndarray], tmp_path: Path,
) -> None:
    X, y = digits
    # cross-fit: strict certification holds back too few of 700 rows to accept anything at
    # alpha 0.05, and audits are drawn from accepted traffic only.
    reg = registry_v1(tmp_path / "registry", X[:700], y[:700], certification="cross-fit")
    base = float(reg.manifest("v1")["routing"]["risk"]["threshold"])
    s = settings_factory(registry=reg.root, policy="risk", risk_alpha=ALPHA, audit_rate=0.5, registry_poll_s=0.5)
    replicas = [start_inprocess(s, reg) for _ in range(2)]
    try:
        predictions, review = _stream(s, X, "a")
        audits = [d for d in review if d["reason"] == "audit"]
        assert len(audits) > 300, len(audits)
        # The accuracy drop: on the less sure half of the audited traffic, a third of the labels
        # disagree with the model (today's traffic is no longer the certification rows').
        median = float(np.median([1.0 - d["scores"]["margin"] for d in audits]))
        labels = []
        for k, d in enumerate(audits):
            truth = str(int(y[int(d["id"][1:])]))
            wrong = 1.0 - d["scores"]["margin"] > median and k % 3 == 0
            labels.append((d["id"].encode(), encode({"id": d["id"], "label": str((int(truth) + 1) % 10) if wrong else truth})))
        produce(s, s.topics.labels_topic, labels)

        watching = _audit(s)  # the option off: it measures and alerts, moves nothing
        bound = _gauge(watching, "triage_risk_live_upper_bound", version="v1")
        n = _gauge(watching, "triage_risk_live_samples", version="v1")
        required = _gauge(watching, "triage_risk_live_required_samples")
        assert bound > _gauge(watching, "triage_risk_alpha") and n >= required  # TriageRiskLiveBoundAboveAlpha's terms
        assert n == len(audits) and reg.live_risk("v1") is None

        control = _audit(s, risk_live_control=True)
        doc = reg.live_risk("v1")
        assert doc is not None and len(doc["history"]) == 1 and doc["threshold"] < base
        assert _gauge(control, "triage_risk_live_actions_total", action="tighten") == 1
        assert _gauge(control, "triage_risk_live_upper_bound", version="v1") <= ALPHA or doc["threshold"] == NEVER
        for scorer, _, _ in replicas:  # every replica, through its watcher
            wait_until(lambda: scorer.live_risk == ("v1", doc), "the replica to apply the live threshold")
            assert scorer.policy.snapshot().risk_threshold == doc["threshold"]

        after, _ = _stream(s, X, "b")  # the same traffic again
        assert len(after) < len(predictions)
        assert all(1.0 - p["scores"]["margin"] <= doc["threshold"] for p in after)
        print(f"live bound {bound:.3f} on {n:.0f} audit samples; threshold {base:.4g} -> {doc['threshold']:.4g}; "
              f"auto-accepted {len(predictions)} -> {len(after)} of {len(X) - 700}")

        restarted = _audit(s, risk_live_control=True)  # restart: replays everything, b's audits unlabelled
        assert reg.live_risk("v1") == doc
        assert _gauge(restarted, "triage_risk_live_actions_total", action="tighten") == 0
        assert _gauge(restarted, "triage_risk_live_samples", version="v1") == \
            _gauge(control, "triage_risk_live_samples", version="v1")
        assert _gauge(restarted, "triage_risk_live_threshold", version="v1") == doc["threshold"]
    finally:
        for replica in replicas:
            stop_inprocess(*replica)
    assert json.loads((reg.bundle_dir("v1") / "live_risk.json").read_text())["history"] == doc["history"]
