"""A corpus of broken (and a few odd-but-valid) input records, each with its expected outcome.

``stage`` is the DLQ stage the record must end in; ``None`` means the record is valid and
must be scored normally (odd headers, huge-but-allowed strings, ...). Every case is built
from a good sample so each one breaks exactly one thing.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Optional

Headers = list[tuple[str, bytes]]
DEEP = 100_000  # nesting levels: far past any recursion limit


@dataclass(frozen=True)
class Case:
    name: str
    value: Optional[bytes]
    stage: Optional[str]  # expected DLQ stage; None = valid, must be scored
    key: Optional[bytes] = None
    headers: Headers = field(default_factory=list)


def _good(n: int, sid: str = "ok") -> dict[str, object]:
    return {"id": sid, "features": [float(i % 17) for i in range(n)]}


def _j(doc: object) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


def corpus(n_features: int, max_bytes: int, seed: int = 0) -> list[Case]:
    """At least 30 kinds of broken records for a model with ``n_features`` inputs and a
    scorer with ``max_message_bytes=max_bytes``."""
    rng = random.Random(seed)
    f = ",".join(str(i % 17) for i in range(n_features)).encode()
    good = b'{"id":"ok","features":[' + f + b"]}"
    feats_n = [1.0] * n_features
    cases = [
        # --- bytes that are not UTF-8 JSON ------------------------------------------------
        Case("invalid_utf8_in_string", good.replace(b'"ok"', b'"o\xffk"'), "decode"),
        Case("overlong_utf8", good.replace(b'"ok"', b'"\xc0\xaf"'), "decode"),
        Case("utf8_encoded_surrogate", good.replace(b'"ok"', b'"\xed\xa0\x80"'), "decode"),
        Case("lone_surrogate_escape", good.replace(b'"ok"', b'"\\ud800"'), "decode"),
        Case("binary_garbage", bytes(rng.getrandbits(8) for _ in range(512)), "decode"),
        Case("nul_bytes", b"\x00" * 64, "decode"),
        Case("bom_prefixed_json", b"\xef\xbb\xbf" + good, "decode"),
        Case("utf16_json", good.decode().encode("utf-16"), "decode"),
        Case("utf32_json", good.decode().encode("utf-32"), "decode"),
        Case("empty_value", b"", "decode"),
        Case("whitespace_only", b" \n\t ", "decode"),
        Case("tombstone_null_value", None, "decode", key=b"tombstone"),
        Case("tombstone_without_key", None, "decode", key=None),
        # --- malformed JSON ---------------------------------------------------------------
        Case("truncated_json", good[: len(good) // 2], "decode"),
        Case("trailing_garbage", good + b" xyz", "decode"),
        Case("two_objects", good + good, "decode"),
        Case("single_quotes", good.replace(b'"', b"'"), "decode"),
        Case("comment", good.replace(b"{", b"{/* hi */", 1), "decode"),
        Case("trailing_comma", good[:-1] + b",}", "decode"),
        Case("nan_token", good.replace(b"[0,", b"[NaN,", 1), "decode"),
        Case("infinity_token", good.replace(b"[0,", b"[Infinity,", 1), "decode"),
        Case("minus_infinity_token", good.replace(b"[0,", b"[-Infinity,", 1), "decode"),
        Case("deep_nesting_top", b"[" * DEEP + b"]" * DEEP, "validate"),
        Case("deep_nesting_meta", good[:-1] + b',"meta":' + b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"}", "decode"),
        Case("deep_nesting_unknown_field", good[:-1] + b',"x":' + b"[" * DEEP + b"]" * DEEP + b"}", "decode"),
        # --- JSON that is not a sample ----------------------------------------------------
        Case("json_number", b"42", "validate"),
        Case("json_string", b'"hello"', "validate"),
        Case("json_null", b"null", "validate"),
        Case("json_bool", b"true", "validate"),
        Case("json_array", b"[1, 2, 3]", "validate"),
        Case("json_empty_object", b"{}", "validate"),
        Case("duplicate_id_key", b'{"id":"a","id":"b","features":[' + f + b"]}", "validate"),
        Case("duplicate_features_key", b'{"id":"a","features":[' + f + b'],"features":[' + f + b"]}", "validate"),
        Case("id_missing", _j({"features": feats_n}), "validate"),
        Case("id_int", _j({"id": 7, "features": feats_n}), "validate"),
        Case("id_null", _j({"id": None, "features": feats_n}), "validate"),
        Case("id_empty", _j({"id": "", "features": feats_n}), "validate"),
        Case("id_array", _j({"id": ["a"], "features": feats_n}), "validate"),
        Case("id_object", _j({"id": {"a": 1}, "features": feats_n}), "validate"),
        Case("features_missing", _j({"id": "a"}), "validate"),
        Case("features_string", _j({"id": "a", "features": "1,2,3"}), "validate"),
        Case("features_null", _j({"id": "a", "features": None}), "validate"),
        Case("features_object", _j({"id": "a", "features": {"0": 1}}), "validate"),
        Case("features_empty", _j({"id": "a", "features": []}), "validate"),
        Case("features_too_short", _j({"id": "a", "features": feats_n[:-1]}), "validate"),
        Case("features_too_long", _j({"id": "a", "features": feats_n + [1.0]}), "validate"),
        Case("feature_string", _j({"id": "a", "features": ["1"] + feats_n[1:]}), "validate"),
        Case("feature_null", _j({"id": "a", "features": [None] + feats_n[1:]}), "validate"),
        Case("feature_bool", _j({"id": "a", "features": [True] + feats_n[1:]}), "validate"),
        Case("feature_nested", _j({"id": "a", "features": [[1.0]] + feats_n[1:]}), "validate"),
        Case("feature_1e309", good.replace(b"[0,", b"[1e309,", 1), "validate"),
        Case("feature_huge_integer", good.replace(b"[0,", b"[1" + b"0" * 400 + b",", 1), "validate"),
        Case("feature_nan_string", _j({"id": "a", "features": ["NaN"] + feats_n[1:]}), "validate"),
        Case("meta_not_object", _j({**_good(n_features), "meta": [1]}), "validate"),
        Case("ts_object", _j({**_good(n_features), "ts": {}}), "validate"),
        Case("ts_bool", _j({**_good(n_features), "ts": True}), "validate"),
        Case("oversized", _j({**_good(n_features), "pad": "x" * (max_bytes + 1)}), "validate"),
        # --- does not fit float32, the model's input type ----------------------------------
        Case("feature_overflows_float32", _j({"id": "a", "features": [1e308] * n_features}), "validate"),
        # --- fits float32, but the model's float32 math overflows --------------------------
        Case("features_overflow_model_math", _j({"id": "a", "features": [3e38] * n_features}), "score"),
        # --- odd keys and headers: the body decides ---------------------------------------
        Case("garbage_headers_bad_body", b"\x00garbage", "decode",
             headers=[("\u2603", b"\xff\xfe"), ("", b""), ("x" * 300, bytes(range(256)))]),
        Case("huge_key_bad_body", b"{", "decode", key=b"k" * 100_000),
        # valid records that look odd: must be scored normally
        Case("garbage_headers_valid_body", good.replace(b'"ok"', b'"hdr"'), None,
             headers=[("\u2603", b"\xff\xfe"), ("", b""), ("triage.error.stage", b"decode")]),
        Case("null_key_valid_body", good.replace(b'"ok"', b'"nokey"'), None, key=None),
        Case("big_meta_under_limit", _j({**_good(n_features, "big"), "meta": {"s": "y" * 60_000}}), None),
        Case("meta_over_64kib", _j({**_good(n_features, "bigger"), "meta": {"s": "y" * (max_bytes // 2)}}), "validate"),
        Case("unknown_fields", _j({**_good(n_features, "extra"), "zzz": [1, {"a": None}]}), None),
        Case("deep_meta_allowed", _j({**_good(n_features, "deep6"), "meta": _nest(6)}), None),
        Case("meta_too_deep", _j({**_good(n_features, "deep50"), "meta": _nest(50)}), "validate"),
        Case("tiny_subnormal_features", _j({"id": "subnormal", "features": [5e-324] * n_features}), None),
    ]
    return cases


def _nest(depth: int) -> dict[str, object]:
    doc: dict[str, object] = {"leaf": 1}
    for _ in range(depth):
        doc = {"a": doc}
    return doc


def kinds_broken(cases: list[Case]) -> int:
    return sum(1 for c in cases if c.stage is not None)
