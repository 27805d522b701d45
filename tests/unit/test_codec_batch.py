"""decode_samples (the batch fast path) must give exactly decode_sample's verdict, record by record."""

from __future__ import annotations

import json
from typing import Optional

from hypothesis import given, settings, strategies as st

from tests.contract_strategies import batch_verdicts, single_verdict
from tests.profiles import examples
from triage.contracts import Prediction, ScoreFields, encode

GOOD = b'{"id": "a1", "features": [1, 2.5, -3], "meta": {"src": "x"}, "ts": 1700000000000}'
BAD = [
    None, b"\xff\xfe\x00", b'{"id": "\xff", "features": [1,2,3]}', b"not json", b"[1, 2, 3]",
    b'"just a string"', b'{"features": [1,2,3]}', b'{"id": "", "features": [1,2,3]}',
    b'{"id": 7, "features": [1,2,3]}', b'{"id": "a", "features": [1,2]}', b'{"id": "a", "features": ["1",2,3]}',
    b'{"id": "a", "features": [true,2,3]}', b'{"id": "a", "features": [NaN,2,3]}',
    b'{"id": "a", "features": [1e309,2,3]}', b'{"id": "a", "id": "b", "features": [1,2,3]}',
    b'{"id": "a", "features": [1,2,3], "features": [1,2,3]}', b'{"id": "a", "features": [1,2,3], "meta": [1]}',
    b'{"id": "a", "features": [1,2,3]' + b" " * 2000 + b"}",
    b'{"id": "a", "features": [1,2,3], "meta": {"id": "x", "features": 1}}',  # repeats only inside meta: fine
]


def _one(value: Optional[bytes]) -> tuple[str, object]:
    return single_verdict(value, 3, 1000)


def _batch(values: list[Optional[bytes]]) -> list[tuple[str, object]]:
    return batch_verdicts(values, 3, 1000)


def test_batch_verdicts_equal_single_verdicts() -> None:
    values = [GOOD, *BAD, GOOD]
    assert _batch(values) == [_one(v) for v in values]


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(st.one_of(st.sampled_from([GOOD, *BAD]), st.binary(max_size=80),
                          st.builds(lambda xs: json.dumps({"id": "h", "features": xs}).encode(),
                                    st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=4))),
                max_size=12))
def test_batch_matches_single_on_arbitrary_input(values: list[Optional[bytes]]) -> None:
    assert _batch(values) == [_one(v) for v in values]


def test_prediction_struct_encodes_like_the_contract_dict() -> None:
    as_struct = encode(Prediction("a", "3", 0.9, ScoreFields(0.5, 0.1, None), "v1", {"k": [1]}))
    as_dict = encode({"id": "a", "label": "3", "confidence": 0.9,
                      "scores": {"margin": 0.5, "entropy": 0.1, "outlier": None},
                      "model_version": "v1", "meta": {"k": [1]}})
    assert as_struct == as_dict
