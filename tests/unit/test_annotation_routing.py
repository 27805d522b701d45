"""Rendezvous routing of review requests over an annotator pool (the console's --pool)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings, strategies as st

from triage.annotation.routing import assignees, parse_pool, ranking, weight

names = st.lists(st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=1, max_size=8),
                 min_size=1, max_size=8, unique=True)
ids = st.text(min_size=1, max_size=40)


@settings(max_examples=300)  # cheap (pure hashing): more than the profile default
@given(sample=ids, pool=names, k=st.integers(1, 10), data=st.data())
def test_a_request_reaches_exactly_what_it_still_needs_never_one_who_labelled_it(sample, pool, k, data) -> None:
    labelled_by = data.draw(st.lists(st.sampled_from([*pool, "outsider"]), unique=True, max_size=len(pool)))
    got = assignees(sample, pool, k, labelled_by)
    free = [n for n in pool if n not in labelled_by]
    assert len(got) == min(max(k - len(labelled_by), 0), len(free))
    assert len(set(got)) == len(got) and set(got) <= set(free)
    # every console decides alone: each annotator of the pool agrees on the same set
    assert {n for n in pool if n in assignees(sample, list(reversed(pool)), k, labelled_by)} == set(got)


@settings(max_examples=300)  # cheap (pure hashing): more than the profile default
@given(sample=ids, pool=names, k=st.integers(1, 8))
def test_one_more_annotator_reaches_exactly_one_new_person(sample, pool, k) -> None:
    first = assignees(sample, pool, k, [])
    assert first == ranking(sample, pool)[:k]
    assert set(first) <= set(assignees(sample, pool, k + 1, []))  # top-(k+1) contains top-k
    tiebreak = assignees(sample, pool, len(first) + 1, first)  # the first ones labelled it
    assert len(tiebreak) == (1 if len(first) < len(pool) else 0)
    assert not set(tiebreak) & set(first)
    assert tiebreak == ranking(sample, pool)[len(first):len(first) + 1]


def test_load_spreads_evenly_and_is_stable_across_calls() -> None:
    pool = ["alice", "bob", "carol", "dave"]
    load = Counter(name for i in range(20_000) for name in assignees(f"s-{i}", pool, 2, []))
    assert sum(load.values()) == 40_000
    assert all(abs(n - 10_000) < 400 for n in load.values()), load  # 4 sigma of a fair share
    assert weight("s-1", "alice") == weight("s-1", "alice") and ranking("s-1", pool) == ranking("s-1", pool[::-1])


def test_a_new_pool_member_only_takes_requests_for_itself() -> None:
    pool = ["alice", "bob", "carol"]
    moved = 0
    for i in range(5000):
        before = set(assignees(f"s-{i}", pool, 1, []))
        after = set(assignees(f"s-{i}", [*pool, "dave"], 1, []))
        if before != after:
            assert after == {"dave"}
            moved += 1
    assert 0.2 < moved / 5000 < 0.3  # about a quarter goes to the newcomer, nothing else moves


def test_parse_pool() -> None:
    assert parse_pool(" alice, bob,,alice ,carol") == ["alice", "bob", "carol"]
    assert parse_pool(" , ") == []
