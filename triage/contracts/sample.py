"""Sample (format 1): the record the scorer reads from the samples topic.

    {"id": str, "features": [number, ...], "ts"?: epoch ms | ISO-8601 string, "meta"?: object}

Unknown fields are ignored. The single-record and the batch decoder give the same verdict
and the same message for every input.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, NamedTuple, Optional, Protocol, Sequence

import msgspec
import numpy as np

from triage.contracts._base import (
    F32_MAX, INT64_MAX, INT64_MIN, MAX_EVENT_MS, META_SIZE_SCREEN, Float32, Id, MetaDict, Ts, check_struct,
    decode_with, iso_ms,
)
from triage.contracts.feature_matrix import parse_feature_rows
from triage.errors import InputError, InvalidRecordError


class Sample(msgspec.Struct):
    SCHEMA_VERSION: ClassVar[int] = 1

    id: Id
    features: Annotated[list[Float32], msgspec.Meta(extra={"length": "feature_count"})]
    ts: Ts = None
    meta: Optional[MetaDict] = None


_decoder = msgspec.json.Decoder(Sample)


def _check(raw: bytes, sample: Sample, feature_count: int) -> None:
    """Every rule msgspec's types cannot express, in a fixed order (so messages are stable)."""
    if len(sample.features) != feature_count:
        raise InvalidRecordError(f"`features` has {len(sample.features)} values; the model takes {feature_count}")
    check_struct(raw, sample)


def decode_sample(value: Optional[bytes], feature_count: int, max_bytes: int) -> Sample:
    """Bytes -> Sample, or the InputError (DecodeError / InvalidRecordError) that says why not."""
    raw, sample = decode_with(_decoder, value, max_bytes, "sample")
    _check(raw, sample, feature_count)
    return sample  # type: ignore[no-any-return]


class _SampleHead(msgspec.Struct):
    """A Sample whose ``features`` stay raw JSON: the batch decoder parses them all at once."""

    id: Id
    features: msgspec.Raw
    ts: Ts = None
    meta: Optional[MetaDict] = None


_head_decoder = msgspec.json.Decoder(_SampleHead)


class SampleFields(Protocol):
    """What a decoded sample offers besides its features (which are rows of the matrix)."""

    id: str
    ts: Any
    meta: Optional[dict[str, Any]]


class DecodedSamples(NamedTuple):
    samples: list[SampleFields]
    rows: list[int]  # each sample's index in the batch
    errors: list[tuple[int, InputError]]  # (index, why) for the records refused
    features: np.ndarray  # float64, one row per sample


def decode_samples(values: Sequence[Optional[bytes]], feature_count: int, max_bytes: int) -> DecodedSamples:
    """A batch of values -> its samples, their features as one matrix, and the refusals.

    Exactly as strict as ``decode_sample``, record by record. A record takes the fast path only
    when cheap tests prove every check of ``_check`` passes (printable id, valid ts, flat meta in
    a small record, ':' count equal to the keys seen -- plus the ':' in its strings when there
    are no escapes -- so no key repeats: see _base.check_duplicates) and its raw features pass
    feature_matrix's screen and parse. Every other record goes through ``decode_sample``,
    whose verdict and message it gets.
    """
    decode = _head_decoder.decode
    heads: list[_SampleHead] = []
    head_rows: list[int] = []
    slow: list[int] = []
    for i, value in enumerate(values):
        if value.__class__ is bytes and len(value) <= max_bytes:
            try:
                head = decode(value)
            except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
                head = None
            if head is not None and _plain(value, head):
                heads.append(head)
                head_rows.append(i)
                continue
        slow.append(i)
    X, parsed = parse_feature_rows([h.features for h in heads], feature_count)
    if not slow and parsed.all():  # the common case: nothing to merge
        return DecodedSamples(heads, head_rows, [], X)  # type: ignore[arg-type]
    slow = sorted(slow + [r for r, ok in zip(head_rows, parsed) if not ok])
    kept = [(r, h) for h, r, ok in zip(heads, head_rows, parsed) if ok]  # X's rows, in order
    fast = {r: (h, k) for k, (r, h) in enumerate(kept)}
    samples: list[SampleFields] = []
    rows: list[int] = []
    errors: list[tuple[int, InputError]] = []
    slow_rows: dict[int, Sample] = {}
    for i in slow:
        try:
            slow_rows[i] = decode_sample(values[i], feature_count, max_bytes)
        except InputError as exc:
            errors.append((i, exc))
    for i in sorted([*fast, *slow_rows]):
        samples.append(fast[i][0] if i in fast else slow_rows[i])
        rows.append(i)
    matrix = np.empty((len(rows), feature_count))
    for j, i in enumerate(rows):
        matrix[j] = X[fast[i][1]] if i in fast else slow_rows[i].features
    return DecodedSamples(samples, rows, errors, matrix)


