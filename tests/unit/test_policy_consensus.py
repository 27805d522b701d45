"""The scorer's annotator count per review request, and a budget that counts human actions."""

from __future__ import annotations

from typing import Optional

import numpy as np
import pytest

from triage.policies.consensus import ActionsPerRequest, AnnotatorPlanner, consensus_policy
from triage.policies.factory import make_policy
from triage.policies.stack import PolicyStack
from triage.policies.threshold import ThresholdRule
from triage.quality.consensus import ConsensusPolicy
from triage.scoring.routing import CONFIDENT, Decisions, GATE, OUTLIER, UNCERTAIN
from triage.scoring.scores import scores_from_probs
from triage.settings import PolicySettings, QualitySettings


def test_the_most_uncertain_share_gets_consensus_size_the_rest_one() -> None:
    planner = AnnotatorPlanner(ConsensusPolicy(share=0.2, size=3, max_annotators=3))
    reason = np.array([UNCERTAIN] * 8 + [OUTLIER, OUTLIER, GATE, CONFIDENT, CONFIDENT], dtype=np.int8)
    review = reason != CONFIDENT
    priority = np.array([0.1, 0.9, 0.3, 0.2, 0.5, 0.4, 0.6, 0.7, 0.95, 0.05, 0.99, 0.99, 0.0])
    got = planner.plan(reason, review, priority)
    # 10 uncertain/outlier requests: round(0.2 * 10) = 2, the two highest priorities (rows 8, 1)
    assert got.tolist() == [1, 3, 1, 1, 1, 1, 1, 1, 3, 1, 1, 1, 1]
    assert got[10] == 1, "a gate request asks one person, whatever its priority"
    assert got[11] == 1, "an auto-accepted row (an audit copy at most) asks one person"


def test_held_rows_and_ties_and_the_off_switch() -> None:
    planner = AnnotatorPlanner(ConsensusPolicy(share=0.5, size=2))
    reason = np.full(4, UNCERTAIN, dtype=np.int8)
    review = np.array([True, False, True, True])  # row 1 held (provisional): not a request
    got = planner.plan(reason, review, np.full(4, 0.5))
    assert got.tolist() == [2, 1, 2, 1]  # round(0.5 * 3) = 2, ties in row order
    for off in (None, ConsensusPolicy(share=0.0, size=2), ConsensusPolicy(share=1.0, size=1)):
        assert AnnotatorPlanner(off).plan(reason, review, np.full(4, 0.5)).tolist() == [1, 1, 1, 1]
        assert AnnotatorPlanner(off).expected == 1.0


def test_every_batch_size_gets_exactly_the_planned_count() -> None:
    rng = np.random.default_rng(3)
    policy = ConsensusPolicy(share=0.3, size=2)
    planner = AnnotatorPlanner(policy)
    for n in range(1, 60):
        reason = rng.choice([CONFIDENT, UNCERTAIN, OUTLIER, GATE], size=n).astype(np.int8)
        review = reason != CONFIDENT
        priority = rng.random(n)
        got = planner.plan(reason, review, priority)
        eligible = np.flatnonzero((reason == UNCERTAIN) | (reason == OUTLIER))
        picked = np.flatnonzero(got == 2)
        assert len(picked) == round(0.3 * len(eligible))
        assert set(picked) <= set(eligible)
        if len(picked) and len(picked) < len(eligible):  # the picks outrank every other request
            rest = np.setdiff1d(eligible, picked)
            assert priority[picked].min() >= priority[rest].max()
        assert (got[~np.isin(np.arange(n), picked)] == 1).all()


def test_actions_per_request_starts_at_the_plan_and_follows_what_was_asked() -> None:
    ratio = ActionsPerRequest(expected=1.5)
    assert ratio.ratio == 1.5
    for _ in range(300):
        ratio.record(np.array([2, 2, 2, 1]), np.array([True, True, True, False]))
    assert ratio.ratio == pytest.approx(2.0, abs=0.01)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _decide(stack: PolicyStack, scores: object) -> Decisions:
    """One batch of 100, 10 s after the last: 36,000 samples/h."""
    clock = stack.budget.clock
    assert isinstance(clock, Clock)
    clock.now += 10.0
    return stack.decide(scores)  # type: ignore[arg-type]


def _stack(consensus: Optional[ConsensusPolicy]) -> PolicyStack:
    clock = Clock()
    s = PolicySettings(annotation_capacity=3600, budget_backlog_hours=1.0, uncertainty_threshold=0.0,
                       review_rate_window=2000)
    stack = PolicyStack(s, ThresholdRule(s), clock=clock, consensus=consensus)
    stack.feed_backlog(3600)  # at target: the annotators absorb 3,600 actions/h = 10% of the samples
    return stack


def _run(stack: PolicyStack, batches: int = 60) -> tuple[float, float]:
    """(review requests, human actions) per sample over the last half of the run."""
    rng = np.random.default_rng(0)
    requests = actions = seen = 0
    for i in range(batches):
        d = _decide(stack, scores_from_probs(rng.dirichlet([1, 1, 1], size=100), "margin"))
        assert d.annotators is not None
        if i >= batches // 2:
            requests += int(d.review.sum())
            actions += int(d.annotators[d.review].sum())
            seen += 100
    return requests / seen, actions / seen


