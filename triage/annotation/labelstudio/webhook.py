"""The contract of Label Studio's webhook bodies (1.23.2, ``send_payload=true``): only the fields
the bridge reads are declared, every other field is ignored. Pure: no HTTP.

``decode_webhook`` turns a body into a ``Webhook`` or raises ``WebhookRefused`` with a bounded
``reason`` (a metric label): ``too_large``, ``not_json``, ``too_deep`` or ``bad_shape``. The
recorded bodies in tests/labelstudio_payloads.json decode; see tests/unit/test_labelstudio_webhook.py.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

import msgspec

from triage.contracts._base import decode_with
from triage.errors import DecodeError, InputError

Id = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
ANNOTATION_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED")
DELETION_ACTIONS = ("ANNOTATIONS_DELETED",)
TASK_DELETION_ACTIONS = ("TASKS_DELETED",)  # a deleted task's annotations go with it, unannounced


class ChoiceValue(msgspec.Struct):
    choices: list[str] = []


class Region(msgspec.Struct):
    type: str = ""
    value: ChoiceValue = msgspec.field(default_factory=ChoiceValue)


class TaskData(msgspec.Struct):
    sample_id: Optional[str] = None
    features: Optional[list[float]] = None


class Task(msgspec.Struct):
    id: Id
    data: TaskData = msgspec.field(default_factory=TaskData)


class Annotation(msgspec.Struct):
    id: Id
    result: Optional[list[Region]] = None
    was_cancelled: bool = False
    completed_by: Optional[Id] = None  # a user id
    updated_at: Optional[str] = None
    created_username: Optional[str] = None


class AnnotationRef(msgspec.Struct):
    id: Id


class TaskRef(msgspec.Struct):
    id: Id


class Webhook(msgspec.Struct):
    action: str
    task: Optional[Task] = None
    annotation: Optional[Annotation] = None
    annotations: Optional[list[AnnotationRef]] = None
    tasks: Optional[list[TaskRef]] = None  # TASKS_DELETED: only their ids

    def task_dict(self) -> dict[str, Any]:
        """The task in the shape of a task listing (what the ledger compares)."""
        return msgspec.to_builtins(self.task) if self.task is not None else {}

    def annotation_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self.annotation) if self.annotation is not None else {}


class WebhookRefused(Exception):
    """A body the bridge answers with a 4xx; ``reason`` is the metric label, ``status`` the answer."""

    def __init__(self, reason: str, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.status = status


_decoder = msgspec.json.Decoder(Webhook)


def decode_webhook(raw: bytes, max_bytes: int) -> Webhook:
    """A webhook body -> ``Webhook``, or ``WebhookRefused``. An annotation event must carry its
    task and annotation; other actions pass (the bridge ignores actions it did not ask for)."""
    if len(raw) > max_bytes:
        raise WebhookRefused("too_large", f"body of {len(raw)} bytes > limit {max_bytes}", 413)
    try:
        _, body = decode_with(_decoder, raw, max_bytes, "webhook body")
    except DecodeError as exc:
        raise WebhookRefused("too_deep" if "nested too deeply" in exc.message else "not_json", exc.message) from None
    except InputError as exc:
        raise WebhookRefused("bad_shape", exc.message) from None
    if body.action in ANNOTATION_ACTIONS and (body.task is None or body.annotation is None):
        raise WebhookRefused("bad_shape", f"{body.action} without its task and annotation")
    if body.action in DELETION_ACTIONS and body.annotations is None:
        raise WebhookRefused("bad_shape", f"{body.action} without the deleted annotations")
    if body.action in TASK_DELETION_ACTIONS and body.tasks is None:
        raise WebhookRefused("bad_shape", f"{body.action} without the deleted tasks")
    return body  # type: ignore[no-any-return]
