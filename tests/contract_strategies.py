"""Hypothesis strategies for every contract message, built from the Struct schemas.

Valid documents and per-field malformations are derived from ``msgspec.inspect`` of the
Structs in triage.contracts: field types, constraints (``ge``/``le``, lengths, patterns) and the
rules carried in ``Meta.extra`` (``text``, ``format: iso8601``, ``max_depth``, ``max_bytes``,
``length: feature_count``). A new field or constraint in the schema shows up here by itself.

    record_bytes(kind, feature_count)  -> raw values (bytes, or None for a tombstone)
    cases(kind, feature_count)         -> Case(value, mutation, path, expect, doc)

``expect`` is True when the value must decode, False when it must raise an InputError, and
None when this module does not predict it (e.g. a huge int in a free-form ``meta``). Values are
assembled as bytes (escaped and duplicated keys, raw number tokens, invalid UTF-8 are not
expressible as Python dicts), and generation is cheap: long feature vectors come from a seeded
PRNG plus a few drawn edge values.
"""

from __future__ import annotations

import copy
import json
import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Callable, Optional

import msgspec
import numpy as np
from hypothesis import strategies as st
from msgspec import inspect as mi

from triage.contracts.models import SHA256_PATTERN, VERSION_PATTERN
from triage.contracts.retrain_request import RetrainRequest, decode_retrain_request
from triage.contracts import (
    Label, ModelEvent, PredictionRecord, ReviewRequest, Sample, decode_label, decode_model_event, decode_prediction,
    decode_review, decode_sample, decode_samples,
)
from triage.errors import InputError

SCHEMAS: dict[str, type] = {
    "sample": Sample, "label": Label, "review": ReviewRequest, "prediction": PredictionRecord,
    "model_event": ModelEvent, "retrain_request": RetrainRequest,
}
KINDS = tuple(SCHEMAS)


def decoder(kind: str, feature_count: int, max_bytes: int) -> Callable[[Optional[bytes]], Any]:
    """The contract decoder of ``kind`` as a one-argument function."""
    if kind == "sample":
        return lambda v: decode_sample(v, feature_count, max_bytes)
    fn = {"label": decode_label, "review": decode_review, "prediction": decode_prediction,
          "model_event": decode_model_event, "retrain_request": decode_retrain_request}[kind]
    return lambda v: fn(v, max_bytes)


@dataclass(frozen=True)
class Case:
    value: Optional[bytes]
    mutation: str  # "valid", or what was broken
    path: Optional[str]  # the field it targets ("features[2]", "scores.margin", ...)
    expect: Optional[bool]  # True: must decode; False: must raise InputError; None: either
    doc: Optional[dict[str, Any]] = None  # the valid document (mutation "valid" only)


# --- raw JSON assembly -----------------------------------------------------------------------


class Raw:
    """A token written as is (``1e400``, ``"\\ud800"``, invalid UTF-8, deep nesting)."""

    def __init__(self, data: bytes) -> None:
        self.data = data


class Obj:
    """A JSON object as (key, value) pairs: keys may repeat, and a bytes key is written raw."""

    def __init__(self, pairs: list[tuple[Any, Any]]) -> None:
        self.pairs = pairs


_NUMS = (int, float)


def _enc(v: Any, ascii_only: bool) -> bytes:
    if isinstance(v, Raw):
        return v.data
    if isinstance(v, (Obj, dict)):
        pairs = v.pairs if isinstance(v, Obj) else list(v.items())
        return b"{" + b",".join(
            (k if isinstance(k, bytes) else json.dumps(k, ensure_ascii=ascii_only).encode()) + b":" + _enc(x, ascii_only)
            for k, x in pairs) + b"}"
    if isinstance(v, list):
        if all(x.__class__ in _NUMS for x in v):
            return json.dumps(v, separators=(",", ":")).encode()
        return b"[" + b",".join(_enc(x, ascii_only) for x in v) + b"]"
    return json.dumps(v, ensure_ascii=ascii_only).encode()


def _escaped_key(name: str) -> bytes:
    return ('"' + "".join(f"\\u{ord(c):04x}" if c.isascii() else c for c in name) + '"').encode()


# --- the schema --------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _fields(cls: type) -> tuple[mi.Field, ...]:
    return tuple(mi.type_info(cls).fields)  # type: ignore[attr-defined]


