"""Many samples' raw ``features`` JSON -> one float64 matrix, in one simdjson call.

msgspec would turn each sample's 64 numbers into 64 Python floats, and numpy would then copy
them into the batch array: ~3 us per sample. Here the raw arrays are joined into one document
and simdjson writes every number straight into a buffer of doubles (~0.7 us per sample).

simdjson flattens nested arrays and cannot say which row a bad value came from, so rows are
screened first, with byte counts, for the one shape it must see: ``[`` + exactly
``feature_count`` elements + ``]``, no nesting. A row that fails the screen, or whose parse
fails (a string, ``true``, a number out of range: found by parsing halves), is not judged here:
the caller sends it through the full per-record decoder, which gives the contract's verdict and
message.
Both parsers round decimal to double exactly, so a row parsed here equals msgspec's parse.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import simdjson

from triage.contracts._base import F32_MAX

_OPEN, _CLOSE, _COMMA = ord("["), ord("]"), ord(",")
# What pysimdjson raises for a document that is not an array of numbers (TypeError), a bad
# number (ValueError) or an integer beyond 64 bits (RuntimeError).
_PARSE_ERRORS = (ValueError, TypeError, RuntimeError)


def parse_feature_rows(raws: Sequence[bytes], feature_count: int) -> tuple[np.ndarray, np.ndarray]:
    """(X, ok): X has one row per True in ``ok``, in order; rows with ``ok`` False are left to
    the full decoder. ``raws`` are JSON values (msgspec.Raw or bytes) as msgspec found them."""
    ok = _screen(raws, feature_count)
    if not ok.all():
        raws = [r for r, good in zip(raws, ok) if good]
    X, parsed = _parse_halves(raws, feature_count)
    if not parsed.all():  # values simdjson cannot take (strings, true, 1e400): the full decoder says why
        ok[np.flatnonzero(ok)[~parsed]] = False
    # The contract's float32 bound (msgspec enforces it while parsing; the message is its own).
    if X.size and not (-F32_MAX <= X.min() and X.max() <= F32_MAX):
        fits = (np.abs(X) <= F32_MAX).all(axis=1)
        ok[np.flatnonzero(ok)[~fits]] = False
        X = X[fits]
    return X, ok


def _screen(raws: Sequence[bytes], feature_count: int) -> np.ndarray:
    """Rows that are one flat array of ``feature_count`` comma-separated elements."""
    if len(raws) < VECTOR_ROWS:  # a dozen numpy calls cost ~25 us: more than counting a few rows
        return np.fromiter((_plain_row(bytes(r), feature_count) for r in raws), bool, len(raws))
    return _screen_vectorized(raws, feature_count)


VECTOR_ROWS = 32


def _plain_row(raw: bytes, feature_count: int) -> bool:
    return (raw[:1] == b"[" and raw.count(b"[") == 1 and raw.count(b"]") == 1
            and raw.count(b",") == feature_count - 1)


def _screen_vectorized(raws: Sequence[bytes], feature_count: int) -> np.ndarray:
    """``_plain_row`` for every row at once, by byte counts over the joined rows."""
    n = len(raws)
    joined = np.frombuffer(b",".join(raws), np.uint8)
    lengths = np.fromiter(map(len, raws), np.intp, n)
    starts = np.zeros(n + 1, np.intp)
    np.cumsum(lengths + 1, out=starts[1:])  # row k spans starts[k] .. starts[k] + lengths[k]
    ends = starts[:-1] + lengths

    def per_row(byte: int) -> np.ndarray:
        at = np.flatnonzero(joined == byte)
        return np.searchsorted(at, ends) - np.searchsorted(at, starts[:-1])

    firsts = joined[np.minimum(starts[:-1], len(joined) - 1)]
    return ((lengths > 0) & (firsts == _OPEN) & (per_row(_OPEN) == 1) & (per_row(_CLOSE) == 1)
            & (per_row(_COMMA) == feature_count - 1))


def _parse_halves(raws: Sequence[bytes], feature_count: int) -> tuple[np.ndarray, np.ndarray]:
    """(X of the rows that parse, which rows did): a parse that fails is retried on each half, so
    one bad row costs ~2 log2(n) parses and leaves the others on this path."""
    X = _parse(raws, feature_count)
    if X is not None:
        return X, np.ones(len(raws), dtype=bool)
    if len(raws) == 1:
        return np.empty((0, feature_count)), np.zeros(1, dtype=bool)
    mid = len(raws) // 2
    (X1, ok1), (X2, ok2) = _parse_halves(raws[:mid], feature_count), _parse_halves(raws[mid:], feature_count)
    return np.concatenate([X1, X2]), np.concatenate([ok1, ok2])


def _parse(raws: Sequence[bytes], feature_count: int) -> Optional[np.ndarray]:
    if not raws:
        return np.empty((0, feature_count))
    try:
        doc = simdjson.Parser().parse(b"[" + b",".join(raws) + b"]")
        flat = np.frombuffer(doc.as_buffer(of_type="d"), np.float64)
    except _PARSE_ERRORS:
        return None
    if flat.size != len(raws) * feature_count:  # cannot happen after the screen; never guess
        return None
    return flat.reshape(len(raws), feature_count)
