"""Compatibility matrix (issue 12): every exporter's model, served by `triage serve` through the
real broker, must label every sample exactly as onnxruntime itself does.

The zoo (tests/compat/zoo.py) is built once per module; one scorer process per kind runs against
its own topics, a few at a time, and the per-kind tests below only check what was collected.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest

from tests.compat.zoo import ZooModel, available_kinds, build_zoo
from tests.fixtures import DEADLINE_S, ScorerProcess, produce
from triage.runtime.broker import EmbeddedBroker
from triage.settings import Settings
from triage.transport import ensure_topics, make_consumer

WAVE = 8  # scorer processes running at once
KINDS = available_kinds()


@dataclass
class Served:
    model: ZooModel
    settings: Settings
    proc: ScorerProcess
    outputs: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None


def _settings(broker: EmbeddedBroker, kind: str) -> Settings:
    tag = f"{kind[:40]}-{uuid.uuid4().hex[:6]}"
    s = Settings(
        bootstrap_servers=broker.bootstrap_servers, kafka_client="confluent", session_timeout_ms=6000,
        group_id=f"g-{tag}", samples_topic=f"samples-{tag}", predictions_topic=f"predictions-{tag}",
        review_topic=f"review-{tag}", labels_topic=f"labels-{tag}", models_topic=f"models-{tag}",
        dlq_topic=f"dlq-{tag}", metrics_port=0, metrics_host="127.0.0.1",
    )
    ensure_topics(s, s.topics.all())
    return s


def _samples(model: ZooModel) -> list[tuple[bytes, bytes]]:
    ts = 1_764_070_000_000
    return [(f"row-{i:04d}".encode(), json.dumps({"id": f"row-{i:04d}", "features": row.tolist(), "ts": ts + i}).encode())
            for i, row in enumerate(model.X)]


def _collect(served: Served) -> None:
    """Read the kind's output topics until one output per sample, or until its scorer died."""
    s, expect = served.settings, len(served.model.X)
    reader = make_consumer(s, s.topics.outputs(), group_id=None)
    out = served.outputs
    deadline = time.monotonic() + DEADLINE_S
    try:
        while time.monotonic() < deadline:
            dead = served.proc.proc.poll() is not None
            batch = reader.poll_batch(5000, 300)
            for t, k, v in zip(batch.topics, batch.keys, batch.values):
                out.append({"topic": t, "key": k, "value": v})
            if len(out) >= expect or (dead and not len(batch.values)):
                break
        if len(out) >= expect:  # a short grace read shows whether anything unexpected follows
            batch = reader.poll_batch(5000, 500)
            for t, k, v in zip(batch.topics, batch.keys, batch.values):
                out.append({"topic": t, "key": k, "value": v})
    finally:
        reader.close()


@pytest.fixture(scope="module")
def matrix(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """kind -> Served (or the reason the exporter could not build it)."""
    root = tmp_path_factory.mktemp("zoo")
    skipped: dict[str, str] = {}
    models = build_zoo(root, KINDS, skipped=skipped)
    results: dict[str, Any] = dict(skipped)
    for start in range(0, len(models), WAVE):
        wave: list[Served] = []
        try:
            for m in models[start:start + WAVE]:
                s = _settings(broker, m.kind)
                produce(s, s.topics.samples_topic, _samples(m))
                proc = ScorerProcess(s, ["--model", str(m.path), "--reference", str(m.reference), *m.flags],
                                     root / f"{m.kind}.scorer.log")
                wave.append(Served(m, s, proc))
            for served in wave:
                _collect(served)
        finally:
            for served in wave:
                if served.proc.proc.poll() is None:
                    served.exit_code = served.proc.terminate()
                else:
                    served.exit_code = served.proc.proc.returncode
                results[served.model.kind] = served
    yield results


@pytest.mark.parametrize("kind", KINDS)
def test_triage_labels_every_row_like_onnxruntime(kind: str, matrix: dict[str, Any]) -> None:
    served = matrix[kind]
    assert not isinstance(served, str), served  # the exporter could not build it: not a reason to skip
    s, model = served.settings, served.model
    log = served.proc.log()
    tail = "\n".join(log.splitlines()[-15:])
    assert served.outputs, f"{kind}: no output at all; scorer exit code {served.exit_code}; log tail:\n{tail}"

    dlq = [r for r in served.outputs if r["topic"] == s.topics.dlq_topic]
    assert not dlq, f"{kind}: {len(dlq)} dead letters, e.g. {dlq[0]['value'][:200]!r}\n{tail}"
    labels: dict[str, list[str]] = {}
    for r in served.outputs:
        doc = json.loads(r["value"])
        if r["topic"] == s.topics.predictions_topic:
            labels.setdefault(doc["id"], []).append(doc["label"])
        elif r["topic"] == s.topics.review_topic:
            labels.setdefault(doc["id"], []).append(doc["predicted"])
    ids = [f"row-{i:04d}" for i in range(len(model.X))]
    missing = [i for i in ids if i not in labels]
    assert not missing, f"{kind}: {len(missing)} of {len(ids)} samples got no output\n{tail}"
    doubled = {i: v for i, v in labels.items() if len(v) != 1}
    assert not doubled, f"{kind}: samples with more than one output: {list(doubled.items())[:5]}"
    assert set(labels) == set(ids)

    got = [labels[i][0] for i in ids]
    wrong = [(i, g, e) for i, g, e in zip(ids, got, model.expected) if g != e]
    assert not wrong, (
        f"{kind}: triage disagrees with onnxruntime on {len(wrong)}/{len(ids)} rows, "
        f"e.g. (id, triage, onnxruntime) {wrong[:5]}"
    )
