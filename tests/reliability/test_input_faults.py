"""Bad input and unwritable outputs through a running scorer on the real embedded broker."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Optional

from tests.fixtures import read_all, read_headers
from tests.helpers import ScorerProcess, metric_value, wait_until
from tests.reliability.corpus import corpus
from tests.reliability.helpers import count, readyz, sample_values
from triage.records import OutRecord
from triage.settings import Settings
from triage.transport import make_producer

N_FEATURES = 64
VALID_BETWEEN = 5


def _send(settings: Settings, records: list[OutRecord]) -> None:
    producer = make_producer(settings)
    try:
        for rec in records:
            if rec.key is None and rec.value is None:
                _send_keyless_tombstone(settings, rec.topic)  # kafka-python refuses to
            else:
                errors = producer.send_all([rec], 60)
                assert not any(errors), [e for e in errors if e]
    finally:
        producer.close()


def _send_keyless_tombstone(settings: Settings, topic: str) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": settings.connection.bootstrap_servers})
    failures: list[object] = []
    p.produce(topic, value=None, key=None, on_delivery=lambda err, _msg: failures.append(err) if err else None)
    assert p.flush(30) == 0 and not failures, failures


def _doc_id(value: Optional[bytes]) -> str:
    return str(json.loads(value or b"{}")["id"])


def test_corpus_interleaved_with_valid_records_one_outcome_each(
    settings_factory: Callable[..., Settings], example_model: tuple[Path, Path],
    scorer_process: Callable[..., ScorerProcess],
) -> None:
    model_path, ref = example_model
    s = settings_factory(batch_size=16)
    cases = corpus(N_FEATURES, s.serving.max_message_bytes)
    valid = sample_values(len(cases) * VALID_BETWEEN, "v")
    records: list[OutRecord] = []
    for i, case in enumerate(cases):
        for sid, value in valid[i * VALID_BETWEEN:(i + 1) * VALID_BETWEEN]:
            records.append(OutRecord(s.topics.samples_topic, sid.encode(), value))
        records.append(OutRecord(s.topics.samples_topic, case.key, case.value, case.headers))
    _send(s, records)

    proc = scorer_process(s, "--model", str(model_path), "--reference", str(ref))
    proc.metrics()  # up
    out = read_all(s, s.topics.outputs(), expect=len(records))
    assert proc.proc.poll() is None, "the scorer died:\n" + proc.log()

    # valid records, and the odd-but-valid cases, are scored exactly once
    scored = [_doc_id(r["value"]) for r in out if r["topic"] != s.topics.dlq_topic]
    valid_ids = {sid for sid, _ in valid} | {_doc_id(c.value) for c in cases if c.stage is None}
    assert sorted(scored) == sorted(valid_ids)

    # every broken record is dead-lettered exactly once, at its stage, with the DLQ headers
    inputs = {(r["partition"], r["offset"]): (r["key"], r["value"])
              for r in read_all(s, [s.topics.samples_topic], expect=len(records))}
    by_bytes = {(c.key, c.value): c for c in cases}
    broken = [c for c in cases if c.stage is not None]
    dlq = read_headers(s, s.topics.dlq_topic, len(broken))
    seen: dict[str, int] = {}
    for rec in dlq:
        h = rec["headers"]
        assert h["triage.source.topic"] == s.topics.samples_topic
        assert set(h) >= {"triage.error.class", "triage.error.message", "triage.source.timestamp", "triage.model_version"}
        source = inputs[(int(h["triage.source.partition"]), int(h["triage.source.offset"]))]
        case = by_bytes[source]
        seen[case.name] = seen.get(case.name, 0) + 1
        assert h["triage.error.stage"] == case.stage, (case.name, h)
        if "triage.dlq.payload_dropped" in h:  # only a keyless tombstone cannot be stored as is
            assert case.name == "tombstone_without_key" and rec["value"] == b""
        else:
            assert (rec["key"], rec["value"]) == source, case.name
    assert seen == {c.name: 1 for c in broken}

    # the service is up and ready, and counted what it did
    def settled() -> Optional[str]:
        text = proc.metrics()
        return text if metric_value(text, "triage_samples_total") >= len(records) else None

    text = wait_until(settled, "counters to settle", alive=proc.dead)
    for stage in ("decode", "validate", "score"):
        assert metric_value(text, "triage_dlq_records_total", stage=stage) == sum(c.stage == stage for c in broken)
    assert readyz(proc.metrics_port) == 200
    dlq_ids = [f"dlq:{name}" for name, n in seen.items() for _ in range(n)]
    count(f"bad input: {len(broken)} kinds of broken records + {len(valid_ids)} valid",
          valid_ids | {f"dlq:{c.name}" for c in broken}, scored + dlq_ids).record()


def test_dead_letter_too_large_to_write_goes_without_its_payload(
    settings_factory: Callable[..., Settings], example_model: tuple[Path, Path],
    scorer_process: Callable[..., ScorerProcess],
) -> None:
    """An upstream with larger limits sends a 2 MB record: it is dead-lettered as oversized
    (stage validate), but its original bytes are over the producer's request limit, so the
    dead letter is written without the payload (header triage.dlq.payload_dropped), never
    retried forever and never lost. (Since ids, meta and features are bounded, no valid input
    can make an output over the limit; the produce stage itself is tested in
    tests/integration/test_transport.py.)"""
    model_path, ref = example_model
    s = settings_factory(batch_size=8)
    valid = sample_values(40, "ok")
    feats = json.loads(valid[0][1])["features"]
    too_big = json.dumps({"id": "big", "features": feats, "meta": {"blob": "x" * 2_000_000}}).encode()
    records = [OutRecord(s.topics.samples_topic, sid.encode(), v) for sid, v in valid[:20]]
    records.append(OutRecord(s.topics.samples_topic, b"big", too_big))
    records += [OutRecord(s.topics.samples_topic, sid.encode(), v) for sid, v in valid[20:]]
    _send(s.replace(**{"max_message_bytes": 4_000_000}), records)  # an upstream with larger limits
    proc = scorer_process(s, "--model", str(model_path), "--reference", str(ref))
    proc.metrics()  # up
    out = read_all(s, s.topics.outputs(), expect=len(records))
    assert proc.proc.poll() is None, proc.log()
    scored = sorted(_doc_id(r["value"]) for r in out if r["topic"] != s.topics.dlq_topic)
    assert scored == sorted(sid for sid, _ in valid)
    dlq = read_headers(s, s.topics.dlq_topic, 1)
    assert len(dlq) == 1
    headers = dlq[0]["headers"]
    assert headers["triage.error.stage"] == "validate" and "oversized" in headers["triage.error.message"]
    # kafka-python says MessageSizeTooLargeError, librdkafka MSG_SIZE_TOO_LARGE
    assert re.search("MessageSizeTooLarge|MSG_SIZE_TOO_LARGE", headers["triage.dlq.payload_dropped"])
    assert dlq[0]["value"] == b"" and headers["triage.source.topic"] == s.topics.samples_topic
    wait_until(lambda: proc.metric("triage_dlq_records_total", stage="validate") == 1, "dlq counter", alive=proc.dead)
    ids = [_doc_id(r["value"]) for r in out if r["topic"] != s.topics.dlq_topic] + ["big"]
    count("dead letter too large to write (payload dropped)", {sid for sid, _ in valid} | {"big"}, ids).record()
