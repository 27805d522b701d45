"""The label-quality replay: the stand-in (raw labels and aggregate rows, for latest_wins and the
doubt step) and the live arms (raw labels, the retrain job's asks and markers, retrain_once with
the quality settings), the same budget of human actions for every arm."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from triage.lifecycle import askagain
from triage.lifecycle.labelstore import RELABEL_MARK, TIEBREAK_MARK, UNDO
from triage.quality.aggregate import aggregate
from triage.settings import Settings
from triage.simulation.annotators import AnnotatorPanel
from triage.simulation.datasets import load_labelled, split
from triage.simulation.quality import ARMS, LATEST_WINS, LiveReplay, NoisyReplay, arm_from_settings, one_step, parse_arms
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


def live(**quality: object) -> LiveReplay:
    arm = arm_from_settings("test", one_step(**quality))
    assert arm.live
    return LiveReplay(split(X, Y, 0, 0.25), POLICY, 0, CFG, Settings(), arm, PANEL)


def test_a_live_arm_stores_raw_labels_and_answers_the_retrain_jobs_relabels_first() -> None:
    """The shipped path: the retrain job's asks (askagain) as marker rows, the samples held out
    of what retrain_once trains on, then answered by someone else at the start of the next step."""
    r = live(relabel_share=0.5)
    try:
        r.step()
        asked = {a.sample: a for a in r.waiting}
        assert asked and all(a.reason == "relabel" for a in asked.values())
        rows = [row for _, row in r.store.rows()]
        assert {row["annotator"] for row in rows} <= set(PANEL.names) | {askagain.ASKER}  # raw rows, no aggregate rows
        assert {row["id"] for row in rows if row["label"] == RELABEL_MARK} == set(asked)
        view = r.store.view(None, r.quality.aggregation, 10)
        assert not set(asked) & set(view.training()), "held samples are out of training"
        v2 = r.registry.manifest(r.registry.versions()[-1])
        assert v2["data"]["quality"]["held"] == len(asked)  # retrain_once ran with the quality settings
        spent = r.spent
        r.step()
        answered = [a for a in r.raw[-(r.spent - spent):] if a.sample in asked]
        assert answered and all(a.annotator not in asked[a.sample].labelled_by for a in answered)
        view = r.store.view(None, r.quality.aggregation, 10)
        assert {a.sample for a in answered} <= {rel.sample for rel in view.releases}  # the answer released it
        assert r.counts["relabel_answered"] == len(answered)
        assert r.counts["flagged"] == r.counts["relabel_asked"] >= len(asked)
    finally:
        r.close()


def test_a_live_consensus_arm_asks_tiebreaks_only_through_the_retrain_job() -> None:
    r = live(consensus_share=0.5)
    try:
        while not r.done:
            r.step()
        raw = defaultdict(list)
        for a in r.raw:
            raw[a.sample].append(a.annotator)
        assert any(len(v) > 1 for v in raw.values())
        assert all(len(set(v)) == len(v) for v in raw.values())  # nobody saw a sample twice
        assert r.counts["tiebreak_asked"] > 0 and r.counts["relabel_asked"] == 0
        marks = [row["id"] for _, row in r.store.rows() if row["label"] == TIEBREAK_MARK]
        assert len(marks) == r.counts["tiebreak_asked"]
        assert r.spent == CFG.budget and len(r.raw) == r.spent - CFG.initial_labels
        result = r.quality_result()
        assert result.multi_labelled > 0 and 0.0 <= result.label_error_rate < 0.5
    finally:
        r.close()
