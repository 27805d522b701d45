"""Dead letters (header format 1): the original key and bytes, plus headers saying why.

    triage.error.stage        one of DLQ_STAGES
    triage.error.class        the exception's class name, or its ``dlq_class`` when it has one
                              (triage.errors.InvalidRecordError: ``ValidationError``, its name
                              when the header was defined; readers filter on it)
    triage.error.message      its message, at most 1000 bytes of UTF-8
    triage.source.topic / .partition / .offset / .timestamp   where the record came from
    triage.model_version      the model serving when it was dead-lettered ("" if none)
    triage.dlq.payload_dropped  only when key and value had to be dropped (see without_payload)
"""

from __future__ import annotations

from typing import Iterable, Optional, Union

from triage.errors import TriageError
from triage.records import Headers, OutRecord, RecordBatch

# internal = handling the record raised an unexpected exception (a bug, not bad input).
DLQ_STAGES = ("decode", "validate", "score", "produce", "label", "internal")

STAGE = "triage.error.stage"
ERROR_CLASS = "triage.error.class"
ERROR_MESSAGE = "triage.error.message"
SOURCE_TOPIC = "triage.source.topic"
SOURCE_PARTITION = "triage.source.partition"
SOURCE_OFFSET = "triage.source.offset"
SOURCE_TIMESTAMP = "triage.source.timestamp"
MODEL_VERSION = "triage.model_version"
PAYLOAD_DROPPED = "triage.dlq.payload_dropped"
MAX_HEADER_BYTES = 1000


def _utf8(text: str, limit: int = MAX_HEADER_BYTES) -> bytes:
    """At most ``limit`` bytes of UTF-8, cut on a character boundary (lone surrogates -> '?')."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return data
    return data[:limit].decode("utf-8", "ignore").encode()


def error_class(error: BaseException) -> str:
    """The ``triage.error.class`` header value of ``error``: its class name, unless the class
    keeps an earlier name on the wire (``dlq_class``)."""
    wire = getattr(type(error), "dlq_class", None)
    return wire if isinstance(wire, str) else type(error).__name__


def _message(error: BaseException) -> str:
    if isinstance(error, TriageError):
        return error.message
    return str(error) or repr(error)  # e.g. KeyError() has no str


def dead_letter(
    topic: str,
    *,
    key: Optional[bytes],
    value: Optional[bytes],
    error: BaseException,
    stage: str,
    source_topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    model_version: str,
    source: int = -1,
) -> OutRecord:
    """A DLQ record for ``topic`` keeping the original key and value. ``source`` is the input
    record's index in its batch; the OutRecord's ``reason`` is the stage (its metric label)."""
    if stage not in DLQ_STAGES:
        raise ValueError(f"unknown DLQ stage {stage!r} (known: {', '.join(DLQ_STAGES)})")
    headers: Headers = [
        (STAGE, stage.encode()),
        (ERROR_CLASS, error_class(error).encode()),
        (ERROR_MESSAGE, _utf8(_message(error))),
        (SOURCE_TOPIC, _utf8(source_topic)),
        (SOURCE_PARTITION, str(partition).encode()),
        (SOURCE_OFFSET, str(offset).encode()),
        (SOURCE_TIMESTAMP, str(timestamp_ms).encode()),
        (MODEL_VERSION, _utf8(model_version)),
    ]
    return OutRecord(topic, key, value, headers, source, stage)


def dead_letter_from_batch(batch: RecordBatch, i: int, error: BaseException, stage: str, dlq_topic: str,
                           version: str) -> OutRecord:
    """The dead letter of record ``i`` of ``batch``."""
    return dead_letter(
        dlq_topic, key=batch.keys[i], value=batch.values[i], error=error, stage=stage,
        source_topic=batch.topics[i], partition=batch.partitions[i], offset=batch.offsets[i],
        timestamp_ms=batch.timestamps_ms[i], model_version=version, source=i,
    )


def without_payload(rec: OutRecord, reason: Union[str, BaseException]) -> OutRecord:
    """The dead letter ``rec`` with key and value dropped (the broker refused it, e.g. too
    large), so the headers still get through; says what was dropped and why."""
    if rec.value == b"" and rec.key is None:
        return rec  # already stripped: only a broker-side problem remains; keep retrying
    why = reason if isinstance(reason, str) else _message(reason)
    dropped = f"key {len(rec.key or b'')} bytes, value {len(rec.value or b'')} bytes: {why}"
    headers = [*(rec.headers or []), (PAYLOAD_DROPPED, _utf8(dropped))]
    return OutRecord(rec.topic, None, b"", headers, rec.source, rec.reason)


def decode_dlq_headers(headers: Optional[Iterable[tuple[Union[str, bytes], Optional[bytes]]]]) -> dict[str, str]:
    """Headers as text (invalid UTF-8 replaced; a missing value is ""); the last of a repeated
    name wins. For readers and tests of the DLQ."""
    out: dict[str, str] = {}
    for name, value in headers or ():
        key = name.decode("utf-8", "replace") if isinstance(name, (bytes, bytearray)) else str(name)
        out[key] = bytes(value).decode("utf-8", "replace") if value is not None else ""
    return out
