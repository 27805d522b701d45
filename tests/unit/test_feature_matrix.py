"""The batch decoder's features matrix (simdjson over the joined raw arrays) must equal what the
single-record decoder parses, value for value, and must never take a row it cannot prove."""

from __future__ import annotations

import json
import struct

import numpy as np
from hypothesis import given, settings, strategies as st

from tests.contract_strategies import batch_verdicts, single_verdict
from tests.profiles import examples
from triage.contracts import F32_MAX, decode_samples
from triage.contracts.feature_matrix import VECTOR_ROWS, _plain_row, _screen_vectorized, parse_feature_rows

F = 4
MAX = 100_000


def _doc(features: bytes, sid: str = "a") -> bytes:
    return b'{"id":"%s","features":%s}' % (sid.encode(), features)


# Numbers in every spelling JSON allows, and ones at the edges of double and float32.
number_text = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: "%.17g" % x),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(lambda x: "%.9e" % x),
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["0", "-0", "-0.0", "1E2", "1e+2", "1.5E-3", "2e-400", "4.9e-324", "2.2250738585072011e-308",
                     "3.4028234663852886e38", "3.4028235e38", "-3.4028234663852886e38", "1e39", "1e400",
                     "9007199254740993", "18446744073709551615", "18446744073709551616",
                     "-9223372036854775809", "0.1000000000000000055511151231257827", "1" + "0" * 40]),
)
# Row elements that are not numbers, or not alone: each must fall back to the full decoder.
not_a_number = st.sampled_from(['"1"', "true", "null", "[1]", "[]", "{}", '{"a":1}', '"[,]"', '","', '"]"'])


@st.composite
def feature_arrays(draw: st.DrawFn) -> bytes:
    n = draw(st.sampled_from([F, F, F, F - 1, F + 1, 0]))
    items = draw(st.lists(number_text, min_size=n, max_size=n))
    if items and draw(st.integers(0, 5)) == 0:
        items[draw(st.integers(0, len(items) - 1))] = draw(not_a_number)
    sep = draw(st.sampled_from([",", ", ", " ,\n\t"]))
    pad = draw(st.sampled_from(["", " ", "\n"]))
    return ("[" + pad + sep.join(items) + pad + "]").encode()


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(feature_arrays(), min_size=1, max_size=12))
def test_matrix_rows_equal_the_single_decoders_features(arrays: list[bytes]) -> None:
    values = [_doc(a, f"s{i}") for i, a in enumerate(arrays)]
    assert batch_verdicts(values, F, MAX) == [single_verdict(v, F, MAX) for v in values]


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(st.lists(st.floats(-F32_MAX, F32_MAX, allow_nan=False), min_size=F, max_size=F), min_size=1, max_size=30))
def test_valid_rows_take_the_fast_path_bit_for_bit(rows: list[list[float]]) -> None:
    raws = [json.dumps(r).encode() for r in rows]
    X, ok = parse_feature_rows(raws, F)
    assert ok.all(), "a valid row fell back to the per-record decoder"
    # bit for bit, so -0.0 and every last digit are kept
    assert [struct.pack("<%dd" % F, *r) for r in rows] == [x.tobytes() for x in X]


def test_a_bad_row_falls_back_alone_and_the_batch_keeps_its_order() -> None:
    good = [_doc(b"[1,2,3,4]", "g1"), _doc(b"[5,6,7,8]", "g2")]
    for bad in (b"[1,2,3]", b"[1,[2],3,4]", b'[1,"2",3,4]', b"[1e400,2,3,4]", b"[1e39,2,3,4]", b"null",
                b"[1,2,3,4,5]", b'{"a":[1,2,3,4]}', b"[18446744073709551616,2,3,4]", b"[" * 5000 + b"]" * 5000,
                b"[1,2,3,4" + b" " * 50_000 + b"]"):
        values = [good[0], _doc(bad, "b"), good[1]]
        samples, rows, errors, X = decode_samples(values, F, MAX)
        if single_verdict(values[1], F, MAX)[0] == "ok":
            assert rows == [0, 1, 2], bad
        else:
            assert rows == [0, 2] and [i for i, _ in errors] == [1], bad
            assert X[0].tolist() == [1, 2, 3, 4] and X[-1].tolist() == [5, 6, 7, 8]
        assert batch_verdicts(values, F, MAX) == [single_verdict(v, F, MAX) for v in values]


def test_screen_refuses_shapes_simdjson_would_flatten() -> None:
    raws = [b"[1,2,3,4]", b"[[1,2],3,4]", b"[1,2,[3,4]]", b"[]", b"1", b'["[1,2",3,4]', b"[1,2,3,4]"]
    X, ok = parse_feature_rows(raws, F)
    assert ok.tolist() == [True, False, False, False, False, False, True]
    assert X.tolist() == [[1, 2, 3, 4], [1, 2, 3, 4]]


def test_values_past_float32_are_refused_with_the_single_decoders_message() -> None:
    v = _doc(b"[1,2,3,3.4028235e38]")
    _, _, errors, X = decode_samples([v], F, MAX)
    assert X.shape == (0, F) and errors[0][1].message == single_verdict(v, F, MAX)[1]


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(st.one_of(feature_arrays(), not_a_number.map(str.encode)), min_size=1, max_size=80))
def test_the_vectorized_screen_agrees_with_the_per_row_one(raws: list[bytes]) -> None:
    per_row = [_plain_row(r, F) for r in raws]
    assert _screen_vectorized(raws, F).tolist() == per_row
    # and the batch decoder, which takes the vectorized screen from VECTOR_ROWS rows on
    values = [_doc(r, f"s{i}") for i, r in enumerate(raws * (1 + VECTOR_ROWS // len(raws)))]
    assert batch_verdicts(values, F, MAX) == [single_verdict(v, F, MAX) for v in values]


def test_an_unparseable_row_leaves_the_rest_of_the_batch_on_the_fast_path() -> None:
    raws = [b"[%d,2,3,4]" % i for i in range(100)]
    for bad in (b'["x",2,3,4]', b"[true,2,3,4]", b"[1e400,2,3,4]", b"[18446744073709551616,2,3,4]"):
        rows = raws[:37] + [bad] + raws[37:] + [bad]
        X, ok = parse_feature_rows(rows, F)
        assert np.flatnonzero(~ok).tolist() == [37, 101], bad
        assert X[:, 0].tolist() == list(range(100))
