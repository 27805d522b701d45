"""Retrain requests (format 1) on the retrain-requests topic.

Written by ``triage monitor`` when a drift alarm fires or the estimated accuracy falls below
``--accuracy-floor``; read by ``triage retrain`` (``--every S`` retrains early on one,
``--on-request`` retrains only on them). A request is a hint, never an order to skip the
promotion gate: a retrain it triggers is judged like any other.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Optional

import msgspec

from triage.contracts._base import TEXT_MAX_CHARS, EpochMs, check_struct, decode_with
from triage.contracts.models import Version

REASONS = ("drift", "estimated_accuracy")


class RetrainRequest(msgspec.Struct):
    SCHEMA_VERSION: ClassVar[int] = 1

    model_version: Version  # the version that looked wrong
    reason: Literal["drift", "estimated_accuracy"]
    signal: Annotated[str, msgspec.Meta(min_length=1, max_length=TEXT_MAX_CHARS, extra={"text": True})]
    statistic: float  # the detector's statistic, or the estimate's upper end
    threshold: float  # what it crossed: the detector's threshold, or the accuracy floor
    ts: EpochMs  # epoch ms when the monitor saw it (year 9999 at most, as every ts)


_decoder = msgspec.json.Decoder(RetrainRequest)


def decode_retrain_request(value: Optional[bytes], max_bytes: int) -> RetrainRequest:
    """Bytes from the retrain-requests topic -> RetrainRequest, or an InputError."""
    raw, request = decode_with(_decoder, value, max_bytes, "retrain request")
    check_struct(raw, request)
    return request  # type: ignore[no-any-return]
