"""Annotator quality: accuracy against a reference, leave-one-out estimates, Krippendorff's alpha."""

from __future__ import annotations

import pytest

from triage.quality.annotators import accuracy_against, agreement, estimate_accuracy
from triage.quality.base import Annotation
from tests.unit.test_quality_aggregate import noisy_crowd


def test_leave_one_out_estimates_rank_annotators_by_their_true_accuracy() -> None:
    rows, _ = noisy_crowd([0.05, 0.2, 0.4], samples=400)
    est = estimate_accuracy(rows)
    assert est["w0"].accuracy > est["w1"].accuracy > est["w2"].accuracy
    assert est["w0"].accuracy == pytest.approx(0.95, abs=0.05)
    assert est["w0"].labels == 400


def test_accuracy_against_a_reference_counts_only_overlapped_samples_by_default() -> None:
    rows = [Annotation("t1", "a", "1"), Annotation("t1", "b", "2"), Annotation("t2", "a", "9")]
    q = accuracy_against(rows, {"t1": "1", "t2": "1"})
    assert (q["a"].agreed, q["a"].compared, q["a"].labels) == (1, 1, 2)
    assert q["b"].accuracy == 0.0
    everything = accuracy_against(rows, {"t1": "1", "t2": "1"}, only_overlapped=False)
    assert everything["a"].compared == 2 and everything["a"].accuracy == 0.5


def test_krippendorff_alpha_is_one_for_agreement_and_low_for_noise() -> None:
    same = [Annotation(f"t{i}", w, str(i % 3)) for i in range(30) for w in ("a", "b")]
    assert agreement(same) == pytest.approx(1.0)
    rows, _ = noisy_crowd([0.7, 0.7], samples=300)
    alpha = agreement(rows)
    assert alpha is not None and alpha < 0.2
    assert agreement([Annotation("t", "a", "1")]) is None
