"""From a label event to a label-store row: the one rule the retrain ingest and ``triage labels
rebuild`` share, so a rebuilt store holds exactly the rows the ingest would have written.

Order rule of a rebuild: rows in (partition, offset) order. ``LabelRows.arrays`` trains in that
order too (latest label per id), so a store rebuilt from the topic trains on the same rows in
the same order as the store the ingest wrote, whatever order its batches interleaved partitions.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from triage.contracts import Label
from triage.errors import LabelError
from triage.lifecycle.labelstore import MARKERS, RESERVED, UNDO


def label_row(label: Label, partition: int, offset: int, *, review_features: Mapping[str, list[float]],
              classes: frozenset[str], feature_count: int, accept_new_classes: bool) -> dict[str, Any]:
    """The label-store row of a valid label, or a LabelError saying why there is none.
    Features come from the label (format 2 always carries them), else from the review record."""
    features: Optional[list[float]] = label.features if label.features is not None else review_features.get(label.id)
    bare = label.label == UNDO or label.label in MARKERS  # carries no class: needs no features
    if features is None and bare:
        features = []
    elif features is None:
        raise LabelError(f"no review record with id {label.id!r} and no `features` in the label",
                         code="unjoinable")
    if not bare and len(features) != feature_count:
        raise LabelError(f"`features` has {len(features)} values; the model takes {feature_count}")
    if label.label not in RESERVED and label.label not in classes and not accept_new_classes:
        raise LabelError(f"unknown class {label.label!r} (known: {', '.join(sorted(classes))}); "
                         "set TRIAGE_ACCEPT_NEW_CLASSES=true to learn new classes", code="unknown_class")
    return {"id": label.id, "label": label.label, "features": features, "annotator": label.annotator,
            "partition": partition, "offset": offset}
