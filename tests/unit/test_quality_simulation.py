"""The label-quality replay: raw labels and aggregates in the label store, flagged labels held
out of training until reviewed again, the same budget of human actions for every arm."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from triage.lifecycle.labelstore import UNDO
from triage.quality.aggregate import aggregate
from triage.settings import Settings
from triage.simulation.annotators import AnnotatorPanel
from triage.simulation.datasets import load_labelled, split
from triage.simulation.quality import ARMS, LATEST_WINS, NoisyReplay, arm_from_settings, one_step, parse_arms
from triage.simulation.quality_report import POLICY, interval
from triage.simulation.replay import ReplayConfig

X, Y = load_labelled("sklearn:digits")
PANEL = AnnotatorPanel(tuple(sorted(set(Y))), noise=(0.1, 0.2, 0.4))
CFG = ReplayConfig(budget=110, retrain_growth=0.5)


def replay(arm_name: str = "", **quality: object) -> NoisyReplay:
    arm = ARMS[arm_name] if arm_name else arm_from_settings("test", one_step(**quality))
    return NoisyReplay(split(X, Y, 0, 0.25), POLICY, 0, CFG, Settings(), arm, PANEL)


def test_flagged_labels_stay_out_of_training_until_reviewed_then_come_back_aggregated() -> None:
    r = replay(relabel_share=0.5)
    try:
        r.step()
        held = dict(r.held)
        assert held, "cleanlab flagged nothing"
        latest = r.store.latest()
        assert not set(held) & set(latest)  # held out: an undo row retracted each
        rows = [row for _, row in r.store.rows()]
        assert all(any(row["id"] == s and row["label"] == UNDO for row in rows) for s in held)
        r.step()
        back = [s for s in held if s not in r.held]
        assert back, "no flagged label was reviewed again in the next step"
        latest = r.store.latest()
        for s in back:
            raw = [a for a in r.raw if a.sample == s]
            assert len({a.annotator for a in raw}) >= 2  # someone else reviewed it
            assert latest[s]["label"] == aggregate(raw, "majority")[s]
        assert r.counts["relabel_sent"] == len(back)
    finally:
        r.close()


def test_consensus_keeps_every_raw_label_and_the_aggregate_reaches_training() -> None:
    r = replay("consensus")
    try:
        while not r.done:
            r.step()
        raw = defaultdict(set)
        for _, row in r.store.rows():
            if row["annotator"] != "aggregate":
                raw[row["id"]].add((row["annotator"], row["label"]))
        multi = [s for s, labels in raw.items() if len(labels) > 1]
        assert multi
        assert all(len({a for a, _ in raw[s]}) == len(raw[s]) for s in raw)  # nobody saw a sample twice
        latest = r.store.latest()
        want = aggregate(r.raw, "majority")
        assert {s: row["label"] for s, row in latest.items()} == want
        assert r.spent == CFG.budget and len(r.raw) == r.spent - CFG.initial_labels
    finally:
        r.close()


def test_latest_wins_is_one_random_annotator_per_sample() -> None:
    r = replay(LATEST_WINS)
    try:
        r.step()
        assert len({a.sample for a in r.raw}) == len(r.raw)
        assert len({a.annotator for a in r.raw}) == 3
    finally:
        r.close()


def test_arms_parse_with_latest_wins_first_and_shipped_last_and_intervals_cover_the_mean() -> None:
    assert parse_arms("relabel") == ["latest_wins", "relabel", "shipped"]
    assert parse_arms("all")[0] == "latest_wins" and parse_arms("all")[-1] == "shipped"
    lo, hi = interval([0.1, 0.2, 0.3, 0.4])
    assert lo < 0.25 < hi and interval([0.5]) == [0.5, 0.5]
    assert np.isfinite(lo)
