"""The scorer against the real embedded broker: routing, delivery, metrics. (SIGKILL and restart:
tests/reliability/test_process_faults.py.)"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any, Callable, Optional

from consumers.scorer import Scorer
from tests.fixtures import produce, read_all, read_headers
from tests.helpers import ScorerProcess, http_get, metric_samples, metric_value, wait_until
from tests.integration.streams import MALFORMED, mixed_stream
from triage.lifecycle.loading import serving_model_from_file
from triage.settings import Settings


def _ids(records: list[dict[str, Any]], topic: str) -> list[str]:
    return [json.loads(r["value"])["id"] for r in records if r["topic"] == topic]


def test_mixed_stream_every_sample_ends_in_exactly_one_place(
    settings_factory: Callable[..., Settings], example_model: tuple[Path, Path]
) -> None:
    model_path, ref = example_model
    s = settings_factory(model=model_path, reference=ref, batch_size=64)
    records, valid, outliers = mixed_stream(ref, 400, 12)
    produce(s, s.topics.samples_topic, records)
    scorer = Scorer(s, serving_model_from_file(s.serving, s.policy))
    worker = threading.Thread(target=scorer.run, kwargs={"idle_exit_s": 20.0})
    worker.start()
    try:
        out = read_all(s, s.topics.outputs(), expect=len(records))
    finally:
        scorer.stop_event.set()
        worker.join(60)
    assert not worker.is_alive()

    preds, review = set(_ids(out, s.topics.predictions_topic)), set(_ids(out, s.topics.review_topic))
    dlq = [r for r in out if r["topic"] == s.topics.dlq_topic]
    assert not preds & review, "a sample went to both predictions and review"
    assert preds | review == valid | outliers
    assert outliers <= review, f"outliers not in review: {outliers - review}"
    assert len(dlq) == len(MALFORMED) + 1
    assert sorted(r["value"] or b"" for r in dlq) == sorted(MALFORMED + [b""])
    reasons = {json.loads(r["value"])["id"]: json.loads(r["value"])["reason"] for r in out if r["topic"] == s.topics.review_topic}
    assert all(reasons[o] == "outlier" for o in outliers)
    # outputs are keyed by sample id and stamped with the serving version
    for r in out:
        if r["topic"] != s.topics.dlq_topic:
            doc = json.loads(r["value"])
            assert r["key"] == doc["id"].encode() and doc["model_version"] == scorer.model.version
    headers = read_headers(s, s.topics.dlq_topic, len(dlq))
    assert all(h["headers"]["triage.error.stage"] in ("decode", "validate") for h in headers)
    assert all(h["headers"]["triage.source.topic"] == s.topics.samples_topic for h in headers)


def test_metrics_match_what_was_routed(
    settings_factory: Callable[..., Settings], example_model: tuple[Path, Path],
    scorer_process: Callable[..., ScorerProcess],
) -> None:
    model_path, ref = example_model
    s = settings_factory()
    records, _, _ = mixed_stream(ref, 300, 8, seed=1)
    produce(s, s.topics.samples_topic, records)
    proc = scorer_process(s, "--model", str(model_path), "--reference", str(ref))
    proc.metrics()  # up
    out = read_all(s, s.topics.outputs(), expect=len(records))

    def counted() -> Optional[str]:  # the counters move right after the commit
        text = proc.metrics()
        return text if metric_value(text, "triage_samples_total") >= len(records) else None

    text = wait_until(counted, "the counters to count every record", alive=proc.dead)
    by_topic = {t: sum(1 for r in out if r["topic"] == t) for t in s.topics.outputs()}
    assert metric_value(text, "triage_samples_total", route="predictions") == by_topic[s.topics.predictions_topic]
    assert metric_value(text, "triage_samples_total", route="review") == by_topic[s.topics.review_topic]
    assert metric_value(text, "triage_samples_total", route="dlq") == by_topic[s.topics.dlq_topic]
    assert metric_value(text, "triage_dlq_records_total") == by_topic[s.topics.dlq_topic]
    review_docs = [json.loads(r["value"]) for r in out if r["topic"] == s.topics.review_topic]
    for reason in ("uncertain", "outlier"):
        assert metric_value(text, "triage_samples_total", route="review", reason=reason) == sum(d["reason"] == reason for d in review_docs)
    valid = by_topic[s.topics.predictions_topic] + by_topic[s.topics.review_topic]
    assert metric_value(text, "triage_confidence_count") == valid
    assert metric_value(text, "triage_outlier_score_count") == valid
    assert metric_value(text, "triage_outlier_detection_enabled") == 1
    info = [m.labels for m in metric_samples(text, "triage_model_info") if m.value == 1]
    assert len(info) == 1 and re.fullmatch("[0-9a-f]{64}", info[0]["sha256"])
    assert re.fullmatch("file-[0-9a-f]{12}", info[0]["version"])
    assert metric_value(text, "triage_consumer_lag_records") == 0
    code, body = http_get(proc.url + "/readyz")
    assert code == 200 and json.loads(body)["ready"] is True
    assert proc.terminate() == 0
    assert "scorer stopped cleanly" in proc.log()


def test_help_lists_every_setting_with_default() -> None:
    from triage.cli import build_parser

    parser = build_parser()
    serve = parser._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    text = serve.format_help()
    for name in ("--bootstrap-servers", "--samples-topic", "--dlq-topic", "--acquisition", "--uncertainty-threshold",
                 "--metrics-port", "--batch-size", "--sasl-password", "--reference", "--group-id"):
        assert name in text
    assert "TRIAGE_BATCH_SIZE" in text and "default: 1000" in text
