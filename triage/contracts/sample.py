"""Sample (format 1): the record the scorer reads from the samples topic.

    {"id": str, "features": [number, ...], "ts"?: epoch ms | ISO-8601 string, "meta"?: object}

Unknown fields are ignored. The single-record and the batch decoder give the same verdict
and the same message for every input.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Optional, Protocol, Sequence

import msgspec
import numpy as np

from triage.contracts._base import (
    F32_MAX, INT64_MAX, INT64_MIN, MAX_EVENT_MS, META_SIZE_SCREEN, Float32, Id, MetaDict, Ts, check_struct,
    decode_with, iso_ms,
)
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


def decode_samples(
    values: Sequence[Optional[bytes]], feature_count: int, max_bytes: int
) -> tuple[list[Sample], list[int], list[tuple[int, InputError]]]:
    """A batch of values -> (samples, their row indices, (row, error) for the rest).

    Exactly as strict as ``decode_sample``: the loop takes a record outright only when cheap
    tests prove every check of ``_check`` passes (feature count, printable id, valid ts, flat
    meta in a small record, ':' count equal to the keys seen -- plus the ':' in its strings
    when there are no escapes -- so no key repeats: see _base.check_duplicates). Anything else gets the full checks; a record msgspec refuses is
    re-decoded by ``decode_sample`` for its message.
    """
    decode = _decoder.decode
    samples: list[Sample] = []
    rows: list[int] = []
    errors: list[tuple[int, InputError]] = []
    append, append_row = samples.append, rows.append
    for i, value in enumerate(values):
        if value.__class__ is bytes and len(value) <= max_bytes:
            try:
                sample = decode(value)
            except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
                sample = None
            if sample is not None:
                sid, ts, meta = sample.id, sample.ts, sample.meta
                fast = len(sample.features) == feature_count and sid.isprintable()
                if fast:
                    keys = 2 if ts is None else 3
                    if ts.__class__ is str and iso_ms(ts) is None:
                        fast = False
                    if meta is not None:
                        keys += 1 + len(meta)
                        if len(value) > META_SIZE_SCREEN:
                            fast = False
                        for v in meta.values():
                            if v.__class__ is dict or v.__class__ is list:
                                fast = False
                                break
                    if fast:
                        found = value.count(b":")
                        if found != keys:  # ':' inside strings (ISO ts, URLs), or a repeated key
                            fast = b"\\" not in value and found == keys + _colons(sid, ts, meta)
                if not fast:
                    try:
                        _check(value, sample, feature_count)
                    except InputError as exc:
                        errors.append((i, exc))
                        continue
                append(sample)
                append_row(i)
                continue
        try:
            append(decode_sample(value, feature_count, max_bytes))
            append_row(i)
        except InputError as exc:
            errors.append((i, exc))
    return samples, rows, errors


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
