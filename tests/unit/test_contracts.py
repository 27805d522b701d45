"""triage.contracts: every field of every message -- extreme, wrong-typed, escaped, nested,
missing, duplicated -- and the builders' exact bytes."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any, Callable, Optional

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tests.contract_strategies import batch_verdicts, single_verdict
from tests.profiles import examples
from triage.contracts import (
    DLQ_STAGES, F32_MAX, MAX_EVENT_MS, META_MAX_BYTES, META_MAX_DEPTH, Label, ModelEvent, Prediction,
    ProvisionalPrediction, ReviewRequest, Sample, ScoreFields, TopClass, check_features, dead_letter,
    dead_letter_from_batch, decode_dlq_headers, decode_label, decode_label_row, decode_manifest, decode_model_event,
    decode_prediction, decode_review, decode_sample, decode_samples, encode, encode_label, encode_label_row,
    encode_manifest, encode_model_event, event_ms, event_ms_column, without_payload,
)
from triage.errors import DecodeError, InputError, InvalidRecordError, RegistryError
from triage.records import OutRecord, RecordBatch

MAX = 100_000
FEATS = b"[1,2.5,-3]"


def sample(extra: bytes = b"", *, sid: bytes = b'"a1"', features: bytes = FEATS) -> bytes:
    return b'{"id":' + sid + b',"features":' + features + extra + b"}"


def refused(decode: Callable[[Optional[bytes]], Any], value: Any) -> InputError:
    with pytest.raises(InputError) as info:
        decode(value)
    return info.value


def dec(value: Any) -> Sample:
    return decode_sample(value, 3, MAX)


def bad(value: Any) -> InputError:
    return refused(dec, value)


# --- Sample: the whole record ----------------------------------------------------------------


def test_valid_sample_with_every_field() -> None:
    s = dec(sample(b',"ts":1700000000000,"meta":{"src":"x","n":[1,{"a":null}]},"zz":{"unknown":[1]}'))
    assert (s.id, s.features, s.ts, s.meta) == ("a1", [1.0, 2.5, -3.0], 1700000000000, {"src": "x", "n": [1, {"a": None}]})
    assert Sample.SCHEMA_VERSION == 1


@pytest.mark.parametrize("value, stage, fragment", [
    (None, "decode", "tombstone"),
    (b"", "decode", "truncated"),
    (b" \n", "decode", "truncated"),
    (b"\xff\xfe\x00", "decode", "malformed"),
    (sample(sid=b'"\xff"'), "decode", "UTF-8"),
    (sample(sid=b'"\xc0\xaf"'), "decode", "UTF-8"),
    (sample(sid=b'"\xed\xa0\x80"'), "decode", "UTF-8"),  # a surrogate encoded as UTF-8
    (b"\xef\xbb\xbf" + sample(), "decode", "malformed"),
    (sample().decode().encode("utf-16"), "decode", "malformed"),
    (sample() + b" x", "decode", "trailing"),
    (sample()[:-1], "decode", "truncated"),
    (sample()[:-3], "decode", "malformed"),
    (b"[" * 40_000 + b"]" * 40_000, "validate", "record: Expected `object`"),
    (sample(b',"meta":' + b'{"a":' * 10_000 + b"1" + b"}" * 10_000), "decode", "deep"),
    (sample(b',"zz":' + b"[" * 40_000 + b"]" * 40_000), "decode", "deep"),
    (b"42", "validate", "record"),
    (b"null", "validate", "record"),
    (b'"s"', "validate", "record"),
    (b"{}", "validate", "`id`"),
    (sample(b',"pad":"' + b"x" * MAX + b'"'), "validate", "oversized"),
])
def test_bad_records(value: Optional[bytes], stage: str, fragment: str) -> None:
    exc = bad(value)
    assert exc.stage == stage and fragment.lower() in exc.message.lower(), exc.message
    assert isinstance(exc, DecodeError if stage == "decode" else InvalidRecordError)


def test_bytes_like_values_decode_and_other_types_do_not() -> None:
    assert dec(bytearray(sample())).id == "a1" and dec(memoryview(sample())).id == "a1"
    assert bad(sample().decode()).stage == "decode"  # type: ignore[arg-type]


# --- Sample: id ------------------------------------------------------------------------------


@pytest.mark.parametrize("sid, fragment", [
    (None, "missing required field `id`"),
    (b"7", "`id`: Expected `str`"), (b"null", "`id`"), (b"true", "`id`"), (b'["a"]', "`id`"), (b'{"a":1}', "`id`"),
    (b'""', "`id` must be a non-empty string"),
    (b'"' + b"x" * 257 + b'"', "`id` is longer than 256"),
    (b'"' + "\u00e9".encode() * 257 + b'"', "`id` is longer than 256"),
    (b'"a\\u0000b"', "`id` contains control character U+0000"),
    (b'"a\\nb"', "U+000A"), (b'"\\u001b[31m"', "U+001B"), (b'"a\x7f"', "U+007F"),
    (b'"a\\u0085"', "U+0085"), ('"a\u009f"'.encode(), "U+009F"),
])
def test_bad_id(sid: Optional[bytes], fragment: str) -> None:
    value = b'{"features":' + FEATS + b"}" if sid is None else sample(sid=sid)
    exc = bad(value)
    assert exc.stage == "validate" and fragment in exc.message, exc.message


def test_lone_surrogate_id_is_a_decode_error() -> None:
    assert bad(sample(sid=b'"\\ud800"')).stage == "decode"
    assert bad(sample(sid=b'"a\\udfff"')).stage == "decode"


@pytest.mark.parametrize("sid, expected", [
    (b'"' + b"x" * 256 + b'"', "x" * 256),
    ('"\U0001F600\u200b\u00a0\u2028 a:b"'.encode(), "\U0001F600\u200b\u00a0\u2028 a:b"),  # not control characters
    (b'"\\ud83d\\ude00"', "\U0001F600"),  # an escaped surrogate *pair* is fine
    (b'"\\\\u0069d"', "\\u0069d"),
])
def test_odd_but_valid_ids(sid: bytes, expected: str) -> None:
    assert dec(sample(sid=sid)).id == expected


# --- Sample: features ------------------------------------------------------------------------


@pytest.mark.parametrize("features, fragment", [
    (b"[1,2]", "`features` has 2 values; the model takes 3"), (b"[]", "has 0 values"),
    (b"[1,2,3,4]", "has 4 values"), (b'"1,2,3"', "`features`: Expected `array`"), (b"null", "`features`"),
    (b'{"0":1}', "`features`"), (b'["1",2,3]', "`features[0]`: Expected `float`, got `str`"),
    (b"[1,true,3]", "`features[1]`: Expected `float`, got `bool`"), (b"[1,2,null]", "`features[2]`"),
    (b"[[1],2,3]", "`features[0]`"), (b"[1,2,1e39]", "`features[2]` = 1e+39 does not fit float32"),
    (b"[-1e39,2,3]", "`features[0]` = -1e+39 does not fit float32"), (b"[1,3.5e38,3]", "`features[1]` = 3.5e+38"),
    (b"[1,2,1e308]", "`features[2]` = 1e+308 does not fit float32"),
    (b"[1," + b"1" + b"0" * 39 + b",3]", "`features[1]` = 1e+39 does not fit float32"),
    (b"[1,2,1e309]", "`features[2]`: Number out of range"), (b"[1," + b"9" * 400 + b",3]", "out of range"),
])
def test_bad_features(features: bytes, fragment: str) -> None:
    exc = bad(sample(features=features))
    assert exc.stage == "validate" and fragment in exc.message, exc.message


@pytest.mark.parametrize("features", [b"[NaN,1,2]", b"[Infinity,1,2]", b"[-Infinity,1,2]", b"[1,2,nan]"])
def test_non_json_numbers_are_decode_errors(features: bytes) -> None:
    assert bad(sample(features=features)).stage == "decode"


def test_extreme_but_valid_features() -> None:
    s = dec(sample(features=b"[3.4028234663852886e38,-3.4028234663852886e38,-0.0]"))
    assert s.features[:2] == [F32_MAX, -F32_MAX] and math.copysign(1, s.features[2]) == -1
    assert dec(sample(features=b"[5e-324,9223372036854775808,1e-300]")).features[0] == 5e-324


# --- Sample: ts --------------------------------------------------------------------------------


@pytest.mark.parametrize("ts, expected", [
    (b"0", 0), (b"1700000000000", 1700000000000), (b"1.7e12", 1.7e12), (b"-0.0", -0.0), (b"5e-324", 5e-324),
    (str(MAX_EVENT_MS).encode(), MAX_EVENT_MS), (b"null", None), (b'"2024-01-01T00:00:00Z"', "2024-01-01T00:00:00Z"),
    (b'"2024-01-01T00:00:00.123+05:30"', "2024-01-01T00:00:00.123+05:30"), (b'"2024-01-01"', "2024-01-01"),
    (b'"9999-12-31T23:59:59.999Z"', "9999-12-31T23:59:59.999Z"), (b'"1970-01-01T00:00:00"', "1970-01-01T00:00:00"),
])
def test_valid_ts(ts: bytes, expected: Any) -> None:
    assert dec(sample(b',"ts":' + ts)).ts == expected


@pytest.mark.parametrize("ts", [
    b"1e300", b"-1", b"-1e-300", str(MAX_EVENT_MS + 1).encode(), b"253402300800000.0", b"9223372036854775808",
    b"1" + b"0" * 400, b"true", b"false", b"{}", b"[]", b'"yesterday"', b'""', b'"1969-12-31T23:59:59Z"',
    b'"0001-01-01T00:00:00Z"', b'"9999-12-31T23:59:59-01:00"', b'"2024-13-01"', b'"' + b"2024-01-01 " * 10 + b'"',
    b'"1700000000000"',
])
def test_bad_ts_names_the_field(ts: bytes) -> None:
    exc = bad(sample(b',"ts":' + ts))
    assert exc.stage == "validate" and "`ts`" in exc.message, exc.message


def test_ts_1e300_no_longer_crashes_the_scorer() -> None:
    """Regression: it decoded, then np.array(event_ms, dtype=np.int64) raised OverflowError."""
    value = b'{"id":"a","features":[1,2],"ts":1e300}'
    with pytest.raises(InvalidRecordError, match="`ts`"):
        decode_sample(value, 2, MAX)
    samples, rows, errors, _ = decode_samples([value], 2, MAX)
    assert not samples and errors[0][1].stage == "validate"
    assert event_ms(Sample("a", [1.0], ts=1e300), 5) == 5  # built by hand: still fits int64


# --- Sample: meta ------------------------------------------------------------------------------


def _nest(depth: int) -> bytes:
    return b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


def test_meta_depth_limit() -> None:
    assert dec(sample(b',"meta":' + _nest(META_MAX_DEPTH))).meta is not None
    assert dec(sample(b',"meta":{"a":[[[[[[[1]]]]]]]}')).meta == {"a": [[[[[[[1]]]]]]]}  # depth 8
    exc = bad(sample(b',"meta":' + _nest(META_MAX_DEPTH + 1)))
    assert "`meta` is nested 9 levels deep; the limit is 8" in exc.message
    assert "`meta`" in bad(sample(b',"meta":{"a":[[[[[[[[1]]]]]]]]}')).message


def test_meta_size_limit() -> None:
    at_limit = b'{"s":"' + b"y" * (META_MAX_BYTES - 8) + b'"}'
    assert len(encode(dec(sample(b',"meta":' + at_limit)).meta)) == META_MAX_BYTES
    exc = bad(sample(b',"meta":{"s":"' + b"y" * (META_MAX_BYTES - 7) + b'"}'))
    assert exc.stage == "validate" and "`meta` is 65537 bytes encoded; the limit is 65536" in exc.message
    # re-encoding can grow numbers (1e15 -> 1000000000000000.0): measured, not guessed
    grows = b'{"n":[' + b",".join([b"1e15"] * 4000) + b"]}"
    assert len(grows) < META_MAX_BYTES and "`meta` is" in bad(sample(b',"meta":' + grows)).message


@pytest.mark.parametrize("meta", [b"[1]", b'"x"', b"1", b"true"])
def test_meta_must_be_an_object(meta: bytes) -> None:
    assert "`meta`: Expected `object | null`" in bad(sample(b',"meta":' + meta)).message


def test_meta_may_repeat_schema_key_names() -> None:
    s = dec(sample(b',"meta":{"id":"x","features":1,"ts":2,"meta":{"id":3}}'))
    assert s.id == "a1" and s.meta == {"id": "x", "features": 1, "ts": 2, "meta": {"id": 3}}


# --- duplicate keys ----------------------------------------------------------------------------


@pytest.mark.parametrize("value, path", [
    (b'{"id":"a","id":"b","features":[1,2,3]}', "id"),
    (b'{"id":"a","features":[1,2,3],"features":[1,2,3]}', "features"),
    (sample(b',"ts":1,"ts":2'), "ts"),
    (sample(b',"meta":{},"meta":{}'), "meta"),
    (b'{"\\u0069d":"x","id":"y","features":[1,2,3]}', "id"),  # the screen used to count raw b'"id"'
    (b'{"i\\u0064":"x","\\u0069\\u0064":"y","features":[1,2,3]}', "id"),
    (b'{"id":"x","features":[1,2,3],"\\u0066eatures":[4,5,6]}', "features"),
    (sample(b',"meta":{"a":1,"a":2}'), "meta.a"),
    (sample(b',"meta":{"a":1,"\\u0061":2}'), "meta.a"),
    (sample(b',"meta":{"x":{"y":[{"z":1,"z":1}]}}'), "meta.x.y[0].z"),
    (sample(b',"zz":{"q":1,"q":2}'), "zz.q"),  # inside an unknown field too
    (sample(b',"zz":1,"zz":2'), "zz"),
    (sample(b',"meta":{"u":"http://x","u":"y"}'), "meta.u"),
])
def test_duplicate_keys_at_any_level_escaped_or_not(value: bytes, path: str) -> None:
    exc = bad(value)
    assert exc.stage == "validate" and f"duplicate key `{path}`" in exc.message, exc.message
    samples, _, errors, _ = decode_samples([value], 3, MAX)
    assert not samples and errors[0][1].message == exc.message


@pytest.mark.parametrize("value", [
    b'{"\\u0069d":"x","features":[1,2,3]}',
    b'{"id":"x:y","features":[1,2,3],"ts":"2024-01-01T00:00:00Z","meta":{"a:b":"c:d"}}',
    b'{"id":"\\u003a","features":[1,2,3],"meta":{"k":"\\u003a:"}}',
    b'{"id":"x","features":[1,2,3],"meta":null,"ts":null}',
    b'{ "id" : "x" , "features" : [1,2,3] }',
])
def test_escapes_and_colons_without_duplicates_are_fine(value: bytes) -> None:
    assert dec(value).features == [1.0, 2.0, 3.0]


# --- the batch decoder -------------------------------------------------------------------------

CURATED: list[Any] = [
    sample(), sample(b',"ts":1700000000000,"meta":{"src":"x","seq":1}'), None, b"", b"junk", b"[1]",
    sample(sid=b'""'), sample(sid=b'"a\\u0001"'), sample(features=b"[1,2]"), sample(features=b"[1,2,1e39]"),
    sample(b',"ts":1e300'), sample(b',"ts":"2024-01-01T00:00:00Z"'), sample(b',"ts":"nope"'),
    b'{"\\u0069d":"x","id":"y","features":[1,2,3]}', sample(b',"meta":{"a":1,"a":2}'),
    sample(b',"meta":' + _nest(9)), sample(b',"meta":{"s":"' + b"y" * META_MAX_BYTES + b'"}'),
    sample(b',"meta":{"id":"x"}'), sample(b',"zz":[1,{"a":2}]'), sample(b',"meta":{"u":"a:b"}'),
    sample(b',"meta":null'), sample(sid="\"\u00e9\u200b\"".encode()), bytearray(sample()),
    b"[" * 5000 + b"]" * 5000, sample(b',"pad":"' + b"x" * MAX + b'"'),
]


def _verdict(value: Any) -> tuple[str, Any]:
    return single_verdict(value, 3, MAX)


def test_batch_gives_the_single_decoders_verdict_and_message() -> None:
    got = batch_verdicts(CURATED, 3, MAX)
    assert got == [_verdict(v) for v in CURATED]
    assert sum(v[0] == "ok" for v in got) == 9


# --- event time --------------------------------------------------------------------------------

INT64 = (-(2**63), 2**63 - 1)
any_ts = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=40),
                   st.datetimes(timezones=st.none() | st.just(timezone.utc)).map(lambda d: d.isoformat()),
                   st.lists(st.integers(), max_size=2))


@settings(max_examples=examples(300), deadline=None)
@given(any_ts, st.integers(*INT64) | st.integers())
def test_event_ms_always_fits_int64(ts: Any, fallback: int) -> None:
    ms = event_ms(Sample("a", [1.0], ts=ts), fallback)
    assert type(ms) is int and INT64[0] <= ms <= INT64[1]
    np.array([ms], dtype=np.int64)
    column = event_ms_column([Sample("a", [1.0], ts=ts)], [fallback])
    assert column == [ms]


@pytest.mark.parametrize("ts, expected", [
    (1700000000123, 1700000000123), (1.5e12, 1500000000000), (0, 7), (-5, 7), (True, 7), (None, 7),
    (float("nan"), 7), (float("inf"), 7), (1e300, 7), (2**70, 7), ("garbage", 7),
    ("1970-01-01T00:00:01Z", 1000), ("2024-01-01T00:00:00+01:00", 1704063600000),
    ("2024-01-01T00:00:00", 1704067200000), ("2024-01-01T00:00:00.999999Z", 1704067200999),
    ("9999-12-31T23:59:59.999Z", MAX_EVENT_MS), ("1969-12-31T23:59:59Z", 7),
])
def test_event_ms_values(ts: Any, expected: int) -> None:
    assert event_ms(Sample("a", [1.0], ts=ts), 7) == expected


def test_event_ms_column_fallbacks_by_row() -> None:
    samples = [Sample("a", [1.0], ts=5), Sample("b", [1.0]), Sample("c", [1.0], ts="1970-01-01T00:00:00.002Z")]
    assert event_ms_column(samples, [10, 20, 30]) == [5, 20, 2]
    assert event_ms_column(samples, [0, 100, 200, 300], rows=[3, 2, 1]) == [5, 200, 2]
    assert event_ms(Sample("a", [1.0]), 2**80) == INT64[1]


def test_iso_ts_agrees_with_datetime() -> None:
    for text in ("2021-06-01T12:34:56.789+02:00", "2000-02-29T00:00:00Z", "2038-01-19T03:14:08"):
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        dt = dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
        assert event_ms(dec(sample(b',"ts":"' + text.encode() + b'"')), 0) == round(dt.timestamp() * 1000)


# --- check_features ----------------------------------------------------------------------------


def test_check_features() -> None:
    X = np.zeros((4, 3))
    bad_rows, problem = check_features(X)
    assert problem is None and not bad_rows.any()
    X[1, 2], X[3, 0], X[2, 1] = 1e39, np.nan, F32_MAX
    bad_rows, problem = check_features(X)
    assert bad_rows.tolist() == [False, True, False, True]
    assert isinstance(problem, InvalidRecordError) and problem.stage == "validate"
    assert "`features[2]` = 1e+39 does not fit float32" in problem.message
    assert check_features(np.array([1.0, -np.inf]))[0].tolist() == [True]


# --- predictions and review requests -----------------------------------------------------------

SCORES = ScoreFields(0.5, 0.1, None)


def test_prediction_structs_encode_like_the_dicts_they_replace() -> None:
    assert encode(Prediction("a", "3", 0.9, SCORES, "v1", {"k": [1]})) == encode(
        {"id": "a", "label": "3", "confidence": 0.9, "scores": {"margin": 0.5, "entropy": 0.1, "outlier": None},
         "model_version": "v1", "meta": {"k": [1]}})
    assert encode(ProvisionalPrediction("a", "3", 0.9, SCORES, "v1", None, True, "gate", None)) == encode(
        {"id": "a", "label": "3", "confidence": 0.9, "scores": SCORES, "model_version": "v1", "meta": None,
         "provisional": True, "provisional_reason": "gate", "review_reason": None})


def _review(**over: Any) -> ReviewRequest:
    fields: dict[str, Any] = dict(id="s1", features=[1.0, -0.0, 2.5], reason="uncertain", predicted="7", confidence=0.41,
                  scores=ScoreFields(0.02, 0.9, 1.7), priority=0.59, model_version="v3", meta={"m": 1},
                  top=[TopClass("7", 0.41), TopClass("1", 0.39)])
    fields.update(over)
    return ReviewRequest(**fields)


def test_review_request_encodes_like_the_dict_and_reads_back() -> None:
    r = _review()
    as_dict = {"id": "s1", "features": [1.0, -0.0, 2.5], "reason": "uncertain", "predicted": "7", "confidence": 0.41,
               "scores": {"margin": 0.02, "entropy": 0.9, "outlier": 1.7}, "priority": 0.59, "model_version": "v3",
               "meta": {"m": 1}, "top": [{"label": "7", "p": 0.41}, {"label": "1", "p": 0.39}],
               "annotators": 1, "labelled_by": []}
    assert encode(r) == encode(as_dict)
    assert decode_review(encode(r), MAX) == r
    assert decode_review(encode(_review(meta=None, scores=ScoreFields(0.1, 0.2, None))), MAX).meta is None


def test_review_reader_is_lenient_about_optional_parts() -> None:
    doc = json.loads(encode(_review()))
    del doc["meta"], doc["top"], doc["annotators"], doc["labelled_by"]  # as written before they existed
    doc["extra"] = {"future": True}
    r = decode_review(json.dumps(doc).encode(), MAX)
    assert r.top == [] and r.meta is None and r.id == "s1" and r.annotators == 1 and r.labelled_by == []


@pytest.mark.parametrize("change, fragment", [
    ({"id": 7}, "`id`"), ({"id": ""}, "`id` must be a non-empty string"), ({"id": "a\u0000"}, "`id` contains"),
    ({"features": ["1"]}, "`features[0]`"), ({"features": [1e39]}, "`features[0]` = 1e+39"),
    ({"confidence": "high"}, "`confidence`"), ({"priority": None}, "`priority`"),
    ({"scores": {"margin": 1}}, "`scores`: Object missing required field `entropy`"),
    ({"scores": {"margin": "x", "entropy": 1, "outlier": None}}, "`scores.margin`"),
    ({"top": [{"label": 7, "p": 0.5}]}, "`top[0].label`"), ({"top": {"label": "7"}}, "`top`"),
    ({"meta": [1]}, "`meta`"), ({"reason": None}, "`reason`"), ({"model_version": 3}, "`model_version`"),
    ({"annotators": 0}, "`annotators`"), ({"annotators": 11}, "`annotators`"),
    ({"labelled_by": ["ok", "a\u001b"]}, "`labelled_by[1]`"), ({"labelled_by": "alice"}, "`labelled_by`"),
])
def test_review_reader_checks_types(change: dict[str, Any], fragment: str) -> None:
    doc = {**json.loads(encode(_review())), **change}
    exc = refused(lambda v: decode_review(v, MAX), json.dumps(doc).encode())
    assert exc.stage == "validate" and fragment in exc.message, exc.message


@pytest.mark.parametrize("value, stage", [
    (None, "decode"), (b"{", "decode"), (b"[]", "validate"), (b'{"id":"a"}', "validate"),
])
def test_review_reader_refuses_garbage(value: Optional[bytes], stage: str) -> None:
    assert refused(lambda v: decode_review(v, MAX), value).stage == stage


def test_review_duplicate_keys_at_any_level() -> None:
    raw = encode(_review()).replace(b'"margin":0.02', b'"margin":0.02,"m\\u0061rgin":0.03')
    assert "duplicate key `scores.margin`" in refused(lambda v: decode_review(v, MAX), raw).message
    raw = encode(_review()).replace(b'"p":0.41}', b'"p":0.41,"p":0.5}')
    assert "duplicate key `top[0].p`" in refused(lambda v: decode_review(v, MAX), raw).message


def test_decode_prediction_reads_both_kinds() -> None:
    plain = decode_prediction(encode(Prediction("a", "3", 0.9, SCORES, "v1", None)), MAX)
    assert (plain.label, plain.provisional, plain.review_reason) == ("3", False, None)
    held = decode_prediction(encode(ProvisionalPrediction("a", "3", 0.9, SCORES, "v1", {"k": 1}, True, "gate",
                                                          "uncertain")), MAX)
    assert (held.provisional, held.provisional_reason, held.review_reason, held.meta) == (True, "gate", "uncertain",
                                                                                          {"k": 1})
    assert "`confidence`" in refused(lambda v: decode_prediction(v, MAX), encode(
        {"id": "a", "label": "3", "confidence": None, "scores": SCORES, "model_version": "v1", "meta": None})).message


@pytest.mark.parametrize("path, bad", [
    (("confidence",), 7.0), (("confidence",), -1e308), (("confidence",), 1.0000001), (("scores", "margin"), -0.5),
    (("scores", "margin"), 1e300), (("scores", "entropy"), -1.0), (("scores", "outlier"), -3.0), (("top", 0, "p"), 2.0),
])
def test_scores_out_of_their_ranges_are_refused(path: tuple[Any, ...], bad: float) -> None:
    """Found by tests/fuzz/test_fuzz_monitor.py: a review or prediction with a confidence of 7 or
    -1e308 decoded, and ``triage monitor`` folded it into the version's accuracy estimate (an
    overflow, an estimate of 1e306 for the next window). The scorer writes only probabilities."""
    docs = [json.loads(encode(_review()))]
    if path[0] != "top":
        docs.append(json.loads(encode(Prediction("a", "3", 0.9, ScoreFields(0.5, 0.1, 0.3), "v1", None))))
    for doc, decode in zip(docs, (decode_review, decode_prediction)):
        holder = doc
        for key in path[:-1]:
            holder = holder[key]
        holder[path[-1]] = bad
        exc = refused(lambda v: decode(v, MAX), json.dumps(doc).encode())
        assert exc.stage == "validate" and path[-1] in exc.message, exc.message
    ok = json.loads(encode(_review()))
    ok["confidence"], ok["scores"] = 1.0, {"margin": 0.0, "entropy": 0.0, "outlier": 0.0}
    assert decode_review(json.dumps(ok).encode(), MAX).confidence == 1.0  # the bounds themselves are scores


# --- labels ------------------------------------------------------------------------------------


def lab(value: Any) -> Label:
    return decode_label(value, MAX)


def test_label_decoding() -> None:
    label = lab(b'{"id":"s1","label":"cat","annotator":"alice@example.org","features":[1,2],"ts":1700000000000}')
    assert (label.id, label.label, label.annotator, label.features, label.ts) == (
        "s1", "cat", "alice@example.org", [1.0, 2.0], 1700000000000)
    minimal = lab(b'{"id":"s1","label":"__undo__"}')
    assert minimal.annotator is None and minimal.features is None and minimal.ts is None
    assert lab(b'{"id":"s1","label":"__edge_case__","annotator":""}').annotator == ""
    assert lab(b'{"id":"s1","label":"7","ts":"2024-01-01T00:00:00Z","features":null}').ts == "2024-01-01T00:00:00Z"


@pytest.mark.parametrize("value, fragment", [
    (b'{"label":"x"}', "`id`"), (b'{"id":"a"}', "`label`"), (b'{"id":"a","label":""}', "`label` must be a non-empty"),
    (b'{"id":"a","label":7}', "`label`: Expected `str`"), (b'{"id":"a","label":"x\\u0007"}', "`label` contains"),
    (b'{"id":"a","label":"' + b"x" * 257 + b'"}', "`label` is longer than 256"),
    (b'{"id":"a","label":"x","annotator":"' + b"y" * 257 + b'"}', "`annotator` is longer"),
    (b'{"id":"a","label":"x","annotator":"\\u009b"}', "`annotator` contains"),
    (b'{"id":"a","label":"x","annotator":5}', "`annotator`"),
    (b'{"id":"a","label":"x","features":[1e39]}', "`features[0]` = 1e+39"),
    (b'{"id":"a","label":"x","features":"1,2"}', "`features`"),
    (b'{"id":"a","label":"x","ts":1e300}', "`ts`"), (b'{"id":"a","label":"x","ts":"soon"}', "`ts`"),
    (b'{"id":"a","label":"x","ts":false}', "`ts`"),
    (b'{"id":"a","label":"x","l\\u0061bel":"y"}', "duplicate key `label`"),
    (b'{"id":"a\\tb","label":"x"}', "`id` contains control character U+0009"),
])
def test_bad_labels(value: bytes, fragment: str) -> None:
    exc = refused(lab, value)
    assert exc.stage == "validate" and fragment in exc.message, exc.message


def test_encode_label_is_byte_identical_to_the_annotators_dict() -> None:
    raw = encode_label("s1", "7", annotator="ann", features=[1.0, 2.0], ts=1700000000000)
    assert raw == encode({"id": "s1", "label": "7", "annotator": "ann", "features": [1.0, 2.0], "ts": 1700000000000})
    assert raw == encode(Label("s1", "7", "ann", [1.0, 2.0], 1700000000000))
    assert lab(raw) == Label("s1", "7", "ann", [1.0, 2.0], 1700000000000)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"sample_id": "", "label": "x"}, "`id`"), ({"sample_id": "a\n", "label": "x"}, "`id` contains"),
    ({"sample_id": "a", "label": ""}, "`label`"), ({"sample_id": "a", "label": "x", "features": [float("nan")]},
                                                   "`features[0]`"),
    ({"sample_id": "a", "label": "x", "features": [True]}, "`features[0]`"),
    ({"sample_id": "a", "label": "x", "ts": -1}, "`ts`"), ({"sample_id": "a", "label": "x", "ts": float("inf")}, "`ts`"),
    ({"sample_id": "a", "label": "x", "ts": "later"}, "`ts`"), ({"sample_id": "a", "label": "x", "ts": True}, "`ts`"),
    ({"sample_id": "a\ud800", "label": "x"}, "lone surrogate"),
])
def test_encode_label_refuses_what_decode_label_would(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidRecordError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        encode_label(**kwargs)


# --- label-store rows --------------------------------------------------------------------------


def test_label_rows_are_byte_identical_and_read_back() -> None:
    row = {"id": "s1", "label": "7", "features": [0.1, 1e16, -0.0], "annotator": "\u00e9", "partition": 0, "offset": 9}
    raw = encode_label_row(row)
    assert raw == json.dumps(row, separators=(",", ":")).encode() and raw.isascii() and b"\n" not in raw
    back = decode_label_row(raw)
    assert back == row and math.copysign(1, back["features"][2]) == -1
    old = {"id": "s2", "label": "__edge_case__", "features": [4.0]}  # rows written before annotator/partition/offset
    assert decode_label_row(encode_label_row(old) + b"\n") == old


@pytest.mark.parametrize("row, fragment", [
    ({"label": "x", "features": []}, "`id`"), ({"id": 1, "label": "x", "features": []}, "`id`"),
    ({"id": "a", "label": None, "features": []}, "`label`"), ({"id": "a", "label": "x"}, "`features`"),
    ({"id": "a", "label": "x", "features": ["1"]}, "`features[0]`"),
    ({"id": "a", "label": "x", "features": [1e309]}, "`features[0]`"),
    ({"id": "a", "label": "x", "features": [], "partition": "0"}, "`partition`"),
    ({"id": "a", "label": "x", "features": [], "offset": 1.5}, "`offset`"),
    ({"id": "a", "label": "x", "features": [], "annotator": 3}, "`annotator`"),
])
def test_bad_label_rows(row: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidRecordError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        encode_label_row(row)
    with pytest.raises(InputError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        decode_label_row(json.dumps(row).encode().replace(b"Infinity", b"1e309"))
    with pytest.raises(InvalidRecordError, match="features"):
        encode_label_row({"id": "a", "label": "x", "features": [float("nan")]})


@pytest.mark.parametrize("line, cls", [
    (b"", DecodeError), (b'{"id":"a"', DecodeError), (b"\xff", DecodeError), (b"[]", InvalidRecordError),
    (b'{"id":"a","label":"x","features":[],"id":"b"}', InvalidRecordError), (b'{"id":"a","label":"x","features":[NaN]}',
                                                                            DecodeError),
])
def test_label_row_reader_refuses_garbage(line: bytes, cls: type) -> None:
    with pytest.raises(cls):
        decode_label_row(line)


# --- model events ------------------------------------------------------------------------------

SHA = "ab" * 32
EVENT = {"version": "v3", "sha256": SHA, "path": "models/v3/model.onnx", "action": "promote",
         "metrics": {"accuracy": 0.9, "eval_labels": {"n": 3}}}


def ev(value: Any) -> ModelEvent:
    return decode_model_event(value, MAX)


def test_model_event_round_trip_and_bytes() -> None:
    raw = encode_model_event(EVENT)  # Registry.model_event's dict
    assert raw == encode(EVENT)
    event = ev(raw)
    assert (event.version, event.sha256, event.path, event.action, event.metrics) == (
        "v3", SHA, "models/v3/model.onnx", "promote", EVENT["metrics"])
    assert encode_model_event(event) == raw
    no_metrics = {k: v for k, v in EVENT.items() if k != "metrics"}
    assert ev(json.dumps(no_metrics).encode()).metrics == {}


@pytest.mark.parametrize("change, fragment", [
    ({"version": None}, "`version`"), ({"version": "3"}, "`version`"), ({"version": "v3\n"}, "`version`"),
    ({"version": "v" + "1" * 40}, "`version`"), ({"sha256": "AB" * 32}, "`sha256`"), ({"sha256": "ab"}, "`sha256`"),
    ({"sha256": 5}, "`sha256`"), ({"path": ""}, "`path`"), ({"path": "models/\u0000"}, "`path` contains"),
    ({"path": ["a"]}, "`path`"), ({"action": "delete"}, "`action`"), ({"action": None}, "`action`"),
    ({"metrics": [1]}, "`metrics`"),
])
def test_bad_model_events(change: dict[str, Any], fragment: str) -> None:
    raw = json.dumps({**EVENT, **change}).encode()
    exc = refused(ev, raw)
    assert exc.stage == "validate" and fragment in exc.message, exc.message
    with pytest.raises(InvalidRecordError):
        encode_model_event({**EVENT, **change})


@pytest.mark.parametrize("value, stage", [
    (None, "decode"), (b"", "decode"), (b"not json", "decode"), (b"[]", "validate"), (b"{}", "validate"),
    (json.dumps(EVENT).encode()[:-1] + b',"\\u0061ction":"rollback"}', "validate"),
    (json.dumps(EVENT).encode()[:-3] + b',"n":1}}}', "validate"),  # duplicate inside metrics
])
def test_model_event_garbage(value: Optional[bytes], stage: str) -> None:
    assert refused(ev, value).stage == stage


# --- manifest ----------------------------------------------------------------------------------

MANIFEST = {
    "version": "v2", "sha256": SHA, "path": "models/v2/model.onnx", "status": "current", "classes": ["0", "1"],
    "feature_count": 64, "input_name": "X", "output_name": "probabilities", "output_kind": "probabilities",
    "calibration": {"method": "temperature", "temperature": 1.3}, "outlier": {"mean": [0.0]}, "routing": {},
    "data": {"labels_upto": 3}, "metrics": {"accuracy": 0.9, "ece": float("nan")}, "parent": "v1",
    "created": "2024-01-01T00:00:00Z", "family": "logreg",
}


def test_manifest_reads_what_the_registry_writes() -> None:
    raw = encode_manifest(MANIFEST)
    assert raw == json.dumps(MANIFEST, indent=2, sort_keys=True).encode()
    back = decode_manifest(raw)
    assert back["classes"] == ["0", "1"] and math.isnan(back["metrics"]["ece"])
    assert decode_manifest(raw.decode())["version"] == "v2"
    minimal = {k: MANIFEST[k] for k in ("version", "sha256", "status", "classes", "feature_count")}
    assert decode_manifest(json.dumps(minimal).encode()) == minimal


@pytest.mark.parametrize("change, fragment", [
    ({"version": 2}, "`version`"), ({"sha256": "x" * 64}, "`sha256`"), ({"classes": []}, "`classes`"),
    ({"classes": "01"}, "`classes`"), ({"classes": ["0", 1]}, "`classes[1]`"), ({"classes": ["0", "0"]}, "`classes`"),
    ({"feature_count": 0}, "`feature_count`"), ({"feature_count": True}, "`feature_count`"),
    ({"feature_count": 64.0}, "`feature_count`"), ({"status": "live"}, "`status`"), ({"input_name": ""}, "`input_name`"),
    ({"output_name": 3}, "`output_name`"), ({"output_kind": "scores"}, "`output_kind`"),
    ({"output_kind": None}, "`output_kind`"), ({"calibration": [1]}, "`calibration`"),
    ({"calibration": {"temperature": 0}}, "`calibration.temperature`"),
    ({"calibration": {"temperature": None}}, "`calibration.temperature`"), ({"outlier": 5}, "`outlier`"),
    ({"routing": "x"}, "`routing`"),
])
def test_bad_manifests_name_the_field(change: dict[str, Any], fragment: str) -> None:
    broken = {**MANIFEST, **change}
    with pytest.raises(RegistryError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        decode_manifest(json.dumps(broken).encode())
    with pytest.raises(RegistryError):
        encode_manifest(broken)


@pytest.mark.parametrize("data, fragment", [
    (b"", "not JSON"), (b"{", "not JSON"), (b"\xff", "not JSON"), (b"[]", "JSON object"),
    (b'{"version":"v1","version":"v2"}', "duplicate key `version`"), (b"[" * 100_000, "nested too deeply"),
])
def test_unreadable_manifests(data: bytes, fragment: str) -> None:
    with pytest.raises(RegistryError, match=fragment):
        decode_manifest(data)


# --- dead letters ------------------------------------------------------------------------------


def _batch() -> RecordBatch:
    b = RecordBatch()
    b.append("in", 0, 10, 1_700_000_000_000, b"k0", b"v0")
    b.append("in", 3, 42, 1_700_000_000_123, None, None)
    return b


def test_dead_letter_headers_are_exactly_todays() -> None:
    rec = dead_letter_from_batch(_batch(), 1, InvalidRecordError("`id` must be a non-empty string"), "validate",
                                 "triage.dlq", "v7")
    assert (rec.topic, rec.key, rec.value, rec.source, rec.reason) == ("triage.dlq", None, None, 1, "validate")
    assert rec.headers == [
        ("triage.error.stage", b"validate"), ("triage.error.class", b"ValidationError"),
        ("triage.error.message", b"invalid record: `id` must be a non-empty string"),
        ("triage.source.topic", b"in"), ("triage.source.partition", b"3"), ("triage.source.offset", b"42"),
        ("triage.source.timestamp", b"1700000000123"), ("triage.model_version", b"v7"),
    ]
    direct = dead_letter("triage.dlq", key=None, value=None, error=InvalidRecordError("`id` must be a non-empty string"),
                         stage="validate", source_topic="in", partition=3, offset=42, timestamp_ms=1_700_000_000_123,
                         model_version="v7", source=1)
    assert direct == rec


def test_dead_letter_message_is_at_most_1000_bytes_of_utf8() -> None:
    rec = dead_letter_from_batch(_batch(), 0, RuntimeError("\u00e9" * 999 + "\ud800"), "internal", "dlq", "")
    headers = dict(rec.headers or [])
    message = headers["triage.error.message"]
    assert len(message) == 1000 and message.decode() == "\u00e9" * 500
    assert headers["triage.error.class"] == b"RuntimeError" and headers["triage.error.stage"] == b"internal"
    short = dict(dead_letter_from_batch(_batch(), 0, RuntimeError("x\ud800"), "internal", "dlq", "").headers or [])
    assert short["triage.error.message"] == b"x?"
    empty = dict(dead_letter_from_batch(_batch(), 0, KeyError(), "internal", "dlq", "").headers or [])
    assert empty["triage.error.message"] == b"KeyError()"


def test_dlq_stages_and_unknown_stage() -> None:
    assert DLQ_STAGES == ("decode", "validate", "score", "produce", "label", "internal")
    with pytest.raises(ValueError, match="unknown DLQ stage"):
        dead_letter_from_batch(_batch(), 0, RuntimeError("x"), "parse", "dlq", "v1")


def test_without_payload_and_header_decoding() -> None:
    rec = dead_letter_from_batch(_batch(), 0, DecodeError("junk"), "decode", "dlq", "v1")
    stripped = without_payload(rec, "MSG_SIZE_TOO_LARGE")
    assert (stripped.key, stripped.value, stripped.source, stripped.reason) == (None, b"", 0, "decode")
    text = decode_dlq_headers(stripped.headers)
    assert text["triage.dlq.payload_dropped"] == "key 2 bytes, value 2 bytes: MSG_SIZE_TOO_LARGE"
    assert text["triage.error.stage"] == "decode" and text["triage.source.offset"] == "10"
    assert without_payload(stripped, "again") is stripped
    assert decode_dlq_headers([("a", None), (b"b", b"\xff"), ("a", b"2")]) == {"a": "2", "b": "\ufffd"}
    assert decode_dlq_headers(None) == {}
    assert isinstance(without_payload(OutRecord("dlq", b"k", b"v"), RuntimeError("boom")).headers, list)


# --- the duplicate-key screen against an exact oracle ---------------------------------------


def _oracle_has_duplicate(raw: bytes) -> bool:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in pairs}) != len(pairs):
            raise KeyError("dup")
        return dict(pairs)

    try:
        json.loads(raw, object_pairs_hook=hook)
    except KeyError:
        return True
    return False


@st.composite
def _tricky_samples(draw: st.DrawFn) -> bytes:
    """Valid samples except, maybe, for repeated keys: colons in strings, explicit nulls,
    escaped keys, flat and nested meta, unknown fields -- everything the screen counts."""
    from tests.contract_strategies import Obj, _enc, _escaped_key

    key = st.sampled_from(["a", "b", "a:b", "id", "\u00e9"])
    leaf = st.sampled_from([1, "u:v", None, "x", 2.5, True])
    value = leaf | st.lists(leaf, max_size=2) | st.builds(lambda k, v: Obj([(k, v)]), key, leaf)
    pairs: list[tuple[Any, Any]] = [("id", draw(st.sampled_from(["a", "a:b", "x::y", "\u00e9:", "\\u003a"]))),
                                    ("features", [1.0, 2.0, 3.0])]
    if draw(st.booleans()):
        pairs.append(("ts", draw(st.sampled_from([None, 5, 1.5, "2024-01-01T00:00:00Z", "2024-01-01T00:00"]))))
    if draw(st.booleans()):
        pairs.append(("meta", None if draw(st.booleans()) else Obj(draw(st.lists(st.tuples(key, value), max_size=4)))))
    if draw(st.booleans()):
        pairs.append(("zz", draw(value)))
    if draw(st.booleans()):
        pairs.append(pairs[draw(st.integers(0, len(pairs) - 1))])
    escape = draw(st.lists(st.booleans(), min_size=len(pairs), max_size=len(pairs)))
    pairs = [(_escaped_key(k) if e else k, v) for (k, v), e in zip(pairs, escape)]
    return _enc(Obj(pairs), draw(st.booleans()))


@settings(max_examples=examples(400), deadline=None)
@given(st.lists(_tricky_samples(), min_size=1, max_size=6))
def test_duplicate_screen_agrees_with_an_exact_parser(values: list[bytes]) -> None:
    samples, rows, errors, _ = decode_samples(values, 3, MAX)
    verdicts = {r: None for r in rows}
    verdicts.update({i: e.message for i, e in errors})
    for i, raw in enumerate(values):
        duplicated = _oracle_has_duplicate(raw)
        try:
            dec(raw)
            single = None
        except InvalidRecordError as exc:
            single = exc.message
        assert verdicts[i] == single
        assert (single is not None and "duplicate key" in single) == duplicated, (raw, single)
        assert duplicated or single is None, (raw, single)
