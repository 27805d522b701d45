"""Compatibility matrix without a broker (issue 12): the model adapter loads every zoo model and
its most probable class equals onnxruntime's own prediction on every row.

The same zoo, served end to end through Kafka: tests/integration/test_compat_matrix.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.compat.zoo import KNOWN_EXPORTER_BUGS, ZooSkip, available_kinds, build_one, build_zoo
from triage.model import OnnxClassifier

KINDS = available_kinds()


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """kind -> ZooModel, or the reason the exporter could not build it."""
    skipped: dict[str, str] = {}
    models = build_zoo(tmp_path_factory.mktemp("zoo"), KINDS, skipped=skipped)
    return {**skipped, **{m.kind: m for m in models}}


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


@pytest.mark.parametrize("kind", sorted(KNOWN_EXPORTER_BUGS))
def test_known_exporter_bugs_still_fail(kind: str, tmp_path: Any) -> None:
    """When an exporter starts writing this kind, it belongs in the matrix."""
    with pytest.raises(ZooSkip):
        build_one(kind, tmp_path)
