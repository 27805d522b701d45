"""Decode and validate samples; encode predictions, review requests and DLQ headers.

Validation is strict (msgspec, typed): a bool or numeric string is not a feature,
NaN/Infinity tokens are not JSON, 1e309 is out of range, duplicate top-level keys are
ambiguous. Each failure names what was wrong so the DLQ header can say it.
"""

from __future__ import annotations

import json
from typing import Any, Optional, Union

import msgspec

from triage.errors import DecodeError, InputError, ValidationError


class Sample(msgspec.Struct):
    id: str
    features: list[float]
    ts: Union[str, int, float, None] = None
    meta: Optional[dict[str, Any]] = None


class Label(msgspec.Struct):
    id: str
    label: str
    annotator: Optional[str] = None
    features: Optional[list[float]] = None
    ts: Union[str, int, float, None] = None


class ScoreFields(msgspec.Struct, gc=False):
    margin: float
    entropy: float
    outlier: Optional[float]


class Prediction(msgspec.Struct, gc=False):
    """Encoded exactly like the dict it replaces (same keys, same order); Structs encode
    about twice as fast as dicts."""

    id: str
    label: str
    confidence: float
    scores: ScoreFields
    model_version: str
    meta: Optional[dict[str, Any]]


class TopClass(msgspec.Struct, gc=False):
    label: str
    p: float


class ReviewRequest(msgspec.Struct, gc=False):
    id: str
    features: list[float]
    reason: str
    predicted: str
    confidence: float
    scores: ScoreFields
    priority: float
    model_version: str
    meta: Optional[dict[str, Any]]
    top: list[TopClass]


_sample_decoder = msgspec.json.Decoder(Sample)
_label_decoder = msgspec.json.Decoder(Label)
encoder = msgspec.json.Encoder()
encode = encoder.encode


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def _check_duplicates(value: bytes, keys: tuple[bytes, ...]) -> None:
    # Fast screen on raw bytes; the exact (slow) check runs only when a key repeats.
    if any(value.count(k) > 1 for k in keys):
        try:
            json.loads(value, object_pairs_hook=_reject_duplicate_keys)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        except RecursionError:
            raise DecodeError("JSON nested too deeply") from None


def _decode(value: Optional[bytes], decoder: msgspec.json.Decoder, max_bytes: int) -> Any:
    if value is None:
        raise DecodeError("null value (tombstone); a sample must be a JSON object")
    if len(value) > max_bytes:
        raise ValidationError(f"oversized: {len(value)} bytes > limit {max_bytes}")
    try:
        return decoder.decode(value)
    except msgspec.ValidationError as exc:
        raise ValidationError(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise DecodeError(str(exc)) from None
    except UnicodeDecodeError as exc:
        raise DecodeError(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    except RecursionError:
        # msgspec bounds nesting by the interpreter's recursion limit: a deeply nested
        # document is bad input, not a reason to crash the loop.
        raise DecodeError("JSON nested too deeply") from None


def decode_sample(value: Optional[bytes], feature_count: int, max_bytes: int) -> Sample:
    """Bytes -> Sample, or an InputError. Finiteness is checked batch-wise by the caller."""
    sample: Sample = _decode(value, _sample_decoder, max_bytes)
    if not sample.id:
        raise ValidationError("`id` must be a non-empty string")
    if len(sample.features) != feature_count:
        raise ValidationError(
            f"`features` has {len(sample.features)} values; the model takes {feature_count}"
        )
    _check_duplicates(value, (b'"id"', b'"features"'))  # type: ignore[arg-type]
    return sample


def decode_samples(
    values: list[Optional[bytes]], feature_count: int, max_bytes: int
) -> tuple[list[Sample], list[int], list[tuple[int, InputError]]]:
    """A batch of values -> (samples, their row indices, (row, error) for the rest).

    Exactly as strict as ``decode_sample``: the loop below only takes records that pass
    every check of ``decode_sample`` outright; anything else (including a record whose
    duplicate-key screen fires) is handed to ``decode_sample`` for the full verdict.
    """
    decode = _sample_decoder.decode
    samples: list[Sample] = []
    rows: list[int] = []
    errors: list[tuple[int, InputError]] = []
    for i, value in enumerate(values):
        if value is not None and len(value) <= max_bytes:
            try:
                sample = decode(value)
            except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
                sample = None  # decode_sample below gives the verdict (and the DLQ reason)
            if (
                sample is not None
                and sample.id
                and len(sample.features) == feature_count
                and value.count(b'"id"') < 2
                and value.count(b'"features"') < 2
            ):
                samples.append(sample)
                rows.append(i)
                continue
        try:
            samples.append(decode_sample(value, feature_count, max_bytes))
            rows.append(i)
        except InputError as exc:
            errors.append((i, exc))
    return samples, rows, errors


def decode_label(value: Optional[bytes], max_bytes: int) -> Label:
    label: Label = _decode(value, _label_decoder, max_bytes)
    if not label.id:
        raise ValidationError("`id` must be a non-empty string")
    if not label.label:
        raise ValidationError("`label` must be a non-empty string")
    _check_duplicates(value, (b'"id"', b'"label"'))  # type: ignore[arg-type]
    return label


def dlq_headers(
    error: InputError | Exception,
    *,
    stage: str,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    model_version: str,
) -> list[tuple[str, bytes]]:
    message = error.message if isinstance(error, InputError) else str(error)
    return [
        ("triage.error.stage", stage.encode()),
        ("triage.error.class", type(error).__name__.encode()),
        ("triage.error.message", message[:1000].encode("utf-8", "replace")),
        ("triage.source.topic", topic.encode()),
        ("triage.source.partition", str(partition).encode()),
        ("triage.source.offset", str(offset).encode()),
        ("triage.source.timestamp", str(timestamp_ms).encode()),
        ("triage.model_version", model_version.encode()),
    ]
