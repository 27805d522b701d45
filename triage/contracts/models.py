"""Model events (format 1) on the models topic, and the registry manifest (format 1).

ModelEvent: written by ``triage models promote/rollback`` and the retrain job (from
``Registry.model_event``), read by every scorer's model watcher. A hint only: the registry is
the source of truth, so the event is checked for shape here and against the registry there.

Manifest: ``models/<v>/manifest.json``, ``json.dumps(m, indent=2, sort_keys=True)``. Errors in
a manifest are the registry's: ``decode_manifest``/``encode_manifest`` raise
``triage.errors.RegistryError`` naming the field (a bad bundle is refused like an unreadable one,
never dead-lettered).
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, ClassVar, Literal, Mapping, Optional, Union

import msgspec

from triage.contracts._base import PATH_MAX_CHARS, check_struct, decode_with, describe, encode
from triage.errors import InvalidRecordError, RegistryError

VERSION_PATTERN = r"^v[0-9]+\Z"  # registry version names (v1, v2, ...)
SHA256_PATTERN = r"^[0-9a-f]{64}\Z"  # hashlib hexdigest
ACTIONS = ("promote", "rollback")
MANIFEST_STATUSES = ("candidate", "current", "previous", "rejected")
OUTPUT_KINDS = ("probabilities", "logits")
MANIFEST_FORMAT = 1

Version = Annotated[str, msgspec.Meta(pattern=VERSION_PATTERN, max_length=32)]
Sha256 = Annotated[str, msgspec.Meta(pattern=SHA256_PATTERN)]
RegistryPath = Annotated[str, msgspec.Meta(min_length=1, max_length=PATH_MAX_CHARS, extra={"text": True})]


class ModelEvent(msgspec.Struct):
    """Encodes like ``Registry.model_event``'s dict (same keys, same order)."""

    SCHEMA_VERSION: ClassVar[int] = 1

    version: Version
    sha256: Sha256
    path: RegistryPath  # the model file, relative to the registry root
    action: Literal["promote", "rollback"]
    metrics: dict[str, Any] = {}  # the version's evaluation metrics, for humans


_event_decoder = msgspec.json.Decoder(ModelEvent)


def decode_model_event(value: Optional[bytes], max_bytes: int) -> ModelEvent:
    """Bytes from the models topic -> ModelEvent, or a DecodeError/InvalidRecordError."""
    raw, event = decode_with(_event_decoder, value, max_bytes, "model event")
    check_struct(raw, event)
    return event  # type: ignore[no-any-return]


def encode_model_event(event: Union[ModelEvent, Mapping[str, Any]]) -> bytes:
    """The bytes of a valid model event (a ModelEvent or ``Registry.model_event``'s dict)."""
    if not isinstance(event, ModelEvent):
        try:
            event = msgspec.convert(dict(event), ModelEvent)
        except msgspec.ValidationError as exc:
            raise InvalidRecordError(describe(str(exc), b"")) from None
    raw = encode(event)
    decode_model_event(raw, len(raw))  # same rules for writers and readers (constraints, path text)
    return raw


# --- manifest --------------------------------------------------------------------------------


class _Duplicate(ValueError):
    pass


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Duplicate(k)
        out[k] = v
    return out


def _bad(field: str, problem: str) -> RegistryError:
    return RegistryError(f"manifest: `{field}` {problem}")


def _optional_name(m: dict[str, Any], field: str) -> None:
    v = m.get(field)
    if v is not None and not (isinstance(v, str) and v):
        raise _bad(field, f"must be a non-empty string or null, got {v!r:.80}")


def _optional_object(m: dict[str, Any], field: str) -> None:
    v = m.get(field)
    if v is not None and not isinstance(v, dict):
        raise _bad(field, f"must be an object, got {type(v).__name__}")


def check_manifest(m: Any) -> dict[str, Any]:
    """The manifest if the fields scorers rely on have the right types, else RegistryError."""
    if not isinstance(m, dict):
        raise RegistryError(f"manifest: must be a JSON object, got {type(m).__name__}")
    for field, pattern in (("version", VERSION_PATTERN), ("sha256", SHA256_PATTERN)):
        v = m.get(field)
        if not isinstance(v, str) or not re.match(pattern, v):
            raise _bad(field, f"must match {pattern}, got {v!r:.80}")
    classes = m.get("classes")
    if not isinstance(classes, list) or not classes:
        raise _bad("classes", "must be a non-empty list of class names")
    for i, c in enumerate(classes):
        if not isinstance(c, str) or not c:
            raise _bad(f"classes[{i}]", f"must be a non-empty string, got {c!r:.80}")
    if len(set(classes)) != len(classes):
        raise _bad("classes", "has duplicate names")
    fc = m.get("feature_count")
    if isinstance(fc, bool) or not isinstance(fc, int) or fc < 1:
        raise _bad("feature_count", f"must be a positive integer, got {fc!r:.80}")
    if m.get("status") not in MANIFEST_STATUSES:
        raise _bad("status", f"must be one of {', '.join(MANIFEST_STATUSES)}, got {m.get('status')!r:.80}")
    for field in ("input_name", "output_name", "path"):
        _optional_name(m, field)
    if "output_kind" in m and m["output_kind"] not in OUTPUT_KINDS:
        raise _bad("output_kind", f"must be one of {', '.join(OUTPUT_KINDS)}, got {m['output_kind']!r:.80}")
    for field in ("calibration", "outlier", "routing", "data", "metrics"):
        _optional_object(m, field)
    t = (m.get("calibration") or {}).get("temperature", 1.0)
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not (math.isfinite(t) and t > 0):
        raise _bad("calibration.temperature", f"must be a positive finite number, got {t!r:.80}")
    return m


def decode_manifest(data: Union[bytes, str]) -> dict[str, Any]:
    """manifest.json bytes -> the manifest dict, checked (see ``check_manifest``)."""
    try:
        # The stdlib parser, as the registry always used: manifests written by json.dumps may
        # hold NaN metrics, which strict JSON parsers refuse.
        doc = json.loads(data, object_pairs_hook=_unique)
    except _Duplicate as exc:
        raise RegistryError(f"manifest: duplicate key `{exc.args[0]}`") from None
    except RecursionError:
        raise RegistryError("manifest: JSON nested too deeply") from None
    except (ValueError, TypeError) as exc:  # JSONDecodeError, UnicodeDecodeError, not bytes
        raise RegistryError(f"manifest: not JSON: {exc}") from None
    return check_manifest(doc)


def encode_manifest(manifest: Mapping[str, Any]) -> bytes:
    """A checked manifest as the registry writes it (indent 2, sorted keys, ASCII)."""
    check_manifest(dict(manifest) if isinstance(manifest, Mapping) else manifest)
    return json.dumps(manifest, indent=2, sort_keys=True).encode()
