"""The label store aggregated per sample over its annotators (triage/lifecycle/labelview.py),
the relabel/tiebreak markers, and what the retrain job asks again (askagain.py)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest

from triage.contracts import decode_label, decode_review
from triage.lifecycle import askagain
from triage.lifecycle.annotatorstats import OTHER, AnnotatorNames, accuracies
from triage.lifecycle.labelstore import EDGE_CASE, RELABEL_MARK, TIEBREAK_MARK, UNDO, LabelStore, is_eval_id
from triage.lifecycle.labelview import CHANGED, CONFIRMED, label_view

EVAL_SHARE = 20


class Rows:
    """Label rows with increasing offsets on one partition (labels of one id share a partition)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, sid: str, label: str, annotator: Optional[str] = None, features: Optional[list[float]] = None) -> None:
        n = len(self.rows)
        self.rows.append({"id": sid, "label": label, "features": [] if features is None and label in (
            UNDO, RELABEL_MARK, TIEBREAK_MARK) else (features or [float(len(sid)), float(n % 7)]),
            "annotator": annotator, "partition": 0, "offset": n})

    def store(self, tmp_path: Path) -> LabelStore:
        store = LabelStore(tmp_path)
        store.append(self.rows)
        return store


def train_labels(store: LabelStore, aggregation: Optional[str] = "weighted") -> dict[str, str]:
    """sample -> the label it trains (or evaluates) with."""
    view = store.view(None, aggregation) if aggregation else None
    chosen = view.training() if view else store.latest()
    return {sid: r["label"] for sid, r in chosen.items() if r["label"] != EDGE_CASE}


def test_two_disagree_then_a_third_breaks_the_tie(tmp_path: Path) -> None:
    r = Rows()
    r.add("a", "cat", "ann")
    r.add("a", "dog", "bob")
    store = r.store(tmp_path)
    view = store.view(None, "weighted")
    assert view.summary()["contested"] == 1 and view.summary()["multi_annotator"] == 1
    assert train_labels(store) == {"a": "cat"}, "an unweighted tie goes to the label given first"
    store.append([{**r.rows[0], "label": "dog", "annotator": "cid", "offset": 2}])
    assert train_labels(store) == {"a": "dog"}, "the third annotator's vote makes the majority"
    assert train_labels(store, None) == {"a": "dog"}
    X, y, _, _ = store.arrays(None, 10**6, "weighted")  # no sample drawn for evaluation
    assert y.tolist() == ["dog"] and X.shape == (1, 2)


def test_each_annotator_counts_once_their_latest_label_is_a_correction(tmp_path: Path) -> None:
    r = Rows()
    r.add("a", "cat", "ann")
    r.add("a", "dog", "bob")
    r.add("a", "dog", "ann")  # ann corrects herself: two dogs, not cat+dog+dog
    r.add("a", "cat", "ann")  # and back: cat vs dog, one each
    view = label_view(enumerate(r.rows), len(r.rows), "majority")
    assert sorted(view.samples["a"].labels()) == ["cat", "dog"]


def test_undo_by_one_annotator_leaves_the_others_label(tmp_path: Path) -> None:
    r = Rows()
    r.add("a", "cat", "ann")
    r.add("a", "dog", "bob")
    r.add("a", UNDO, "ann")
    r.add("b", "cat", "ann")
    r.add("b", "dog", "bob")
    r.add("b", UNDO, None)  # no annotator: every label of the id is retracted (the old semantics)
    store = r.store(tmp_path)
    assert train_labels(store) == {"a": "dog"}


def test_a_relabel_marker_holds_the_sample_until_a_new_label_arrives(tmp_path: Path) -> None:
    r = Rows()
    for i in range(60):  # enough ids that some land in the evaluation share
        r.add(f"s{i}", "cat", "ann")
    held = [f"s{i}" for i in range(60)]
    evaluated = [s for s in held if is_eval_id(s, EVAL_SHARE)]
    assert evaluated, "the test needs a held sample from the evaluation share"
    for sid in held:
        r.add(sid, RELABEL_MARK, askagain.ASKER)
    store = r.store(tmp_path)
    X, y, Xe, ye = store.arrays(None, EVAL_SHARE, "weighted")
    assert len(y) == len(ye) == 0, "held samples are out of training and out of the evaluation labels"
    assert store.view(None, "weighted").summary()["held"] == 60
    start = store.count()
    store.append([{**r.rows[0], "id": "s0", "label": "cat", "annotator": "bob", "offset": 1000},
                  {**r.rows[0], "id": evaluated[0], "label": "dog", "annotator": "bob", "offset": 1001}])
    view = store.view(None, "weighted")
    assert {(x.sample, x.outcome) for x in view.releases} == {("s0", CONFIRMED), (evaluated[0], CHANGED)}
    summary = view.summary(since=start)
    assert (summary["relabel_confirmed"], summary["relabel_changed"], summary["held"]) == (1, 1, 58)
    assert view.summary(since=store.count())["relabel_changed"] == 0, "outcomes are counted by the row that settled them"
    X, y, Xe, ye = store.arrays(None, EVAL_SHARE, "weighted")
    assert len(y) + len(ye) == 2 and len(ye) >= 1


