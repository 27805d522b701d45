"""Shared pieces of the contract layer: limits, constrained field types, the one decode
wrapper, field checks and the duplicate-key screen.

The field types carry their limits as ``msgspec.Meta`` constraints (enforced in C while
parsing) and, where a rule cannot be a constraint, as ``Meta.extra`` (``text``, ``format``,
``max_depth``, ...), enforced here in Python. tests/contract_strategies.py reads both, so the
generated documents follow the schema rather than a copy of it.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from typing import Annotated, Any, Optional, Union

import msgspec
from msgspec import inspect as mi

from triage.errors import DecodeError, InvalidRecordError

# --- limits ----------------------------------------------------------------------------------

F32_MAX = 3.4028234663852886e38  # largest finite float32: every feature must fit the model's float32 input
MAX_EVENT_MS = 253402300799999  # 9999-12-31T23:59:59.999Z: fits int64 and datetime
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
ID_MAX_CHARS = 256
TEXT_MAX_CHARS = 256  # label, annotator
PATH_MAX_CHARS = 4096
ISO_MAX_CHARS = 64
META_MAX_BYTES = 64 * 1024  # `meta` re-encoded compactly; it is copied into every output record
META_MAX_DEPTH = 8  # `meta` = {} is depth 1; each nested object/array adds one
# Re-encoding flat JSON grows it at most ~4.5x ("1e15" -> "1000000000000000.0"), so a record
# no longer than this cannot carry a meta over META_MAX_BYTES and skips the re-encode.
META_SIZE_SCREEN = META_MAX_BYTES // 5

# --- constrained field types (shared by the Structs) -----------------------------------------

Float32 = Annotated[float, msgspec.Meta(ge=-F32_MAX, le=F32_MAX)]
Finite = Annotated[float, msgspec.Meta(ge=-1.7976931348623157e308, le=1.7976931348623157e308)]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=ID_MAX_CHARS, extra={"text": True})]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=TEXT_MAX_CHARS, extra={"text": True})]
IsoTime = Annotated[str, msgspec.Meta(max_length=ISO_MAX_CHARS, extra={"format": "iso8601"})]
EpochMs = Annotated[int, msgspec.Meta(ge=0, le=MAX_EVENT_MS)]
EpochMsFloat = Annotated[float, msgspec.Meta(ge=0, le=MAX_EVENT_MS)]
# Epoch milliseconds (int or float) or an ISO-8601 string; bool is never a number to msgspec.
Ts = Union[IsoTime, EpochMs, EpochMsFloat, None]
MetaDict = Annotated[dict[str, Any], msgspec.Meta(extra={"max_depth": META_MAX_DEPTH, "max_bytes": META_MAX_BYTES})]

encode = msgspec.json.Encoder().encode


# --- decoding --------------------------------------------------------------------------------


def as_bytes(value: Any, what: str) -> bytes:
    if value is None:
        raise DecodeError(f"null value (tombstone); a {what} must be a JSON object")
    if value.__class__ is bytes:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise DecodeError(f"a {what} must be bytes, got {type(value).__name__}")


def decode_with(decoder: msgspec.json.Decoder[Any], value: Any, max_bytes: int, what: str) -> tuple[bytes, Any]:
    """(the value as bytes, its decoded Struct), or the InputError that says why not."""
    raw = as_bytes(value, what)
    if len(raw) > max_bytes:
        raise InvalidRecordError(f"oversized: {len(raw)} bytes > limit {max_bytes}")
    try:
        return raw, decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise InvalidRecordError(describe(str(exc), raw)) from None
    except msgspec.DecodeError as exc:
        raise DecodeError(str(exc)) from None
    except UnicodeDecodeError as exc:
        raise DecodeError(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    except RecursionError:
        # msgspec bounds nesting by the interpreter's recursion limit: deep input is bad
        # input, never a reason to crash the loop.
        raise DecodeError("JSON nested too deeply") from None


_AT = re.compile(r"^(.*) - at `\$(.*)`$", re.S)
_F32 = re.compile(r"^Expected `float` [<>]= -?3\.4028234663852886e\+38$")
_MIN_LEN = re.compile(r"^Expected `str` of length >= 1$")
_MAX_LEN = re.compile(r"^Expected `str` of length <= (\d+)$")
_PATH_TOKEN = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def describe(message: str, raw: bytes) -> str:
    """A msgspec validation message rewritten to lead with the field it is about."""
    m = _AT.match(message)
    if m is None:
        # "Object missing required field `id`" names its field; "Expected `object`, got
        # `array`" is about the record as a whole.
        return message if message.startswith("Object missing") else f"record: {message}"
    text, path = m.group(1), m.group(2).lstrip(".")
    if not path:
        return f"record: {text}"
    if _F32.match(text):
        found = _lookup(raw, path)
        shown = f" = {found!r}" if isinstance(found, (int, float)) and not isinstance(found, bool) else ""
        return f"`{path}`{shown} does not fit float32 (|x| <= {F32_MAX!r})"
    if _MIN_LEN.match(text):
        return f"`{path}` must be a non-empty string"
    n = _MAX_LEN.match(text)
    if n:
        return f"`{path}` is longer than {n.group(1)} characters"
    if path == "ts":
        return f"`ts`: {text} (expected epoch milliseconds in [0, {MAX_EVENT_MS}] or an ISO-8601 string)"
    return f"`{path}`: {text}"


def _lookup(raw: bytes, path: str) -> Any:
    """The value at a msgspec path like ``features[3]``, for error messages only."""
    try:
        doc: Any = msgspec.json.decode(raw)
        for name, index in _PATH_TOKEN.findall("." + path if not path.startswith("[") else path):
            doc = doc[int(index)] if index else doc[name]
        return float(doc)
    except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError, LookupError, TypeError, ValueError,
            OverflowError):
        return None


# --- field checks ----------------------------------------------------------------------------


def check_text(field: str, s: Any, max_chars: int = TEXT_MAX_CHARS, *, min_chars: int = 1) -> None:
    """A string that prints on one line: no C0/DEL/C1 control characters, no lone surrogates."""
    if s.__class__ is not str:
        raise InvalidRecordError(f"`{field}` must be a string, got {type(s).__name__}")
    if len(s) < min_chars:
        raise InvalidRecordError(f"`{field}` must be a non-empty string")
    if len(s) > max_chars:
        raise InvalidRecordError(f"`{field}` is longer than {max_chars} characters")
    if s.isprintable():  # C fast path; False for every Cc and Cs character (and some harmless ones)
        return
    for i, ch in enumerate(s):
        o = ord(ch)
        if o < 0x20 or 0x7F <= o <= 0x9F:
            raise InvalidRecordError(f"`{field}` contains control character U+{o:04X} at index {i}")
        if 0xD800 <= o <= 0xDFFF:
            raise InvalidRecordError(f"`{field}` contains a lone surrogate U+{o:04X} at index {i}")


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def iso_ms(s: str) -> Optional[int]:
    """Epoch ms of an ISO-8601 string (trailing Z allowed; naive = UTC), or None if it is not
    one or falls outside [0, MAX_EVENT_MS]."""
    if len(s) > ISO_MAX_CHARS:
        return None
    try:
        dt = datetime.fromisoformat(s[:-1] + "+00:00" if s[-1:] in ("Z", "z") else s)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        delta = dt - _EPOCH  # exact integer arithmetic, unlike .timestamp()
    except (ValueError, OverflowError, TypeError):
        return None
    ms = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    return ms if 0 <= ms <= MAX_EVENT_MS else None


def check_ts(ts: Any) -> None:
    """`ts` of a Struct built in Python (decoded ones are range-checked by msgspec already)."""
    if ts is None:
        return
    if ts.__class__ is str:
        if iso_ms(ts) is None:
            raise InvalidRecordError(f"`ts` = {ts[:80]!r} is not an ISO-8601 time between 1970 and 9999")
        return
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        raise InvalidRecordError(f"`ts` must be epoch milliseconds or an ISO-8601 string, got {type(ts).__name__}")
    if not (isinstance(ts, int) or math.isfinite(ts)) or not 0 <= ts <= MAX_EVENT_MS:
        raise InvalidRecordError(f"`ts` = {ts!r} is outside [0, {MAX_EVENT_MS}] epoch milliseconds")


def check_float32_list(field: str, values: Any) -> None:
    if not isinstance(values, list):
        raise InvalidRecordError(f"`{field}` must be a list of numbers, got {type(values).__name__}")
    for i, x in enumerate(values):
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise InvalidRecordError(f"`{field}[{i}]` must be a number, got {type(x).__name__}")
        if not -F32_MAX <= x <= F32_MAX:  # False for NaN too
            raise InvalidRecordError(f"`{field}[{i}]` = {x!r} does not fit float32")


def check_iso(field: str, ts: Any) -> None:
    """A string ``ts`` must be an ISO-8601 time in range (numbers are range-checked by msgspec)."""
    if ts.__class__ is str and iso_ms(ts) is None:
        raise InvalidRecordError(f"`{field}` = {ts[:80]!r} is not an ISO-8601 time between 1970 and 9999")


def check_meta(meta: Optional[dict[str, Any]], raw_len: int, field: str = "meta") -> None:
    if meta is None:
        return
    depth = shape(meta)[2]
    if depth > META_MAX_DEPTH:
        raise InvalidRecordError(f"`{field}` is nested {depth} levels deep; the limit is {META_MAX_DEPTH}")
    if raw_len > META_SIZE_SCREEN:
        size = len(encode(meta))
        if size > META_MAX_BYTES:
            raise InvalidRecordError(f"`{field}` is {size} bytes encoded; the limit is {META_MAX_BYTES}")


# --- the rules a Struct's field types carry in Meta.extra -------------------------------------

_rules: dict[type, tuple[tuple[tuple[str, int, int], ...], tuple[str, ...], tuple[str, ...]]] = {}


def _extras(t: Any) -> list[tuple[Any, dict[str, Any]]]:
    """(inner type, extra) for a field type and each member of a union."""
    out: list[tuple[Any, dict[str, Any]]] = []
    for member in (t.types if isinstance(t, mi.UnionType) else (t,)):
        extra: dict[str, Any] = {}
        while isinstance(member, mi.Metadata):
            extra.update(member.extra or {})
            member = member.type
        out.append((member, extra))
    return out


def rules(cls: type) -> tuple[tuple[tuple[str, int, int], ...], tuple[str, ...], tuple[str, ...]]:
    """(text fields with (name, min, max chars), ISO-time fields, meta-like fields) of a Struct,
    read from its schema once."""
    found = _rules.get(cls)
    if found is None:
        text: list[tuple[str, int, int]] = []
        iso: list[str] = []
        meta: list[str] = []
        for field in mi.type_info(cls).fields:  # type: ignore[attr-defined]
            for inner, extra in _extras(field.type):
                if extra.get("text"):
                    text.append((field.name, inner.min_length or 0, inner.max_length or TEXT_MAX_CHARS))
                if extra.get("format") == "iso8601":
                    iso.append(field.name)
                if "max_depth" in extra:
                    meta.append(field.name)
        found = _rules[cls] = (tuple(text), tuple(iso), tuple(meta))
    return found


def check_struct(raw: bytes, obj: Any) -> None:
    """Every rule of ``obj``'s schema that msgspec cannot enforce, then duplicate keys."""
    check_fields(obj, len(raw))
    check_duplicates(raw, obj)


