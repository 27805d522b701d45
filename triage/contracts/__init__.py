"""The one contract layer: every message triage reads or writes, its schema and its checks.

=====================  ======  =========================================  =========================
message                format  written by                                 read by
=====================  ======  =========================================  =========================
Sample                 1       producers upstream                         scorer
Prediction             1       scorer                                     downstream
ProvisionalPrediction  1       scorer (gate / hygiene holds)              downstream
ReviewRequest          1       scorer, retrain job (relabel, tiebreak)    retrain, audit, annotators
Label                  1       annotator console, simulated annotator     retrain, audit
ModelEvent             1       ``triage models``, retrain job             model watchers
RetrainRequest         1       ``triage monitor``                         retrain job
manifest.json          1       registry                                   scorers, retrain
labels.jsonl row       1       retrain job (label store)                  retrain job
dead letter headers    1       scorer, retrain job, loops                 humans, tests
=====================  ======  =========================================  =========================

A format number changes only when a field changes meaning; fields are only ever added.

Decoders take the raw bytes and ``max_bytes`` and return a Struct, or raise an ``InputError``:
``DecodeError`` (stage ``decode``: tombstone, not UTF-8, not JSON, nested too deeply) or
``InvalidRecordError`` (stage ``validate``: oversized, wrong shape, out of range, duplicate key --
escaped or not, at any depth). Every validation message names the field: ``id``, ``ts``,
``meta``, ``features[3]``, ``label``, ... Manifest errors are ``RegistryError``s.

Limits: ``id`` 1..256 characters with no control characters (C0, DEL, C1) or lone surrogates;
``features`` values finite and within float32 (|x| <= 3.4028234663852886e38); ``ts`` epoch ms
in [0, 253402300799999] or an ISO-8601 string in that range (naive = UTC); ``meta`` an object
of at most 64 KiB re-encoded and nesting depth 8 ({} is depth 1).
"""

from triage.contracts._base import (
    F32_MAX, ID_MAX_CHARS, MAX_EVENT_MS, META_MAX_BYTES, META_MAX_DEPTH, TEXT_MAX_CHARS, encode,
)
from triage.contracts.dlq import (
    DLQ_STAGES, dead_letter, dead_letter_from_batch, decode_dlq_headers, without_payload,
)
from triage.contracts.label import (
    Label, LabelOrigin, LabelRow, decode_label, decode_label_row, encode_label, encode_label_row,
)
from triage.contracts.models import (
    MANIFEST_FORMAT, MANIFEST_STATUSES, ModelEvent, check_manifest, decode_manifest, decode_model_event,
    encode_manifest, encode_model_event,
)
from triage.contracts.output import (
    Prediction, PredictionRecord, ProvisionalPrediction, ReviewRequest, ScoreFields, TopClass, decode_prediction,
    decode_review,
)
from triage.contracts.sample import (
    DecodedSamples, Sample, SampleFields, check_features, decode_sample, decode_samples, event_ms, event_ms_column,
)

__all__ = [
    "DLQ_STAGES", "F32_MAX", "ID_MAX_CHARS", "MANIFEST_FORMAT", "MANIFEST_STATUSES", "MAX_EVENT_MS",
    "META_MAX_BYTES", "META_MAX_DEPTH", "TEXT_MAX_CHARS",
    "Label", "LabelOrigin", "LabelRow", "ModelEvent", "Prediction", "PredictionRecord", "ProvisionalPrediction", "ReviewRequest",
    "DecodedSamples", "Sample", "SampleFields", "ScoreFields", "TopClass",
    "check_features", "check_manifest", "dead_letter", "dead_letter_from_batch", "decode_dlq_headers",
    "decode_label", "decode_label_row", "decode_manifest", "decode_model_event", "decode_prediction",
    "decode_review", "decode_sample", "decode_samples", "encode", "encode_label", "encode_label_row",
    "encode_manifest", "encode_model_event", "event_ms", "event_ms_column", "without_payload",
]