def _unwrap(t: Any) -> tuple[Any, dict[str, Any]]:
    extra: dict[str, Any] = {}
    while isinstance(t, mi.Metadata):
        extra.update(t.extra or {})
        t = t.type
    return t, extra


def _members(t: Any) -> list[tuple[Any, dict[str, Any]]]:
    inner, extra = _unwrap(t)
    if isinstance(inner, mi.UnionType):
        return [m for u in inner.types for m in _members(u)]
    return [(inner, extra)]


_KINDS_OF: dict[type, set[str]] = {
    mi.StrType: {"str"}, mi.IntType: {"int"}, mi.FloatType: {"int", "float"}, mi.BoolType: {"bool"},
    mi.NoneType: {"null"}, mi.ListType: {"array"}, mi.DictType: {"object"}, mi.StructType: {"object"},
}


def _json_kinds(t: Any) -> set[str]:
    """The JSON kinds a field type accepts."""
    out: set[str] = set()
    for inner, _ in _members(t):
        if isinstance(inner, mi.AnyType):
            return {"str", "int", "float", "bool", "null", "array", "object"}
        out |= _KINDS_OF.get(type(inner), set())
        if isinstance(inner, mi.LiteralType):
            out |= {"str" if isinstance(x, str) else "int" for x in inner.values}
    return out


_WRONG = {"str": "x", "int": 7, "float": 1.5, "bool": True, "null": None, "array": [1], "object": {"k": 1}}


def _printable(s: str) -> bool:
    return not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF for c in s)


def _str_ok(t: Any, s: str) -> Optional[bool]:
    verdicts = []
    for inner, extra in _members(t):
        if isinstance(inner, mi.AnyType):
            return True
        if isinstance(inner, mi.LiteralType):
            verdicts.append(s in inner.values)
        elif isinstance(inner, mi.StrType):
            ok = (inner.min_length or 0) <= len(s) <= (inner.max_length if inner.max_length is not None else 1 << 30)
            if inner.pattern is not None:
                ok = ok and re.search(inner.pattern, s) is not None
            if extra.get("text"):
                ok = ok and _printable(s)
            if extra.get("format") == "iso8601":
                ok = False  # the strings below are never ISO times
            verdicts.append(ok)
    return any(verdicts)


def _num_ok(t: Any, token: bytes) -> Optional[bool]:
    """Does a raw number token decode into this field type? (msgspec: an integer literal
    goes to the int member of a union if there is one, else to the float member.)"""
    is_int = re.fullmatch(rb"-?\d+", token) is not None
    value = int(token) if is_int else float(token)
    members = _members(t)
    if any(isinstance(m, mi.AnyType) for m, _ in members):
        return None if is_int else value not in (float("inf"), float("-inf"))
    ints = [m for m, _ in members if isinstance(m, mi.IntType)]
    floats = [m for m, _ in members if isinstance(m, mi.FloatType)]
    if is_int and ints:
        i = ints[0]
        return (-(2**63) <= value <= 2**64 - 1 and (i.ge is None or value >= i.ge) and (i.le is None or value <= i.le))
    if floats:
        f = floats[0]
        try:
            x = float(value)
        except OverflowError:
            return False
        return abs(x) != float("inf") and (f.ge is None or x >= f.ge) and (f.le is None or x <= f.le)
    return False


def _deep_ok(t: Any, depth: int) -> Optional[bool]:
    """Does ``{"a": {"a": ... 1}}`` nested ``depth`` objects deep fit this field type?"""
    verdicts: list[Optional[bool]] = []
    for inner, extra in _members(t):
        if isinstance(inner, mi.AnyType):
            return True
        if isinstance(inner, mi.DictType):
            if "max_depth" in extra:
                verdicts.append(depth <= extra["max_depth"])
            else:
                verdicts.append(True if isinstance(_unwrap(inner.value_type)[0], mi.AnyType) else None)
        elif isinstance(inner, mi.StructType):  # {"a": ...} lacks the required fields, if any
            verdicts.append(False if any(f.required for f in inner.fields) else None)
    if True in verdicts:
        return True
    return None if None in verdicts else False


# --- valid values ------------------------------------------------------------------------------

_SCALARS = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
            | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
_KEYS = st.text(max_size=8)