def check_fields(obj: Any, raw_len: int) -> None:
    """The text, ISO-time and meta rules of ``obj``'s schema (``raw_len``: its encoded size)."""
    text, iso, meta = rules(type(obj))
    for name, lo, hi in text:
        value = getattr(obj, name)
        if value is not None:
            check_text(name, value, hi, min_chars=lo)
    for name in iso:
        check_iso(name, getattr(obj, name))
    for name in meta:
        check_meta(getattr(obj, name), raw_len, name)


# --- duplicate keys --------------------------------------------------------------------------
#
# msgspec keeps the last of two equal keys, so duplicates must be found separately. Every key
# in raw JSON is followed by exactly one ':' outside strings, so
#     raw ':' count  >=  raw key count  >=  distinct keys per object, summed
# and a document is free of duplicates at every level when the raw ':' count equals the keys
# we can see in the decoded value (plus the ':' inside its decoded strings, when no string
# holds an escape that could hide one; plus fields written as explicit nulls). Escaped keys
# ("\u0069d") decode to the same name, so they are caught too. Only a mismatch (unknown
# fields, escapes next to ':' in strings, a real duplicate) pays for the exact check with the
# stdlib parser.

_NODEFAULT = object()
_plans: dict[type, tuple[tuple[str, Any, bool], ...]] = {}
_NUMBERS = (mi.IntType, mi.FloatType, mi.BoolType, mi.NoneType)