def _plain(value: bytes, head: _SampleHead) -> bool:
    """True when cheap tests prove the head passes every check of ``check_struct``."""
    sid, ts, meta = head.id, head.ts, head.meta
    if not sid.isprintable() or (ts.__class__ is str and iso_ms(ts) is None):
        return False
    keys = 2 if ts is None else 3
    if meta is not None:
        keys += 1 + len(meta)
        if len(value) > META_SIZE_SCREEN:
            return False
        for v in meta.values():
            if v.__class__ is dict or v.__class__ is list:
                return False
    found = value.count(b":")
    # ':' inside strings (ISO ts, URLs), or a repeated key
    return found == keys or (b"\\" not in value and found == keys + _colons(sid, ts, meta))


def _colons(sid: str, ts: Any, meta: Optional[dict[str, Any]]) -> int:
    """':' inside the strings of a sample whose meta is flat (see decode_samples)."""
    n = sid.count(":") + (ts.count(":") if ts.__class__ is str else 0)
    if meta:
        for k, v in meta.items():
            n += k.count(":") + (v.count(":") if v.__class__ is str else 0)
    return n


def check_features(X: np.ndarray) -> tuple[np.ndarray, Optional[InvalidRecordError]]:
    """(bad-row mask, error naming the first bad value) for a feature matrix built outside
    the decoders: every value must be finite and fit float32 (the model's input type)."""
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    # Common case: two reductions and no temporary array (NaN propagates and fails them).
    if X.size == 0 or (-F32_MAX <= X.min() and X.max() <= F32_MAX):
        return np.zeros(len(X), dtype=bool), None
    with np.errstate(invalid="ignore"):
        ok = np.abs(X) <= F32_MAX  # False for NaN and +-inf too
    bad = ~ok.all(axis=1)
    if not bad.any():
        return bad, None
    r = int(np.flatnonzero(bad)[0])
    c = int(np.flatnonzero(~ok[r])[0])
    return bad, InvalidRecordError(f"`features[{c}]` = {float(X[r, c])!r} does not fit float32")


# --- event time ------------------------------------------------------------------------------


class HasTs(Protocol):
    ts: Any


def _clamp(ms: int) -> int:
    return INT64_MIN if ms < INT64_MIN else INT64_MAX if ms > INT64_MAX else ms


def event_ms(sample: HasTs, fallback_ms: int) -> int:
    """Event time in epoch ms, always within int64: a positive numeric ``ts`` (as today, 0
    means "not set"), a valid ISO-8601 ``ts``, else ``fallback_ms`` (the broker timestamp)."""
    ts = sample.ts
    if isinstance(ts, (int, float)) and not isinstance(ts, bool):
        if 0 < ts <= MAX_EVENT_MS:  # False for NaN; caps 1e300 and friends
            return int(ts)
    elif isinstance(ts, str):
        ms = iso_ms(ts)
        if ms is not None:
            return ms
    try:
        return _clamp(int(fallback_ms))
    except (TypeError, ValueError, OverflowError):
        return 0


def event_ms_column(samples: Sequence[HasTs], fallback: Sequence[int],
                    rows: Optional[Sequence[int]] = None) -> list[int]:
    """``event_ms`` for each sample; its fallback is ``fallback[j]`` (aligned with ``samples``)
    or ``fallback[rows[j]]`` when ``rows`` is given. Ready for ``np.array(..., np.int64)``."""
    out: list[int] = []
    append = out.append
    for j, sample in enumerate(samples):
        ts = sample.ts
        if ts.__class__ is int and 0 < ts <= MAX_EVENT_MS:  # the common case, without a call
            append(ts)
        else:
            append(event_ms(sample, fallback[rows[j] if rows is not None else j]))
    return out