def _json_value(depth: int) -> st.SearchStrategy[Any]:
    if depth <= 0:
        return _SCALARS
    child = _json_value(depth - 1)
    return _SCALARS | st.lists(child, max_size=3) | st.dictionaries(_KEYS, child, max_size=3)


_ISO = st.builds(
    lambda dt, tz, z: (dt.replace(tzinfo=tz).isoformat().replace("+00:00", "Z") if z
                       else (dt.replace(tzinfo=tz) if tz else dt).isoformat()),
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30)),
    st.none() | st.builds(lambda m: timezone(timedelta(minutes=m)), st.integers(-1439, 1439)),
    st.booleans(),
)


# st.from_regex costs ~2 ms per 64-hex-digit string; these patterns have cheap equivalents.
_FAST_PATTERNS: dict[str, st.SearchStrategy[str]] = {
    SHA256_PATTERN: st.binary(min_size=32, max_size=32).map(bytes.hex),
    VERSION_PATTERN: st.integers(1, 10**9).map(lambda n: f"v{n}"),
}


def _vector(item: Any, lo: int, hi: int) -> st.SearchStrategy[list[Any]]:
    """Numbers for a list field: seeded bulk values plus a few drawn edge values, fast for 784."""
    inner, _ = _unwrap(item)
    bound = min(abs(inner.ge) if getattr(inner, "ge", None) is not None else 1e300,
                inner.le if getattr(inner, "le", None) is not None else 1e300)
    edge = st.floats(-bound, bound, allow_nan=False, allow_infinity=False) | st.integers(-(2**53), 2**53)

    def build(n: int, seed: int, edges: list[tuple[int, Any]]) -> list[Any]:
        rng = random.Random(seed)
        out: list[Any] = [round(rng.uniform(-20, 20), rng.randint(0, 17)) if rng.random() < 0.9 else rng.randint(-9, 9)
                          for _ in range(n)]
        for i, x in edges:
            if n:
                out[i % n] = x
        return out

    return st.builds(build, st.integers(lo, hi), st.integers(0, 2**32 - 1),
                     st.lists(st.tuples(st.integers(0, 1 << 16), edge), max_size=3))


def _valid(t: Any, fc: int) -> st.SearchStrategy[Any]:
    inner, extra = _unwrap(t)
    if extra.get("text"):
        alphabet = st.characters(blacklist_categories=("Cc", "Cs"))
        lo, hi = inner.min_length or 0, inner.max_length or 256
        return st.text(alphabet, min_size=lo, max_size=min(hi, 24)) | st.just("x" * hi)
    if extra.get("format") == "iso8601":
        return _ISO
    if "max_depth" in extra:
        return st.dictionaries(_KEYS, _json_value(min(2, extra["max_depth"] - 2)), max_size=4)
    if extra.get("length") == "feature_count":
        return _vector(inner.item_type, fc, fc)
    if isinstance(inner, mi.UnionType):
        return st.one_of([_valid(m, fc) for m in inner.types])
    if isinstance(inner, mi.StrType):
        if inner.pattern in _FAST_PATTERNS:
            return _FAST_PATTERNS[inner.pattern]
        if inner.pattern is not None:
            hi = inner.max_length or 1 << 30
            return st.from_regex(inner.pattern, fullmatch=True).filter(lambda s: len(s) <= hi)
        return st.text(min_size=inner.min_length or 0, max_size=min(inner.max_length or 16, 16))
    if isinstance(inner, mi.IntType):
        lo = inner.ge if inner.ge is not None else -(2**63)
        hi = inner.le if inner.le is not None else 2**63 - 1
        return st.integers(lo, hi) | st.sampled_from([lo, hi])
    if isinstance(inner, mi.FloatType):
        return st.floats(inner.ge, inner.le, allow_nan=False, allow_infinity=False)
    if isinstance(inner, mi.BoolType):
        return st.booleans()
    if isinstance(inner, mi.NoneType):
        return st.none()
    if isinstance(inner, mi.LiteralType):
        return st.sampled_from(inner.values)
    if isinstance(inner, mi.ListType):
        item, _ = _unwrap(inner.item_type)
        if isinstance(item, (mi.FloatType, mi.IntType)):
            return _vector(inner.item_type, inner.min_length or 0, max(fc, inner.min_length or 0))
        return st.lists(_valid(inner.item_type, fc), min_size=inner.min_length or 0, max_size=3)
    if isinstance(inner, mi.DictType):
        return st.dictionaries(_KEYS, _valid(inner.value_type, fc), max_size=3)
    if isinstance(inner, mi.AnyType):
        return _json_value(2)
    if isinstance(inner, mi.StructType):
        return documents(inner.cls, fc)
    raise TypeError(f"no strategy for {inner!r}")


