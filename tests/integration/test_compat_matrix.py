"""Compatibility matrix (issue 12) through `triage serve` and the real broker: a model served must
label every sample exactly as onnxruntime itself does.

Every kind of the zoo is checked in process, through the same parser, preparation and batch
handler (tests/unit/test_compat_adapter.py). Here, one scorer process per kind in ``SERVED``
covers what only a process adds: the flags as given on the command line, decoding from and
producing to Kafka. They span the ways a graph can need help: none, logits with class names,
float16 input, a fixed batch size, labels inside the graph.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest

from tests.compat.zoo import (ZooModel, assert_labelled_like_onnxruntime, available_kinds, labels_by_id,
                              sample_records)
from tests.fixtures import DEADLINE_S, ScorerProcess, produce
from triage.runtime.broker import EmbeddedBroker
from triage.settings import Settings
from triage.transport import ensure_topics, make_consumer

SERVED = ["skl2onnx-logreg-zipmap-dict", "torch-legacy-logits-batch1", "onnx-float16-input",
          "onnx-fixed-batch4", "onnx-label-arrayfeatureextractor"]


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


def test_served_kinds_are_in_the_zoo() -> None:
    assert set(SERVED) <= set(available_kinds())


@pytest.fixture(scope="module")
def matrix(broker: EmbeddedBroker, zoo: dict[str, Any], tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[dict[str, Any]]:
    """kind -> Served (or the reason the exporter could not build it); all scorers run at once."""
    root = tmp_path_factory.mktemp("matrix")
    results: dict[str, Any] = {k: zoo[k] for k in SERVED if isinstance(zoo[k], str)}
    wave: list[Served] = []
    try:
        for m in [zoo[k] for k in SERVED if not isinstance(zoo[k], str)]:
            s = _settings(broker, m.kind)
            produce(s, s.topics.samples_topic, sample_records(m))
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


@pytest.mark.parametrize("kind", SERVED)
def test_triage_labels_every_row_like_onnxruntime(kind: str, matrix: dict[str, Any]) -> None:
    served = matrix[kind]
    assert not isinstance(served, str), served  # the exporter could not build it: not a reason to skip
    s, model = served.settings, served.model
    log = served.proc.log()
    tail = "\n".join(log.splitlines()[-15:])
    assert served.outputs, f"{kind}: no output at all; scorer exit code {served.exit_code}; log tail:\n{tail}"

    labels, dead = labels_by_id(((r["topic"], r["value"]) for r in served.outputs), s.topics)
    assert not dead, f"{kind}: {len(dead)} dead letters, e.g. {dead[0][:200]!r}\n{tail}"
    assert_labelled_like_onnxruntime(model, labels, tail)
