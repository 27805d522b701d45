"""What the scorer writes (format 1): predictions and review requests.

Each Struct encodes byte for byte like the dict it replaced (same keys, same order; Structs
encode about twice as fast). Review requests are also *read* (retrain join index, audit
consumer, annotator console), and predictions by downstream readers: the decoders accept
everything the scorer writes, check types, and validate ``id`` and ``meta`` like a sample's.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Optional

import msgspec

from triage.contracts._base import Float32, Id, Text, MetaDict, check_struct, check_text, decode_with


# What the scorer computes can only fall in these ranges; a reader (the monitor's estimate and
# drift detectors above all) must not fold a confidence of 7 or -1e308 as if a model wrote it.
Probability = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
NonNegative = Annotated[float, msgspec.Meta(ge=0.0)]


class ScoreFields(msgspec.Struct, gc=False):
    margin: Probability  # top-1 minus top-2 probability
    entropy: NonNegative  # normalized entropy of the probabilities
    outlier: Optional[NonNegative]  # distance over threshold; null when outlier detection is off


class TopClass(msgspec.Struct, gc=False):
    label: str
    p: Probability


class Prediction(msgspec.Struct, gc=False):
    """An auto-accepted prediction on the predictions topic."""

    SCHEMA_VERSION: ClassVar[int] = 1

    id: Id
    label: str
    confidence: Probability
    scores: ScoreFields
    model_version: str
    meta: Optional[MetaDict]


class ProvisionalPrediction(Prediction, gc=False):
    """A prediction published but not auto-accepted (a gate or hygiene hold): the same keys
    as a Prediction, then these three."""

    provisional: bool
    provisional_reason: str  # the hold, e.g. "gate"
    review_reason: Optional[str]  # why it would go to review; null when it was confident


class PredictionRecord(Prediction, gc=False):
    """What ``decode_prediction`` returns: either kind of prediction (the provisional fields
    take their defaults on a plain one)."""

    provisional: bool = False
    provisional_reason: Optional[str] = None
    review_reason: Optional[str] = None


# Reasons a review request is published with besides the scorer's (routing.REASONS): the retrain
# job's requests for one more annotator on a stored label.
RELABEL = "relabel"  # cleanlab flagged the stored label as likely wrong
TIEBREAK = "tiebreak"  # the sample's labels have no strict majority
Annotators = Annotated[int, msgspec.Meta(ge=1, le=10)]


class ReviewRequest(msgspec.Struct, gc=False):
    """A sample for a human: uncertain, outlier, an audit copy of an accepted prediction, or
    (from the retrain job) a stored label that needs one more opinion (relabel, tiebreak).

    ``annotators`` and ``labelled_by`` were added to format 1 (a request without them reads as
    one annotator, nobody excluded)."""

    SCHEMA_VERSION: ClassVar[int] = 1

    id: Id
    features: list[Float32]
    reason: str  # uncertain | outlier | audit (routing.REASONS)
    predicted: str
    confidence: Probability
    scores: ScoreFields
    priority: float  # higher = review sooner
    model_version: str
    meta: Optional[MetaDict] = None
    top: list[TopClass] = []  # the model's top guesses, best first
    annotators: Annotators = 1  # distinct people the sample should have labels from, in all
    labelled_by: list[Text] = []  # who labelled it already: never shown to them again


_review_decoder = msgspec.json.Decoder(ReviewRequest)
_prediction_decoder = msgspec.json.Decoder(PredictionRecord)


def decode_review(value: Optional[bytes], max_bytes: int) -> ReviewRequest:
    """Bytes from the review topic -> ReviewRequest, or an InputError."""
    raw, review = decode_with(_review_decoder, value, max_bytes, "review request")
    check_struct(raw, review)
    for i, name in enumerate(review.labelled_by):  # list items: the struct's text rules see fields only
        check_text(f"labelled_by[{i}]", name)
    return review  # type: ignore[no-any-return]


def decode_prediction(value: Optional[bytes], max_bytes: int) -> PredictionRecord:
    """Bytes from the predictions topic (plain or provisional) -> PredictionRecord."""
    raw, prediction = decode_with(_prediction_decoder, value, max_bytes, "prediction")
    check_struct(raw, prediction)
    return prediction  # type: ignore[no-any-return]
