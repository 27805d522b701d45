"""Consensus where it pays: annotators per request, within the budget, never twice the same."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, strategies as st

from triage.quality.base import Annotation
from triage.quality.consensus import ConsensusPolicy, collect, has_majority


def panel(answers: dict[str, list[str]]):
    """ask(): the next unused annotator of ``a1..aN`` answers with ``answers[sample][k]``."""
    asked: list[tuple[str, str]] = []

    def ask(sample: str, used: frozenset[str]) -> Annotation | None:
        for k, label in enumerate(answers[sample]):
            name = f"a{k + 1}"
            if name not in used:
                asked.append((sample, name))
                return Annotation(sample, name, label)
        return None

    return ask, asked


def test_majority_needs_more_than_half() -> None:
    assert has_majority(["1"]) and has_majority(["1", "1", "2"])
    assert not has_majority(["1", "2"]) and not has_majority(["1", "2", "3"]) and not has_majority([])


def test_the_most_uncertain_share_gets_two_and_a_third_only_when_they_disagree() -> None:
    ask, asked = panel({"s0": ["1", "2", "1"], "s1": ["3", "3", "3"], "s2": ["4", "5", "6"], "s3": ["7", "8", "9"]})
    got = collect(ConsensusPolicy(share=0.5), ["s0", "s1", "s2", "s3"], budget=100, ask=ask)
    per = {s: [a.annotator for a in got.annotations if a.sample == s] for s in ("s0", "s1", "s2", "s3")}
    assert per == {"s0": ["a1", "a2", "a3"], "s1": ["a1", "a2"], "s2": ["a1"], "s3": ["a1"]}
    assert got.spent == len(got.annotations) == 7


def test_tiebreak_off_keeps_two_disagreeing_labels() -> None:
    ask, _ = panel({"s0": ["1", "2", "1"]})
    got = collect(ConsensusPolicy(share=1.0, tiebreak=False), ["s0"], budget=10, ask=ask)
    assert [a.label for a in got.annotations] == ["1", "2"]


def test_a_doubtful_annotator_gets_a_second_opinion() -> None:
    ask, _ = panel({"s0": ["1", "2", "2"], "s1": ["1", "1"]})
    got = collect(ConsensusPolicy(doubt_below=0.7), ["s0"], budget=10, ask=ask, accuracy={"a1": 0.6})
    assert [a.label for a in got.annotations] == ["1", "2", "2"]  # second opinion, then the tiebreak
    ask, _ = panel({"s1": ["1", "1"]})
    got = collect(ConsensusPolicy(doubt_below=0.7), ["s1"], budget=10, ask=ask, accuracy={"a1": 0.9})
    assert len(got.annotations) == 1


def test_a_relabel_counts_the_stored_label_and_asks_someone_else() -> None:
    ask, asked = panel({"s0": ["1", "2", "2"]})
    prior = {"s0": [Annotation("s0", "a1", "1")]}
    got = collect(ConsensusPolicy(), ["s0"], budget=10, ask=ask, prior=prior, planned=[1])
    assert [(a.annotator, a.label) for a in got.annotations] == [("a2", "2"), ("a3", "2")]


@given(budget=st.integers(0, 30), share=st.floats(0, 1), n=st.integers(0, 20), seed=st.integers(0, 10_000))
def test_consensus_never_exceeds_the_budget_nor_shows_a_sample_twice_to_one_annotator(
        budget: int, share: float, n: int, seed: int) -> None:
    import random

    rnd = random.Random(seed)
    answers = {f"s{i}": [rnd.choice("abc") for _ in range(3)] for i in range(n)}
    ask, asked = panel(answers)
    got = collect(ConsensusPolicy(share=share), list(answers), budget=budget, ask=ask)
    assert got.spent == len(got.annotations) <= budget
    assert len(set(asked)) == len(asked)
    # requests are served in priority order: a later one is labelled only if every earlier one was
    labelled = [s in got.samples for s in answers]
    assert labelled == sorted(labelled, reverse=True)


def test_an_invalid_policy_is_refused() -> None:
    for bad in (dict(share=1.5), dict(size=0), dict(size=4, max_annotators=3)):
        with pytest.raises(ValueError):
            ConsensusPolicy(**bad)  # type: ignore[arg-type]
    assert list(itertools.islice([ConsensusPolicy(share=0.3).planned(r, 10) for r in range(10)], 4)) == [2, 2, 2, 1]
