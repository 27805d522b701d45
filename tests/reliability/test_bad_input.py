"""Bad input without a broker: the corpus and hypothesis fuzzing of the decoder, validator
and the pure batch handler. Every input is a valid Sample or an InputError with a stage."""

from __future__ import annotations

import json
import math
from functools import lru_cache
from typing import Any, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.profiles import examples
from triage.scoring.handlers import BatchConfig
from triage.policies import make_policy
from tests.reliability.corpus import Case, corpus, kinds_broken
from triage.contracts import Sample, decode_label, decode_sample
from triage.examples import example_paths
from triage.errors import InputError
from triage.scoring.handlers import process_batch
from triage.records import RecordBatch
from triage.scoring.servable import ServingModel
from triage.lifecycle.loading import serving_model_from_file
from triage.settings import Settings

N = 64  # the bundled digits model's feature count
MAX = 1_000_000
STAGES = {"decode", "validate"}
CASES = corpus(N, MAX)


@lru_cache(maxsize=1)
def _model() -> tuple[Settings, ServingModel]:
    model, ref = example_paths()
    s = Settings(model=model, reference=ref, max_message_bytes=MAX)
    return s, serving_model_from_file(s.serving, s.policy)


def _check(value: Optional[bytes]) -> Optional[Sample]:
    """Decode and assert the contract; return the sample or None (InputError)."""
    try:
        sample = decode_sample(value, N, MAX)
    except InputError as exc:
        assert exc.stage in STAGES, exc
        assert exc.message
        return None
    assert value is not None and len(value) <= MAX
    assert isinstance(sample.id, str) and sample.id
    assert len(sample.features) == N
    assert all(type(x) is float and math.isfinite(x) for x in sample.features)
    assert sample.meta is None or isinstance(sample.meta, dict)
    assert sample.ts is None or (isinstance(sample.ts, (str, int, float)) and not isinstance(sample.ts, bool))
    top = json.loads(value, object_pairs_hook=lambda pairs: [k for k, _ in pairs])
    assert top.count("id") == 1 and top.count("features") == 1
    return sample


def test_corpus_has_at_least_30_kinds_of_broken_records() -> None:
    assert kinds_broken(CASES) >= 30
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_corpus_case_decodes_or_fails_at_its_stage(case: Case) -> None:
    if case.stage in STAGES:
        with pytest.raises(InputError) as info:
            decode_sample(case.value, N, MAX)
        assert info.value.stage == case.stage, info.value.message
    else:  # valid records, and ones that only the model can reject
        assert _check(case.value) is not None


def test_corpus_through_process_batch_gives_one_outcome_each() -> None:
    s, model = _model()
    batch = RecordBatch()
    for i, c in enumerate(CASES):
        batch.append(s.topics.samples_topic, 0, i, 1_700_000_000_000, c.key, c.value)
    result = process_batch(batch, model, make_policy(s.policy), BatchConfig.of(s.serving, s.policy, s.topics))
    by_source: dict[int, list[Any]] = {}
    for out in result.outputs:
        by_source.setdefault(out.source, []).append(out)
    assert sorted(by_source) == list(range(len(CASES))), "an input produced no output"
    for i, c in enumerate(CASES):
        outs = by_source[i]
        assert len(outs) == 1, (c.name, outs)
        if c.stage is None:
            assert outs[0].topic in (s.topics.predictions_topic, s.topics.review_topic), c.name
        else:
            assert outs[0].topic == s.topics.dlq_topic and outs[0].reason == c.stage, (c.name, outs[0].reason)
            headers = dict(outs[0].headers or [])
            assert headers["triage.error.stage"].decode() == c.stage
            assert outs[0].value == c.value and outs[0].key == c.key  # original bytes


# --- hypothesis ----------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20,
)
feature_items = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=-(10**400), max_value=10**400),
    st.booleans(), st.none(), st.text(max_size=3),
)
feature_lists = st.one_of(
    st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=N, max_size=N),
    st.lists(feature_items, min_size=0, max_size=N + 2),
    json_values,
)
ids = st.one_of(st.text(max_size=12), st.integers(), st.none(), json_values)
docs = st.fixed_dictionaries(
    {"id": ids, "features": feature_lists},
    optional={"ts": json_values, "meta": json_values, "extra": json_values},
)


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, allow_nan=True).encode("utf-8", "surrogatepass")


FUZZ = settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=2000))
def test_fuzz_arbitrary_bytes(value: bytes) -> None:
    _check(value)


@FUZZ
@given(docs)
def test_fuzz_sample_shaped_documents(doc: dict[str, Any]) -> None:
    _check(_dumps(doc))


@FUZZ
@given(docs, st.data())
def test_fuzz_mutated_documents(doc: dict[str, Any], data: st.DataObject) -> None:
    raw = bytearray(_dumps(doc))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup_key"]))
        pos = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if op == "flip" and raw:
            raw[pos] = data.draw(st.integers(0, 255))
        elif op == "insert":
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and raw:
            del raw[pos]
        elif op == "truncate":
            del raw[pos:]
        elif op == "dup_key" and raw.startswith(b"{"):
            raw[1:1] = b'"id":"dup",'
    _check(bytes(raw))


@settings(max_examples=examples(60), deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=300), docs.map(_dumps), st.none()), min_size=1, max_size=30))
def test_fuzz_process_batch_one_primary_outcome_per_input(values: list[Optional[bytes]]) -> None:
    s, model = _model()
    batch = RecordBatch()
    for i, v in enumerate(values):
        batch.append(s.topics.samples_topic, 0, i, 0, b"k", v)
    result = process_batch(batch, model, make_policy(s.policy), BatchConfig.of(s.serving, s.policy, s.topics))
    primary = [o for o in result.outputs if o.reason != "audit"]
    assert sorted(o.source for o in primary) == list(range(len(values)))
    for o in primary:
        if o.topic == s.topics.dlq_topic:
            assert dict(o.headers or [])["triage.error.stage"].decode() in {"decode", "validate", "score"}


@FUZZ
@given(st.fixed_dictionaries({"id": ids, "label": ids}, optional={"annotator": ids, "features": feature_lists}))
def test_fuzz_labels(doc: dict[str, Any]) -> None:
    try:
        label = decode_label(_dumps(doc), MAX)
    except InputError as exc:
        assert exc.stage in STAGES
        return
    assert label.id and label.label
    assert label.annotator == doc.get("annotator")  # who labelled it is kept


def test_label_keeps_annotator_identity() -> None:
    label = decode_label(b'{"id":"s1","label":"cat","annotator":"alice@example.org"}', MAX)
    assert label.annotator == "alice@example.org"
    assert decode_label(b'{"id":"s1","label":"cat"}', MAX).annotator is None