@pytest.mark.parametrize("share,size", [(1.0, 2), (0.5, 3), (0.2, 2)])
def test_the_budget_caps_human_actions_not_requests(share: float, size: int) -> None:
    one_each = _run(_stack(None))
    assert one_each[0] == one_each[1] == pytest.approx(0.10, abs=0.012)
    requests, actions = _run(_stack(ConsensusPolicy(share=share, size=size, max_annotators=size)))
    per_request = 1 + share * (size - 1)
    assert actions == pytest.approx(0.10, abs=0.012), "the annotators' capacity is spent, not exceeded"
    assert requests == pytest.approx(0.10 / per_request, abs=0.012), "fewer requests, since each costs more"


def test_forced_reviews_over_the_budget_in_actions_are_a_conflict() -> None:
    # outliers at 7% of the stream fit a 10% budget as requests, but not at 2 people each
    stack = _stack(ConsensusPolicy(share=1.0, size=2))
    rng = np.random.default_rng(1)
    for _ in range(30):
        out = np.where(rng.random(100) < 0.07, 3.0, 0.0)
        _decide(stack, scores_from_probs(rng.dirichlet([1, 1, 1], size=100), "margin", outlier=out))
    assert stack.snapshot().budget_conflict is True
    alone = _stack(None)
    rng = np.random.default_rng(1)
    for _ in range(30):
        out = np.where(rng.random(100) < 0.07, 3.0, 0.0)
        _decide(alone, scores_from_probs(rng.dirichlet([1, 1, 1], size=100), "margin", outlier=out))
    assert alone.snapshot().budget_conflict is False


def test_make_policy_reads_the_quality_section() -> None:
    q = QualitySettings(consensus_share=0.5, consensus_size=3, consensus_max_annotators=3)
    assert consensus_policy(q).share == 0.5 and consensus_policy(q).size == 3
    s = PolicySettings(uncertainty_threshold=0.0)
    probs = np.tile([[0.4, 0.35, 0.25]], (10, 1))
    d = make_policy(s, None, q).decide(scores_from_probs(probs, "margin"))
    assert d.annotators is not None and sorted(d.annotators.tolist()) == [1] * 5 + [3] * 5
    d = make_policy(s).decide(scores_from_probs(probs, "margin"))
    assert d.annotators is not None and (d.annotators == 1).all()


def test_the_backlog_counts_the_labels_a_request_asks_for() -> None:
    from consumers.backlog import labels_asked
    from triage.contracts import ReviewRequest, ScoreFields, encode

    def request(annotators: int, labelled_by: list[str]) -> bytes:
        return encode(ReviewRequest("s", [0.0], "uncertain", "a", 0.5, ScoreFields(0.1, 0.5, None), 0.5, "v1",
                                    None, [], annotators, labelled_by))

    assert labels_asked(request(1, [])) == 1 and labels_asked(request(3, [])) == 3
    assert labels_asked(request(3, ["alice", "bob"])) == 1  # a tiebreak: one more label
    assert labels_asked(b'{"id": "old", "features": [1.0]}') == 1  # a request from before the field
    assert labels_asked(b"junk") == 1 and labels_asked(None) == 1


def test_the_backlog_does_not_take_the_retrain_jobs_markers_for_answers() -> None:
    from consumers.backlog import labels_answered
    from triage.contracts import encode_label
    from triage.lifecycle.labelstore import RELABEL_MARK, TIEBREAK_MARK, UNDO

    assert labels_answered(encode_label("s", "cat", annotator="alice")) == 1
    assert labels_answered(encode_label("s", UNDO, annotator="alice")) == -1  # the answer is withdrawn
    assert labels_answered(encode_label("s", RELABEL_MARK, annotator="triage-retrain")) == 0
    assert labels_answered(encode_label("s", TIEBREAK_MARK, annotator="triage-retrain")) == 0
    assert labels_answered(b"junk") == 1 and labels_answered(None) == 1


def test_an_undone_or_deleted_answer_is_owed_again_in_the_backlog() -> None:
    """It counted an undo, and the label the Label Studio bridge republishes on a deletion, as
    answers: each one hid an open request from the budget controller."""
    from consumers.backlog import labels_answered, labels_asked
    from triage.contracts import LabelOrigin, encode_label
    from triage.lifecycle.labelstore import UNDO

    def backlog(requests: int, labels: list[bytes]) -> int:
        asked = sum(labels_asked(b'{"annotators": 1}') for _ in range(requests))
        return max(asked - sum(labels_answered(v) for v in labels), 0)

    # the console: a label, its undo (the sample is shown again), the label again; one more request open
    console = [encode_label("s1", "cat", annotator="ann"), encode_label("s1", UNDO, annotator="ann"),
               encode_label("s1", "dog", annotator="ann")]
    assert backlog(2, console) == 1
    # Label Studio: three labels asked (s2 by two people) and given, then one of s2's deleted (an
    # anonymous one: an undo, then the label that remains republished), so s2's task is open again
    def ls(sample: str, label: str, ann: int, deleted: int | None = None) -> bytes:
        return encode_label(sample, label, origin=LabelOrigin("label-studio", ann, ann, deleted))

    studio = [ls("s1", "cat", 1), ls("s2", "dog", 2), ls("s2", "cow", 3),
              ls("s2", UNDO, 2, deleted=2), ls("s2", "cow", 3, deleted=2)]
    assert backlog(3, studio) == 1