def _numbers_only(t: Any) -> bool:
    """True for a field type whose values hold no keys and no strings (numbers, lists of them)."""
    members = [inner for inner, _ in _extras(t)]
    return all(isinstance(m, _NUMBERS) or (isinstance(m, mi.ListType) and _numbers_only(m.item_type))
               for m in members)


def _plan(cls: type) -> tuple[tuple[str, Any, bool], ...]:
    """(field name, default or _NODEFAULT, numbers only) per Struct field. A field holding its
    default may have been absent from the JSON, so it is not counted as a key; a numbers-only
    field (``features``) has nothing inside to count, so it is not walked."""
    plan = _plans.get(cls)
    if plan is None:
        plan = tuple(
            (f.name,
             f.default if f.default is not msgspec.NODEFAULT
             else f.default_factory() if f.default_factory is not msgspec.NODEFAULT
             else _NODEFAULT if f.required else msgspec.UNSET,  # an UNSET default: absent unless given
             _numbers_only(f.type))
            for f in mi.type_info(cls).fields  # type: ignore[attr-defined]
        )
        _plans[cls] = plan
    return plan


_LEAVES = (int, float, bool, type(None))


def shape(obj: Any) -> tuple[int, int, int]:
    """(keys seen, ':' inside strings, nesting depth) of a decoded value. Iterative: decoded
    values may be nested nearly as deep as the recursion limit."""
    keys = colons = depth = 0
    stack: list[tuple[Any, int]] = [(obj, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        o, d = pop()
        cls = o.__class__
        if cls is str:
            colons += o.count(":")
        elif cls is dict:
            depth = max(depth, d)
            keys += len(o)
            for k, v in o.items():
                colons += k.count(":")
                if v.__class__ not in _LEAVES:
                    push((v, d + 1))
        elif cls is list:
            depth = max(depth, d)
            for v in o:
                if v.__class__ not in _LEAVES:
                    push((v, d + 1))
        elif isinstance(o, msgspec.Struct):
            depth = max(depth, d)
            for name, default, numbers_only in _plan(cls):
                v = getattr(o, name)
                if default is _NODEFAULT or (v is not None and v is not msgspec.UNSET and v != default):
                    keys += 1
                    if numbers_only:
                        depth = max(depth, d + 1) if v.__class__ is list else depth
                    elif v.__class__ not in _LEAVES:
                        push((v, d + 1))
    return keys, colons, depth


def _balanced(found: int, keys: int, colons: int, raw: bytes) -> bool:
    return found == keys or (found == keys + colons and b"\\" not in raw)


_presence: dict[type, tuple[msgspec.json.Decoder[Any], tuple[str, ...]]] = {}


def _explicit_nulls(obj: msgspec.Struct, raw: bytes) -> int:
    """How many top-level fields that default to None were written as an explicit null
    (``"meta": null``): invisible in the decoded Struct, so found by a second, cheap decode
    that skips everything else."""
    cls = type(obj)
    if cls not in _presence:
        names = tuple(name for name, default, _ in _plan(cls) if default is None)
        shell = msgspec.defstruct(f"{cls.__name__}Nulls", [(n, Any, msgspec.UNSET) for n in names])
        _presence[cls] = (msgspec.json.Decoder(shell), names)
    decoder, names = _presence[cls]
    nulls = [n for n in names if getattr(obj, n) is None]
    if not nulls:
        return 0
    try:
        shell = decoder.decode(raw)
    except (msgspec.MsgspecError, RecursionError):
        return 0
    return sum(getattr(shell, n) is not msgspec.UNSET for n in nulls)


def check_duplicates(raw: bytes, decoded: Any) -> None:
    """InvalidRecordError naming the first duplicated key, at any level, escaped or not."""
    found = raw.count(b":")
    keys, colons, _ = shape(decoded)
    if _balanced(found, keys, colons, raw):
        return
    if isinstance(decoded, msgspec.Struct):
        nulls = _explicit_nulls(decoded, raw)
        if nulls and _balanced(found, keys + nulls, colons, raw):
            return
    duplicate = find_duplicate(raw)
    if duplicate is not None:
        raise InvalidRecordError(f"duplicate key `{duplicate}`")


class _Pairs(list):  # type: ignore[type-arg]
    """A JSON object as its (key, value) pairs, duplicates kept."""


def _zero(_: str) -> int:
    return 0


def find_duplicate(raw: bytes) -> Optional[str]:
    """Path of the first repeated key (``meta.a``, ``id``), or None. Exact, and slow."""
    try:
        # Numbers are not needed here; skipping their conversion also avoids the stdlib's
        # 4300-digit int limit (msgspec has its own).
        doc = json.loads(raw, object_pairs_hook=_Pairs, parse_int=_zero, parse_float=_zero)
    except RecursionError:
        raise DecodeError("JSON nested too deeply") from None
    except ValueError as exc:
        raise DecodeError(f"JSON is malformed: {exc}") from None
    stack: list[tuple[Any, str]] = [(doc, "")]
    while stack:  # depth first, in document order; only containers are pushed
        o, path = stack.pop()
        children: list[tuple[Any, str]] = []
        if o.__class__ is _Pairs:
            seen: set[str] = set()
            for k, v in o:
                if k in seen:
                    return f"{path}.{k}" if path else k
                seen.add(k)
                if v.__class__ is _Pairs or v.__class__ is list:
                    children.append((v, f"{path}.{k}" if path else k))
        else:
            children = [(v, f"{path}[{i}]") for i, v in enumerate(o) if v.__class__ is _Pairs or v.__class__ is list]
        stack.extend(reversed(children))
    return None
