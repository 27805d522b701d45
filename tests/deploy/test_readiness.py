"""/healthz and /readyz of a running scorer: ready once it serves, unready (503, naming the
failed check) while its broker is unreachable, alive throughout; and of the audit process while
its loop is blocked."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Callable, Optional

from tests.deploy.processes import ready_state
from tests.fixtures import produce
from tests.helpers import ScorerProcess, TriageProcess, http_get, wait_until
from tests.reliability.faulty_cli import PROGRAM as FAULTY
from triage.runtime.broker import EmbeddedBroker
from triage.settings import Settings
from triage.transport import ensure_topics


def test_readyz_turns_503_when_the_broker_goes_away(
    scorer_process: Callable[..., ScorerProcess], example_model: tuple[Path, Path], tmp_path: Path,
) -> None:
    model, ref = example_model
    # A dedicated broker this test may stop (memory-only: losing it is fine here).
    broker = EmbeddedBroker(log_file=tmp_path / "tansu.log").start()
    try:
        tag = uuid.uuid4().hex[:8]
        s = Settings(bootstrap_servers=broker.bootstrap_servers, kafka_client="kafka-python",
                     session_timeout_ms=6000, group_id=f"g-{tag}", samples_topic=f"samples-{tag}",
                     predictions_topic=f"predictions-{tag}", review_topic=f"review-{tag}",
                     labels_topic=f"labels-{tag}", models_topic=f"models-{tag}", dlq_topic=f"dlq-{tag}",
                     metrics_host="127.0.0.1", model=model, reference=ref)
        ensure_topics(s, s.topics.all())
        scorer = scorer_process(s)

        def ready() -> Optional[dict[str, object]]:
            code, doc = ready_state(scorer.metrics_port)
            return doc if code == 200 else None

        doc = wait_until(ready, "/readyz to turn 200", alive=scorer.dead)
        assert doc == {"ready": True, "checks": {"model_loaded": True, "partitions_assigned": True,
                                                 "broker_reachable": True, "loop_responsive": True,
                                                 "not_blocked": True}}
        assert scorer.metric("triage_ready") == 1

        broker.stop()

        def unready() -> Optional[dict[str, object]]:
            code, doc = ready_state(scorer.metrics_port)
            return doc if code == 503 else None

        doc = wait_until(unready, "/readyz to turn 503 after the broker stopped", alive=scorer.dead)
        assert doc["ready"] is False
        checks = doc["checks"]
        # the broker check fails, the loop is stuck inside the client waiting for it, or it holds a
        # batch it cannot deliver (blocked)
        assert False in (checks["broker_reachable"], checks["loop_responsive"], checks["not_blocked"])  # type: ignore[index]
        assert doc["checks"]["model_loaded"] is True  # type: ignore[index]
        assert http_get(scorer.url + "/healthz") == (200, "ok\n"), "the process is alive even when not ready"
        assert scorer.metric("triage_ready") == 0
    finally:
        broker.stop()


def test_audit_readyz_says_blocked_while_its_handler_meets_a_fault_of_the_world(
    settings_factory: Callable[..., Settings], tmp_path: Path,
) -> None:
    """The audit process's /readyz has the ``not_blocked`` check of the scorer and the trainer:
    503 with the reason while its loop holds a batch (here its handler fails with EIO as long
    as a file exists: tests/reliability/faulty_cli.py), 200 again once the batch goes through."""
    s = settings_factory()
    fault = tmp_path / "fault"
    fault.touch()
    audit = TriageProcess(s, ["audit", "--blocked-exit-s", "600"], tmp_path, "audit", program=FAULTY,
                          extra_env={"TRIAGE_TEST_FAULT": "audit", "TRIAGE_TEST_FAULT_WHILE": str(fault)})
    try:
        wait_until(lambda: ready_state(audit.metrics_port)[0] == 200, "audit /readyz to turn 200", alive=audit.dead)
        produce(s, s.topics.review_topic, [(b"r1", b"{}")])

        def unready() -> Optional[dict[str, object]]:
            code, doc = ready_state(audit.metrics_port)
            return doc if code == 503 else None

        doc = wait_until(unready, "audit /readyz to turn 503 while its batch is held", alive=audit.dead)
        assert doc["checks"] == {"running": True, "not_blocked": False}, doc
        reason = doc["reasons"]["not_blocked"]  # type: ignore[index]
        assert "audit has held a batch" in reason and "io (OSError" in reason and "Input/output error" in reason, doc
        assert audit.metric("triage_blocked", loop="audit", reason="io") == 1
        fault.unlink()
        doc = wait_until(lambda: (lambda c, d: d if c == 200 else None)(*ready_state(audit.metrics_port)),
                         "audit /readyz to recover", alive=audit.dead)
        assert doc == {"ready": True, "checks": {"running": True, "not_blocked": True}}, doc
        assert audit.metric("triage_blocked", loop="audit", reason="io") == 0
    finally:
        audit.stop()