@lru_cache(maxsize=None)
def documents(cls: type, feature_count: int) -> st.SearchStrategy[dict[str, Any]]:
    """Valid documents (plain dicts) of a Struct: required fields always, optional ones maybe."""
    required = {f.encode_name: _valid(f.type, feature_count) for f in _fields(cls) if f.required}
    optional = {f.encode_name: _valid(f.type, feature_count) for f in _fields(cls)
                if not f.required}
    return st.fixed_dictionaries(required, optional=optional)


# --- malformations -----------------------------------------------------------------------------

NUMBER_TOKENS = (b"1e39", b"-1e39", b"3.4028234663852886e38", b"3.5e38", b"1e308", b"-1e308", b"-0.0", b"0",
                 b"-1", b"5e-324", b"9223372036854775807", b"9223372036854775808", b"18446744073709551616",
                 b"-9223372036854775809", b"253402300799999", b"253402300800000", b"1e300", b"1e400",
                 b"1" + b"0" * 400)
STRINGS = ("", "x" * 300, "\u00e9" * 257, "\U0001F600" * 300, "a\x00b", "\x7f", "a\x85b", "\x1b[31mred",
           "tab\there", "\uff29\uff24-\u00e9-\U0001F600-\u200b", "a:b:c", "\\u0069d")
DOC_MUTATIONS = ("tombstone", "empty", "whitespace", "non_object", "truncated", "trailing_garbage", "bom", "utf16",
                 "non_utf8_key", "unknown_fields", "deep_unknown", "oversized", "escaped_keys")
# Hypothesis draws (and shrinks towards) the first entry of sampled_from most: lead with a rich one.
FIELD_MUTATIONS = ("extreme_number", "string", "wrong_type", "null", "missing", "lone_surrogate", "non_utf8_string",
                   "escaped_key", "duplicate_key", "escaped_duplicate_key", "deep_nesting", "very_deep",
                   "wrong_length", "too_big", "inner_duplicate")
VERY_DEEP = 10_000  # far past the recursion limit, yet ~60 KB: under the usual max_bytes


def _targets(cls: type, doc: dict[str, Any]) -> list[tuple[tuple[Any, ...], Any, bool]]:
    """(path, field type, required) for top-level fields and fields of nested Structs present."""
    out: list[tuple[tuple[Any, ...], Any, bool]] = []
    for f in _fields(cls):
        out.append(((f.encode_name,), f.type, f.required))
        value = doc.get(f.encode_name)
        for inner, _ in _members(f.type):
            if isinstance(inner, mi.StructType) and isinstance(value, dict):
                out += [((f.encode_name, g.encode_name), g.type, g.required) for g in inner.fields]
            elif (isinstance(inner, mi.ListType) and isinstance(_unwrap(inner.item_type)[0], mi.StructType)
                  and isinstance(value, list) and value):
                out += [((f.encode_name, 0, g.encode_name), g.type, g.required)
                        for g in _unwrap(inner.item_type)[0].fields]
    return out


