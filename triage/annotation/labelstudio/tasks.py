"""Review requests as Label Studio tasks. Pure: no HTTP, no Kafka.

A task's ``overlap`` is how many people Label Studio serves it to; the bridge sets it from the
request's ``annotators`` (``target_overlap``), since an import always takes the project's
"annotations per task". A task's ``data`` carries what an annotator and the bridge need (``sample_id`` is the key that
makes task creation idempotent); its ``predictions`` carry the model's guess as a
pre-annotation the annotator can accept with one click. Audit tasks carry no guess at all (no
pre-annotation, no guessed class or top guesses in the data): their labels check the model, and
an annotator who is shown the guess tends to confirm it.
"""

from __future__ import annotations

import base64
import math
import struct
import zlib
from typing import Any, Iterable, Mapping, Sequence
from xml.sax.saxutils import quoteattr

from triage.contracts import ReviewRequest

FROM_NAME = "label"  # the Choices control
TO_IMAGE = "image"
TO_TEXT = "summary"
PIXEL_SCALE = 16  # an 8x8 digit becomes 128x128 on screen
HIDDEN = "(hidden: audit)"  # what an audit task shows in place of the model's guess


def label_config(classes: Sequence[str], *, image: bool) -> str:
    """A single-choice classification config over the model's classes."""
    target = TO_IMAGE if image else TO_TEXT
    view = (f'<Image name="{TO_IMAGE}" value="$image" zoom="true"/>' if image
            else f'<Text name="{TO_TEXT}" value="$summary"/>')
    choices = "".join(f"<Choice value={quoteattr(c)}/>" for c in classes)
    return (f'<View>{view}<Header value="$reason: model $model_version guessed $predicted"/>'
            f'<Choices name="{FROM_NAME}" toName="{target}" choice="single" showInLine="true">{choices}</Choices></View>')


def has_image(feature_count: int) -> bool:
    """Features that fill a square grid are shown as a picture (digits look like digits)."""
    side = math.isqrt(feature_count)
    return feature_count >= 4 and side * side == feature_count


def png_data_uri(features: Sequence[float]) -> str:
    """A grayscale PNG of a square feature grid, min-max scaled, each value a block of pixels."""
    side = math.isqrt(len(features))
    lo, hi = min(features), max(features)
    span = (hi - lo) or 1.0
    grey = [int(round(255 * (v - lo) / span)) for v in features]
    rows = []
    for r in range(side):
        line = bytes(g for g in grey[r * side:(r + 1) * side] for _ in range(PIXEL_SCALE))
        rows.extend([b"\x00" + line] * PIXEL_SCALE)  # filter byte 0 per scanline
    size = side * PIXEL_SCALE

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def task_for(review: ReviewRequest, *, image: bool) -> dict[str, Any]:
    """The Label Studio task of one review request: data plus the model's guess (none for an audit)."""
    blind = review.reason == "audit"
    data: dict[str, Any] = {
        "sample_id": review.id,
        "features": list(review.features),
        "reason": review.reason,
        "priority": float(review.priority),
        "model_version": review.model_version,
        "predicted": HIDDEN if blind else review.predicted,
        "summary": f"sample {review.id}" + ("" if blind else ": " + ", ".join(f"{t.label} {t.p:.2f}" for t in review.top)),
    }
    if image:
        data["image"] = png_data_uri(review.features)
    if blind:
        return {"data": data}
    guess = {"from_name": FROM_NAME, "to_name": TO_IMAGE if image else TO_TEXT, "type": "choices",
             "value": {"choices": [review.predicted]}}
    return {"data": data, "predictions": [{"model_version": review.model_version,
                                           "score": float(review.confidence), "result": [guess]}]}


def target_overlap(annotators: int, labelled_by: Sequence[str], people: Iterable[str]) -> int:
    """The overlap a task needs for a request that asks for ``annotators`` people in all, of whom
    ``labelled_by`` labelled it already; ``people``: who annotated the task in Label Studio.

    Those of ``labelled_by`` who did it in Label Studio count towards the overlap, those who did it
    elsewhere (the console) do not; Label Studio annotators not in ``labelled_by`` came after the
    request and fill what it still needs. So a redelivered request asks for the same overlap as
    the first delivery, whatever was annotated in between."""
    done = set(labelled_by)
    missing = max(annotators - len(done), 0)
    return len(done & set(people)) + missing


def open_tasks(tasks: Mapping[str, int], overlaps: Mapping[str, int], annotations: Mapping[str, int]) -> int:
    """Tasks still waiting for someone: fewer live annotations than their overlap (a task that
    asks for two people is open after the first one's label). ``tasks``: sample -> task id;
    ``overlaps``: sample -> overlap (1 when unknown); ``annotations``: sample -> live annotations."""
    return sum(1 for sample in tasks if annotations.get(sample, 0) < overlaps.get(sample, 1))
