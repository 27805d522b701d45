"""Labels (format 1) on the labels topic, and rows of the label store (labels.jsonl, format 1).

Label: written by the annotator console and the simulated annotator, read by the retrain job
and the audit consumer. ``label`` may be a reserved value (``EDGE_CASE``, ``UNDO``, the retrain
job's markers: their meaning is in triage.lifecycle.labelview); here it is just a string.

Label-store row: one JSON object per line, ``json.dumps(row, separators=(",", ":"))`` (ASCII,
floats by repr), keys in the order id, label, features, annotator, partition, offset; rows
written before annotator/partition/offset existed are still read.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Annotated, Any, ClassVar, Mapping, Optional, Union

import msgspec

from triage.contracts._base import (
    TEXT_MAX_CHARS, Finite, Float32, Id, Text, Ts, as_bytes, check_duplicates, check_fields, check_float32_list,
    check_struct, check_ts, decode_with, describe, encode,
)
from triage.errors import InvalidRecordError

EDGE_CASE = "__edge_case__"
UNDO = "__undo__"  # retracts the annotator's earlier label of the id (the annotator console's undo)
# Published by the retrain job (labelview.py): one more opinion was asked for the sample's labels;
# a relabel also holds the sample out of training until a newer human label arrives.
RELABEL_MARK = "__relabel__"
TIEBREAK_MARK = "__tiebreak__"
MARKERS = (RELABEL_MARK, TIEBREAK_MARK)
RESERVED = (EDGE_CASE, UNDO, *MARKERS)  # label values that are not classes


def answer(answers: dict[str, str], label: Optional[str], annotator: Optional[str]) -> None:
    """Fold one label into a sample's answers (annotator -> answer, in answer order), as training
    reads them (triage.lifecycle.labelview): an annotator's label replaces their earlier one,
    their ``UNDO`` (or ``None``) withdraws it, and an ``UNDO`` with no annotator withdraws all."""
    who = annotator or ""
    if label == UNDO and not who:
        answers.clear()
        return
    answers.pop(who, None)
    if label is not None and label != UNDO:
        answers[who] = label


def standing(answers: dict[str, str]) -> Optional[str]:
    """The sample's label as training's majority aggregation reads it (labelview): the most
    frequent answer, a tie going to the one given first (``answers`` in the order each annotator
    last answered); None when that is an edge case, or when none stands."""
    if not answers:
        return None
    counts = Counter(answers.values())
    best = max(counts.values())
    label = next(a for a in answers.values() if counts[a] == best)
    return None if label == EDGE_CASE else label

Name = Annotated[str, msgspec.Meta(max_length=TEXT_MAX_CHARS, extra={"text": True})]  # may be ""


class LabelOrigin(msgspec.Struct):
    """Where a label was made outside triage (the Label Studio bridge): the tool's own ids.
    The bridge rebuilds what it already published from these, so its cursor lives in Kafka."""

    tool: Name  # "label-studio"
    annotation: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]  # the annotation whose state this label is
    task: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
    deleted: Optional[Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]]  # an annotation whose removal this reports, or null


class Label(msgspec.Struct):
    SCHEMA_VERSION: ClassVar[int] = 1

    id: Id  # the sample's id
    label: Text  # a class name, or a reserved value
    annotator: Optional[Name] = None
    features: Optional[list[Float32]] = None  # lets a label stand alone, without the review record
    ts: Ts = None  # when it was labelled
    # Set by bridges to external labelling tools; absent otherwise (labels stay byte-identical).
    origin: Union[LabelOrigin, msgspec.UnsetType] = msgspec.UNSET


_label_decoder = msgspec.json.Decoder(Label)


def decode_label(value: Optional[bytes], max_bytes: int) -> Label:
    """Bytes from the labels topic -> Label, or an InputError."""
    raw, label = decode_with(_label_decoder, value, max_bytes, "label")
    check_struct(raw, label)
    if isinstance(label.origin, LabelOrigin):  # the text rules of the nested object too
        check_fields(label.origin, 0)
    return label  # type: ignore[no-any-return]


def encode_label(sample_id: str, label: str, *, annotator: Optional[str] = None,
                 features: Optional[list[float]] = None, ts: Union[int, float, str, None] = None,
                 origin: Optional[LabelOrigin] = None) -> bytes:
    """The bytes of a valid label (InvalidRecordError otherwise): what the annotators publish."""
    built = Label(sample_id, label, annotator, features, ts, msgspec.UNSET if origin is None else origin)
    if features is not None:
        check_float32_list("features", features)
    check_ts(ts)  # numbers too: msgspec checks their range only when decoding
    check_fields(built, 0)  # text fields and ISO time, exactly as decode_label
    if origin is not None:
        check_fields(origin, 0)
    return encode(built)


# --- label-store rows ------------------------------------------------------------------------


class LabelRow(msgspec.Struct):
    """Schema of a labels.jsonl row (for validation; rows travel as dicts)."""

    SCHEMA_VERSION: ClassVar[int] = 1

    id: str
    label: str
    features: list[Finite]  # [] for an undo
    annotator: Union[str, None, msgspec.UnsetType] = msgspec.UNSET
    partition: Union[int, msgspec.UnsetType] = msgspec.UNSET
    offset: Union[int, msgspec.UnsetType] = msgspec.UNSET


_row_decoder = msgspec.json.Decoder(LabelRow)


def _validate_row(row: Any) -> None:
    try:
        msgspec.convert(row, LabelRow)
    except msgspec.ValidationError as exc:
        raise InvalidRecordError(describe(str(exc), b"")) from None


def encode_label_row(row: Mapping[str, Any]) -> bytes:
    """One label-store row as JSON bytes (no newline), byte-identical to today's writer."""
    if not isinstance(row, Mapping):
        raise InvalidRecordError(f"record: a label-store row must be a mapping, got {type(row).__name__}")
    _validate_row(dict(row))
    try:
        return json.dumps(dict(row), separators=(",", ":")).encode("ascii")
    except (TypeError, ValueError) as exc:  # an extra key that is not JSON
        raise InvalidRecordError(f"record: not JSON-serialisable: {exc}") from None


def decode_label_row(line: bytes) -> dict[str, Any]:
    """One label-store row (JSON bytes; surrounding whitespace allowed) -> its dict, checked.
    The dict has the schema's keys that the row has, in schema order."""
    raw = as_bytes(line, "label-store row")
    raw, row = decode_with(_row_decoder, raw, len(raw), "label-store row")
    check_duplicates(raw, row)
    return {k: v for k, v in msgspec.structs.asdict(row).items() if v is not msgspec.UNSET}