def test_the_latest_wins_reader_ignores_markers(tmp_path: Path) -> None:
    r = Rows()
    r.add("a", "cat", "ann")
    r.add("a", RELABEL_MARK, askagain.ASKER)
    r.add("b", "dog", "ann")
    r.add("b", TIEBREAK_MARK, askagain.ASKER)
    store = r.store(tmp_path)
    assert train_labels(store, None) == {"a": "cat", "b": "dog"}
    assert train_labels(store) == {"b": "dog"}


def _random_single_annotator_rows(seed: int, n: int, annotator: Optional[str]) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    r = Rows()
    ids = [f"id{i}" for i in range(max(n // 3, 1))]
    for k in range(n):
        sid = rng.choice(ids)
        label = rng.choice(["0", "1", "2", "3", UNDO, EDGE_CASE] if k % 5 else ["0", "1"])
        r.add(sid, label, annotator, features=[float(k), float(len(sid))])
        r.rows[-1]["partition"] = int(sid[2:]) % 3  # one partition per id, offsets increasing
    return r.rows


@pytest.mark.parametrize("seed, annotator", [(0, None), (1, "ann"), (2, None), (3, "solo")])
def test_a_single_annotator_store_trains_exactly_as_latest_wins(tmp_path: Path, seed: int,
                                                               annotator: Optional[str]) -> None:
    rows = _random_single_annotator_rows(seed, 3000, annotator)
    store = LabelStore(tmp_path)
    store.append(rows)
    for upto in (None, 1, 1000, 2999):
        latest = store.arrays(upto, EVAL_SHARE)
        for method in ("majority", "weighted", "dawid-skene"):
            got = store.arrays(upto, EVAL_SHARE, method)
            for a, b in zip(latest, got):
                np.testing.assert_array_equal(a, b)
    assert store.view(None, "weighted").summary()["multi_annotator"] == 0


def test_the_aggregate_does_not_depend_on_how_partitions_interleave(tmp_path: Path) -> None:
    """A rebuilt store holds the rows in (partition, offset) order; the ingest in batch order."""
    r = Rows()
    for i in range(30):
        for who, lab in (("ann", "cat"), ("bob", "dog" if i % 2 else "cat"), ("cid", "dog")):
            r.add(f"s{i}", lab, who)
            r.rows[-1]["partition"] = i % 2
    by_position = sorted(r.rows, key=lambda x: (x["partition"], x["offset"]))
    a, b = LabelStore(tmp_path / "a"), LabelStore(tmp_path / "b")
    a.append(r.rows)
    b.append(by_position)
    for x, y in zip(a.arrays(None, EVAL_SHARE, "weighted"), b.arrays(None, EVAL_SHARE, "weighted")):
        np.testing.assert_array_equal(x, y)


def test_tiebreaks_are_asked_once_per_label_state(tmp_path: Path) -> None:
    r = Rows()
    r.add("a", "cat", "ann")
    r.add("a", "dog", "bob")
    r.add("b", "cat", "ann")
    r.add("b", "cat", "bob")
    r.add("c", "cat", "ann")
    r.add("c", "dog", "bob")
    r.add("c", "bird", "cid")  # three different: max_annotators reached
    view = label_view(enumerate(r.rows), len(r.rows))
    asks = askagain.tiebreaks(view, max_annotators=3)
    assert [(a.sample, a.reason, a.annotators, a.labelled_by) for a in asks] == [("a", "tiebreak", 3, ["ann", "bob"])]
    review = decode_review(askagain.review_request(asks[0], "v1"), 10**6)
    assert (review.reason, review.annotators, review.labelled_by, review.priority) == ("tiebreak", 3, ["ann", "bob"], 1.0)
    assert review.predicted in ("cat", "dog") and review.confidence == 0.5
    marker = decode_label(askagain.marker(asks[0]), 10**6)
    assert (marker.label, marker.annotator) == (TIEBREAK_MARK, askagain.ASKER)
    r.add("a", TIEBREAK_MARK, askagain.ASKER)
    assert askagain.tiebreaks(label_view(enumerate(r.rows), len(r.rows)), 3) == [], "a marker after the last label: asked"
    r.add("a", "bird", "dan")  # a new label state (still no majority): may be asked again
    assert askagain.tiebreaks(label_view(enumerate(r.rows), len(r.rows)), 4)[0].sample == "a"


def test_relabels_flag_wrong_labels_most_likely_first_within_the_limit() -> None:
    rng = np.random.default_rng(0)
    r = Rows()
    truth = {}
    for i in range(120):
        cls = i % 2
        x = rng.normal(4.0 * cls, 0.5, size=3).tolist()
        sid = f"s{i}"
        truth[sid] = str(cls)
        wrong = i in (10, 31, 52)
        r.add(sid, str(1 - cls) if wrong else str(cls), "ann", features=x)
    view = label_view(enumerate(r.rows), len(r.rows))
    asks = askagain.relabels(view, ["0", "1"], 2, max_annotators=3, seed=0)
    assert len(asks) == 2
    assert {a.sample for a in asks} <= {"s10", "s31", "s52"}
    a = asks[0]
    assert (a.reason, a.annotators, a.labelled_by) == ("relabel", 2, ["ann"])
    review = decode_review(askagain.review_request(a, "v1"), 10**6)
    assert review.predicted == truth[a.sample], "the request shows the out-of-fold model's guess"
    assert askagain.relabels(view, ["0", "1"], 0, max_annotators=3) == []


def test_relabelled_samples_do_not_count_against_an_annotator() -> None:
    """A relabel picks the labels that look wrong, so the second opinion it brings disagrees far
    more often than on samples overlapped at random: counting those would estimate the first
    annotator's accuracy low (the simulator measured 0.77 / 0.70 / 0.54 for annotators right 90 /
    80 / 60% of the time). Accuracy, its weights and agreement leave relabelled samples out."""
    r = Rows()
    for i in range(12):  # overlapped at random: ann and bob agree
        r.add(f"s{i}", "cat" if i % 2 else "dog", "ann")
        r.add(f"s{i}", "cat" if i % 2 else "dog", "bob")
    for i in range(6):  # ann alone, then sent back by relabels that bob answers otherwise
        r.add(f"r{i}", "cat", "ann")
        r.add(f"r{i}", RELABEL_MARK, "triage-retrain")
        r.add(f"r{i}", "dog", "bob")
    view = label_view(enumerate(r.rows), len(r.rows), "weighted")
    assert all(s.relabelled for sid, s in view.samples.items() if sid.startswith("r"))
    assert {a.sample for a in view.overlapped()} == {f"s{i}" for i in range(12)}
    acc = accuracies(view, AnnotatorNames(10))
    assert acc["ann"].compared == acc["bob"].compared == 12
    assert acc["ann"].accuracy == acc["bob"].accuracy > 0.9
    assert view.accuracy["ann"] == view.accuracy["bob"] > 0.9, "the votes' weights"
    assert view.summary()["contested"] == 6  # the relabelled samples are still aggregated


def test_annotator_names_are_bounded() -> None:
    names = AnnotatorNames(2)
    names.seed(["bob", "ann", "bob", None])
    assert (names("bob"), names("ann"), names("cid"), names(None)) == ("bob", "ann", OTHER, OTHER)
    r = Rows()
    for i in range(10):
        r.add(f"s{i}", "cat", "bob")
        r.add(f"s{i}", "cat" if i < 8 else "dog", "ann")
        r.add(f"s{i}", "dog", "cid")
    acc = accuracies(label_view(enumerate(r.rows), len(r.rows), "majority"), names)
    assert set(acc) == {"bob", "ann", OTHER}
    assert acc["bob"].compared == 10 and acc[OTHER].accuracy < acc["bob"].accuracy


def test_without_crowd_kit_contested_samples_take_a_plain_majority(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import triage.extras
    import triage.lifecycle.labelview as labelview

    real = triage.extras.missing_modules
    monkeypatch.setattr(triage.extras, "missing_modules",
                        lambda extra: ["crowd-kit"] if extra == "quality" else real(extra))
    monkeypatch.setattr(labelview, "_warned", set())
    r = Rows()
    r.add("a", "cat", "ann")
    r.add("a", "dog", "bob")
    r.add("a", "dog", "cid")
    r.add("b", "cat", "ann")
    r.add("b", "dog", "bob")
    with caplog.at_level("WARNING", logger="triage.labelstore"):
        view = label_view(enumerate(r.rows), len(r.rows), "weighted")
    assert view.labels == {"a": "dog", "b": "cat"} and view.summary()["majority_fallback"] is True
    assert "crowd-kit is not installed" in caplog.text and "plain majority" in caplog.text