def _show(path: tuple[Any, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(path))


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for p in path[:-1]:
        doc = doc[p]
    return doc


def _rekey(parent: dict[str, Any], key: str, pairs_for: Callable[[Any], list[tuple[Any, Any]]]) -> Obj:
    """``parent`` as an Obj whose ``key`` pair is replaced by ``pairs_for(value)``."""
    out: list[tuple[Any, Any]] = []
    for k, v in parent.items():
        out += pairs_for(v) if k == key else [(k, v)]
    return Obj(out)


def _replace(doc: dict[str, Any], path: tuple[Any, ...], new: Any) -> dict[str, Any]:
    """A copy of ``doc`` with the container at ``path[:-1]`` replaced by ``new(container)``."""
    doc = copy.deepcopy(doc)
    if len(path) == 1:
        return new(doc)  # type: ignore[no-any-return]
    holder = _parent(doc, path[:-1])
    holder[path[-2]] = new(holder[path[-2]])
    return doc


@st.composite
def cases(draw: st.DrawFn, kind: str, feature_count: int = 8, max_bytes: int = 100_000) -> Case:
    """One valid or malformed record of ``kind`` with the verdict it must get."""
    cls = SCHEMAS[kind]
    doc = draw(documents(cls, feature_count))
    ascii_only = draw(st.booleans())
    valid = _enc(doc, ascii_only)
    choice = draw(st.sampled_from(("field",) * 16 + DOC_MUTATIONS + ("valid",) * 3))
    if choice == "valid":
        return Case(valid, "valid", None, True, doc)
    if choice != "field":
        value, verdict = _doc_mutation(draw, choice, doc, valid, ascii_only, max_bytes)
        return Case(value, choice, None, verdict)
    path, t, required = draw(st.sampled_from(_targets(cls, doc)))
    present = path[-1] in _parent(doc, path)
    mutation = draw(st.sampled_from(_applicable(t, present)))
    key = path[-1]
    new: Any
    expect: Optional[bool]
    if mutation == "missing":
        mutated = _replace(doc, path, lambda p: {k: v for k, v in p.items() if k != key})
        return Case(_enc(mutated, ascii_only), mutation, _show(path), not required)
    if mutation in ("escaped_key", "duplicate_key", "escaped_duplicate_key"):
        def pairs_for(v: Any) -> list[tuple[Any, Any]]:
            if mutation == "escaped_key":
                return [(_escaped_key(key), v)]
            return [(key, v), (_escaped_key(key) if mutation == "escaped_duplicate_key" else key, v)]
        mutated = _replace(doc, path, lambda p: _rekey(p, key, pairs_for))
        return Case(_enc(mutated, ascii_only), mutation, _show(path), mutation == "escaped_key")
    current = _parent(doc, path).get(key) if present else None
    if mutation == "null":
        new, expect = None, "null" in _json_kinds(t)
    elif mutation == "wrong_type":
        kind_name = draw(st.sampled_from(sorted(set(_WRONG) - _json_kinds(t))))
        new, expect = _WRONG[kind_name], False
    elif mutation == "extreme_number":
        token = draw(st.sampled_from(NUMBER_TOKENS))
        lists = [m for m, _ in _members(t) if isinstance(m, mi.ListType)]
        if lists and isinstance(current, list) and current:
            i = draw(st.integers(0, len(current) - 1))
            new = [Raw(token) if j == i else x for j, x in enumerate(current)]
            expect = _num_ok(lists[0].item_type, token)
        else:
            new, expect = Raw(token), _num_ok(t, token)
    elif mutation == "string":
        s = draw(st.sampled_from(STRINGS))
        new, expect = s, _str_ok(t, s)
    elif mutation == "lone_surrogate":
        new, expect = Raw(b'"a\\ud800b"'), False
    elif mutation == "non_utf8_string":
        new, expect = Raw(draw(st.sampled_from([b'"a\xffb"', b'"\xc0\xaf"', b'"\xed\xa0\x80"']))), False
    elif mutation == "deep_nesting":
        depth = draw(st.sampled_from([2, 8, 9, 12, 40]))
        nested: Any = 1
        for _ in range(depth):
            nested = {"a": nested}
        new, expect = nested, _deep_ok(t, depth)
    elif mutation == "very_deep":
        new, expect = Raw(b'{"a":' * VERY_DEEP + b"1" + b"}" * VERY_DEEP), False
    elif mutation == "wrong_length":
        n = draw(st.sampled_from([0, max(feature_count - 1, 0), feature_count + 1]))
        new, expect = [1.0] * n, n == feature_count
    elif mutation == "too_big":
        limit = next(e["max_bytes"] for _, e in _members(t) if "max_bytes" in e)
        new, expect = {"s": "y" * (limit + 1)}, False
    else:  # inner_duplicate
        new, expect = Obj([("k", 1), ("k", 2)]), False
    mutated = _replace(doc, path, lambda p: {**p, key: new} if isinstance(p, dict) else p)
    return Case(_enc(mutated, ascii_only), mutation, _show(path), expect)


def _applicable(t: Any, present: bool) -> list[str]:
    members = _members(t)
    kinds = _json_kinds(t)
    out = []
    for m in FIELD_MUTATIONS:
        if m in ("missing", "escaped_key", "duplicate_key", "escaped_duplicate_key") and not present:
            continue
        if m == "wrong_type" and not set(_WRONG) - kinds:
            continue
        if m == "wrong_length" and not any(e.get("length") == "feature_count" for _, e in members):
            continue
        if m == "too_big" and not any("max_bytes" in e for _, e in members):
            continue
        if m == "inner_duplicate" and ("object" not in kinds or any(isinstance(x, mi.StructType) for x, _ in members)):
            continue
        out.append(m)
    return out


def _doc_mutation(draw: st.DrawFn, choice: str, doc: dict[str, Any], valid: bytes, ascii_only: bool,
                  max_bytes: int) -> tuple[Optional[bytes], Optional[bool]]:
    if choice == "tombstone":
        return None, False
    if choice == "empty":
        return b"", False
    if choice == "whitespace":
        return b" \n\t ", False
    if choice == "non_object":
        return draw(st.sampled_from([b"42", b"[]", b'"s"', b"null", b"true", b"[1,2]", b"-0.0", b"1e400"])), False
    if choice == "truncated":
        return valid[:draw(st.integers(0, len(valid) - 1))], False
    if choice == "trailing_garbage":
        return valid + draw(st.sampled_from([b" x", b"{}", b",", b"\x00"])), False
    if choice == "bom":
        return b"\xef\xbb\xbf" + valid, False
    if choice == "utf16":
        return valid.decode("utf-8").encode(draw(st.sampled_from(["utf-16", "utf-32"]))), False
    if choice == "non_utf8_key":
        return b'{"\xff":1' + (b"," + valid[1:] if valid != b"{}" else b"}"), False
    if choice == "unknown_fields":
        extra = draw(st.dictionaries(st.text(min_size=1, max_size=8).map(lambda k: "zz_" + k), _json_value(2),
                                     min_size=1, max_size=3))
        return _enc({**doc, **extra}, ascii_only), True
    if choice == "deep_unknown":
        return _enc(Obj([*doc.items(), ("zz", Raw(b"[" * VERY_DEEP + b"]" * VERY_DEEP))]), ascii_only), False
    if choice == "oversized":
        return _enc({**doc, "zz_pad": "x" * (max_bytes + 1)}, ascii_only), False
    if choice == "escaped_keys":
        return _enc(Obj([(_escaped_key(k), v) for k, v in doc.items()]), ascii_only), True
    raise ValueError(choice)


def record_bytes(kind: str, feature_count: int = 8, max_bytes: int = 100_000) -> st.SearchStrategy[Optional[bytes]]:
    """Raw values of ``kind`` (sample, label, review, prediction, model_event, retrain_request): valid ones and
    ones malformed per field and as a whole; None is a tombstone."""
    return cases(kind, feature_count, max_bytes).map(lambda c: c.value)


def valid_record_bytes(kind: str, feature_count: int = 8) -> st.SearchStrategy[bytes]:
    return st.tuples(documents(SCHEMAS[kind], feature_count), st.booleans()).map(lambda d: _enc(d[0], d[1]))


def builtins(value: Any) -> Any:
    """A decoded Struct as plain JSON values, to compare with the document it came from."""
    return msgspec.to_builtins(value)


def batch_verdicts(values: list[Any], feature_count: int, max_bytes: int) -> list[tuple[str, Any]]:
    """decode_samples' verdict per record: ("ok", (id, features, ts, meta)) or (stage, message).
    The features come from the batch's matrix, so they are checked against the record too."""
    samples, rows, errors, X = decode_samples(values, feature_count, max_bytes)
    assert X.shape == (len(samples), feature_count) and X.dtype == np.float64
    got: dict[int, tuple[str, Any]] = {r: ("ok", (s.id, X[j].tolist(), s.ts, s.meta))
                                       for j, (s, r) in enumerate(zip(samples, rows))}
    got.update({i: (e.stage, e.message) for i, e in errors})
    assert sorted(got) == list(range(len(values))) and rows == sorted(rows)
    return [got[i] for i in range(len(values))]


def single_verdict(value: Any, feature_count: int, max_bytes: int) -> tuple[str, Any]:
    """decode_sample's verdict, in batch_verdicts' form."""
    try:
        s = decode_sample(value, feature_count, max_bytes)
        return "ok", (s.id, s.features, s.ts, s.meta)
    except InputError as exc:
        return exc.stage, exc.message
