from __future__ import annotations

import pytest

from triage.contracts import decode_label, decode_sample
from triage.errors import DecodeError, InputError, InvalidRecordError

GOOD = b'{"id": "a1", "features": [1, 2.5, -3], "meta": {"src": "x"}, "ts": 1700000000000}'


def test_decodes_valid_sample() -> None:
    s = decode_sample(GOOD, 3, 10_000)
    assert s.id == "a1" and s.features == [1.0, 2.5, -3.0] and s.meta == {"src": "x"}


@pytest.mark.parametrize(
    "value, stage, fragment",
    [
        (None, "decode", "tombstone"),
        (b"\xff\xfe\x00", "decode", "malformed"),
        (b'{"id": "\xff", "features": [1,2,3]}', "decode", "UTF-8"),
        (b"not json", "decode", "malformed"),
        (b"[1, 2, 3]", "validate", "object"),
        (b'"just a string"', "validate", "object"),
        (b'{"features": [1,2,3]}', "validate", "id"),
        (b'{"id": "", "features": [1,2,3]}', "validate", "non-empty"),
        (b'{"id": 7, "features": [1,2,3]}', "validate", "str"),
        (b'{"id": "a", "features": [1,2]}', "validate", "has 2 values"),
        (b'{"id": "a", "features": []}', "validate", "has 0 values"),
        (b'{"id": "a", "features": ["1",2,3]}', "validate", "float"),
        (b'{"id": "a", "features": [true,2,3]}', "validate", "float"),
        (b'{"id": "a", "features": [null,2,3]}', "validate", "float"),
        (b'{"id": "a", "features": [NaN,2,3]}', "decode", "malformed"),
        (b'{"id": "a", "features": [Infinity,2,3]}', "decode", "malformed"),
        (b'{"id": "a", "features": [1e309,2,3]}', "validate", "range"),
        (b'{"id": "a", "id": "b", "features": [1,2,3]}', "validate", "duplicate key"),
        (b'{"id": "a", "features": [1,2,3], "meta": [1]}', "validate", "meta"),
        (b'{"id": "a", "features": [1,2,3]' + b" " * 2000 + b"}", "validate", "oversized"),
    ],
)
def test_rejects_bad_input_with_stage_and_reason(value: bytes, stage: str, fragment: str) -> None:
    with pytest.raises(InputError) as info:
        decode_sample(value, 3, 1000)
    assert info.value.stage == stage
    assert fragment.lower() in info.value.message.lower()


def test_duplicate_key_inside_meta_is_fine() -> None:
    s = decode_sample(b'{"id": "a", "features": [1,2,3], "meta": {"id": "x"}}', 3, 1000)
    assert s.id == "a"


def test_label_decoding() -> None:
    assert decode_label(b'{"id": "a", "label": "3", "annotator": "ann"}', 1000).annotator == "ann"
    with pytest.raises(InvalidRecordError):
        decode_label(b'{"id": "a", "label": ""}', 1000)
    with pytest.raises(DecodeError):
        decode_label(b"{", 1000)
