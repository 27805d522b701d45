"""Compatibility matrix without a broker (issue 12), for every kind of the zoo:

- the model adapter loads it and its most probable class equals onnxruntime's own prediction on
  every row;
- the serving path as `triage serve --model PATH --reference REF [flags]` builds it (the same
  parser, settings, preparation and batch handler) labels every row as onnxruntime does, one
  output per sample and no dead letter.

A few kinds also go through `triage serve` and the broker: tests/integration/test_compat_matrix.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.compat.zoo import (KNOWN_EXPORTER_BUGS, ZooModel, ZooSkip, assert_labelled_like_onnxruntime,
                              available_kinds, build_one, labels_by_id, sample_records)
from triage.cli import build_parser, settings_from_args
from triage.lifecycle.loading import serving_model_from_file
from triage.model import OnnxClassifier
from triage.policies import make_policy
from triage.records import RecordBatch
from triage.scoring.handlers import BatchConfig, process_batch

KINDS = available_kinds()


@pytest.mark.parametrize("kind", KINDS)
def test_adapter_argmax_matches_onnxruntime(kind: str, zoo: dict[str, Any]) -> None:
    model = zoo[kind]
    assert not isinstance(model, str), model  # the exporter could not build it: not a reason to skip
    # as `triage serve --model PATH --reference REF [flags]` builds it: the feature count
    # comes from the reference data
    clf = OnnxClassifier(model.path, feature_count=model.X.shape[1], **model.flag_kwargs())  # type: ignore[arg-type]
    probs = clf.predict_proba(model.X)
    assert probs.shape == (len(model.X), len(clf.spec.classes))
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-3)
    got = [clf.spec.classes[i] for i in probs.argmax(axis=1)]
    wrong = [(i, g, e) for i, (g, e) in enumerate(zip(got, model.expected)) if g != e]
    assert not wrong, (
        f"{kind}: the adapter disagrees with onnxruntime on {len(wrong)}/{len(got)} rows, "
        f"e.g. (row, adapter, onnxruntime) {wrong[:5]}; classes {clf.spec.classes}"
    )


def served_labels(model: ZooModel) -> tuple[dict[str, list[str]], list[bytes]]:
    """Sample id -> every label the serving path gave it, and the dead letters: settings from the
    `triage serve` parser, the model prepared by `serving_model_from_file`, one batch through
    `process_batch` with the scorer's policy."""
    args = build_parser().parse_args(["serve", "--model", str(model.path), "--reference", str(model.reference),
                                      *model.flags])
    s = settings_from_args(args)
    served = serving_model_from_file(s.serving, s.policy)
    batch = RecordBatch()
    for i, (key, value) in enumerate(sample_records(model)):
        batch.append(s.topics.samples_topic, 0, i, 0, key, value)
    result = process_batch(batch, served, make_policy(s.policy), BatchConfig.of(s.serving, s.policy, s.topics))
    return labels_by_id(((o.topic, o.value) for o in result.outputs), s.topics)


@pytest.mark.parametrize("kind", KINDS)
def test_serving_path_labels_every_row_like_onnxruntime(kind: str, zoo: dict[str, Any]) -> None:
    model = zoo[kind]
    assert not isinstance(model, str), model
    labels, dead = served_labels(model)
    assert not dead, f"{kind}: {len(dead)} dead letters, e.g. {dead[0][:200]!r}"
    assert_labelled_like_onnxruntime(model, labels)


@pytest.mark.parametrize("kind", sorted(KNOWN_EXPORTER_BUGS))
def test_known_exporter_bugs_still_fail(kind: str, tmp_path: Any) -> None:
    """When an exporter starts writing this kind, it belongs in the matrix."""
    with pytest.raises(ZooSkip):
        build_one(kind, tmp_path)
