"""The audit joins on generated audits and labels: ``LiveRows`` (behind the accepted-accuracy
estimate and the live certificate) and the monitor's (behind its estimate's correction). Every
sample counts once, with the label its annotators' answers give as training reads them
(``triage.lifecycle.labelview``), whatever order the two topics are read in, across a
checkpoint too."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.profiles import examples
from triage.lifecycle.labelstore import EDGE_CASE, UNDO
from triage.lifecycle.labelview import label_view
from triage.policies.audit import AuditEstimator

IDS = [f"s{i}" for i in range(6)]
CLASSES = ["3", "5"]

audits = st.lists(st.tuples(st.sampled_from(IDS), st.sampled_from(["v1", "v2"]), st.sampled_from(CLASSES)),
                  max_size=12)  # repeats: redeliveries, and a sample re-scored by another version
labels = st.lists(st.tuples(st.sampled_from(IDS), st.sampled_from([*CLASSES, EDGE_CASE, UNDO]),
                            st.sampled_from(["alice", "bob", None])), max_size=20)


def joined(audit_list: list[tuple[str, str, str]], label_list: list[tuple[str, str, Optional[str]]]
           ) -> list[tuple[str, str, str]]:
    """(sample, version, correct?) of each audited sample (its first audit copy) that has a
    class label in training's own view of the labels, aggregated by majority."""
    first: dict[str, tuple[str, str]] = {}
    for sid, version, predicted in audit_list:
        first.setdefault(sid, (version, predicted))
    rows = [{"id": sid, "label": lab, "annotator": who} for sid, lab, who in label_list]
    trained = label_view(enumerate(rows), len(rows), "majority").training()
    out = []
    for sid, (version, predicted) in first.items():
        label = trained[sid]["label"] if sid in trained else EDGE_CASE
        if label != EDGE_CASE:
            out.append((sid, version, label == predicted))
    return out


def expected(audit_list: list[tuple[str, str, str]], label_list: list[tuple[str, str, Optional[str]]]
             ) -> dict[str, tuple[int, int]]:
    """version -> (samples, correct) over ``joined``."""
    out: dict[str, tuple[int, int]] = {}
    for _, version, correct in joined(audit_list, label_list):
        n, right = out.get(version, (0, 0))
        out[version] = (n + 1, right + correct)
    return out


def feed(order: list[bool], audit_list: list[tuple[str, str, str]],
         label_list: list[tuple[str, str, Optional[str]]]) -> dict[str, tuple[int, int]]:
    """Read the two topics interleaved as ``order`` says (True: the next audit), each in its order."""
    est = AuditEstimator()
    a, b = iter(audit_list), iter(label_list)
    for take_audit in order:
        if take_audit:
            sid, version, predicted = next(a)
            est.add_audit(sid, version, predicted)
        else:
            sid, label, who = next(b)
            est.add_label(sid, label, who)
    return {e.model_version: (e.n, e.correct) for e in est.estimates()}


@settings(max_examples=examples(500))  # pure and cheap
@given(audit_list=audits, label_list=labels, data=st.data())
def test_every_audited_sample_counts_once_with_its_standing_label_in_any_read_order(
        audit_list: list[tuple[str, str, str]], label_list: list[tuple[str, str, Optional[str]]],
        data: st.DataObject) -> None:
    merged = data.draw(st.permutations([True] * len(audit_list) + [False] * len(label_list)))
    want = expected(audit_list, label_list)
    assert feed(merged, audit_list, label_list) == want
    assert feed([False] * len(label_list) + [True] * len(audit_list), audit_list, label_list) == want
    assert feed([True] * len(audit_list) + [False] * len(label_list), audit_list, label_list) == want


def test_an_edge_case_or_an_undo_is_no_model_error_and_a_redelivery_counts_once() -> None:
    est = AuditEstimator()
    est.add_audit("edge", "v1", "3")
    est.add_label("edge", EDGE_CASE, "alice")  # "can't tell" says nothing about the model
    est.add_audit("undone", "v1", "3")
    est.add_label("undone", "5", "alice")
    est.add_label("undone", UNDO, "alice")  # a slip, taken back
    est.add_audit("twice", "v1", "3")
    est.add_label("twice", "3", "alice")
    est.add_audit("twice", "v1", "3")  # redelivered after the join
    est.add_label("twice", "3", "bob")  # and a second opinion
    e = est.estimate("v1")
    assert e is not None and (e.n, e.correct) == (1, 1)
    est.add_label("undone", "3", "alice")  # the answer after the undo
    est.add_label("twice", UNDO, "bob")  # bob's undo leaves alice's label standing
    e = est.estimate("v1")
    assert e is not None and (e.n, e.correct) == (2, 2)


def test_a_version_whose_labels_are_all_taken_back_shows_no_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics import MetricWrapperBase

    real = MetricWrapperBase.remove

    def remove_as_before_0_22(self: MetricWrapperBase, *values: str) -> None:  # pyproject allows >=0.20
        if tuple(values) not in self._metrics:
            raise KeyError(values)
        real(self, *values)

    monkeypatch.setattr(MetricWrapperBase, "remove", remove_as_before_0_22)

    from consumers.audit import AuditConsumer
    from triage.metrics import AuditMetrics
    from triage.settings import Settings

    audit = AuditConsumer(Settings(), metrics=AuditMetrics(CollectorRegistry()))
    value = lambda name: audit.metrics.registry.get_sample_value(name, {"model_version": "v1"})  # noqa: E731
    audit.estimator.add_audit("a", "v1", "3")
    audit.estimator.add_label("a", "3", "alice")
    audit.export()
    assert (value("triage_accepted_accuracy_samples"), value("triage_accepted_accuracy_estimate")) == (1, 1.0)
    audit.estimator.add_label("a", UNDO, "alice")
    audit.export()
    assert value("triage_accepted_accuracy_samples") == 0 and value("triage_accepted_accuracy_recent_samples") == 0
    assert [value(f"triage_accepted_accuracy_{g}") for g in ("estimate", "lower", "upper", "recent_upper")] == [None] * 4
    audit.export()  # the series are absent now: removing them again is no error
    assert value("triage_accepted_accuracy_samples") == 0


def monitor_residuals(order: list[bool], audit_list: list[tuple[str, str, str]],
                      label_list: list[tuple[str, str, Optional[str]]], save_at: int, tmp: Path) -> list[float]:
    """The monitor's residuals (correct - confidence) after reading as ``order`` says, its state
    saved and loaded after ``save_at`` records (a restart)."""
    from triage.monitoring import checkpoint
    from triage.monitoring.checkpoint import MonitorState
    from triage.monitoring.state import MonitorConfig

    config = MonitorConfig(window=50, reference=100, min_labels=2)
    state = MonitorState(config)
    for version in ("v1", "v2"):
        state.version(version)
    a, b = iter(audit_list), iter(label_list)
    for k, take_audit in enumerate(order):
        if k == save_at:
            checkpoint.save(tmp, state)
            state = checkpoint.load(tmp, config)
        if take_audit:
            sid, version, predicted = next(a)
            state.add_audit(sid, version, CONFIDENCE[sid], predicted)
        else:
            state.add_label(*next(b))
    return sorted(round(float(r), 6) for v in ("v1", "v2") for r in state.versions[v].residuals.filled())


CONFIDENCE = {sid: 0.5 + 0.05 * i for i, sid in enumerate(IDS)}


@settings(max_examples=examples(300))  # pure and cheap
@given(audit_list=audits, label_list=labels, data=st.data())
def test_the_monitor_corrects_by_each_audited_sample_once_with_its_standing_label(
        audit_list: list[tuple[str, str, str]], label_list: list[tuple[str, str, Optional[str]]],
        data: st.DataObject) -> None:
    order = data.draw(st.permutations([True] * len(audit_list) + [False] * len(label_list)))
    save_at = data.draw(st.integers(0, len(order)))
    want = [round(float(correct) - CONFIDENCE[sid], 6) for sid, _, correct in joined(audit_list, label_list)]
    with tempfile.TemporaryDirectory() as tmp:
        assert monitor_residuals(order, audit_list, label_list, save_at, Path(tmp)) == sorted(want)


def test_a_monitor_checkpoint_from_before_the_answers_joins_its_waiting_labels(tmp_path: Path) -> None:
    import json

    from triage.monitoring import checkpoint
    from triage.monitoring.checkpoint import MonitorState
    from triage.monitoring.state import MonitorConfig

    config = MonitorConfig(window=50, reference=100, min_labels=2)
    state = MonitorState(config)
    state.version("v1")
    doc = json.loads(state.to_json())
    del doc["answers"]
    for v in doc["versions"]:
        del v["residual_ids"]
    doc["labels"] = {"s2": "b"}  # the old format: a waiting sample's first label
    (tmp_path / checkpoint.FILE).write_text(json.dumps(doc))
    old = checkpoint.load(tmp_path, config)
    assert old.add_audit("s2", "v1", 0.8, "b") == "v1"
    assert old.versions["v1"].residuals.filled().round(6).tolist() == [0.2]


def test_the_monitor_keeps_a_bounded_number_of_answers() -> None:
    """Reviewed samples' answers are kept so a later label can change them, but not forever."""
    from triage.monitoring.checkpoint import MAX_ANSWERED, MAX_AUDITS, MAX_LABELS, MonitorState
    from triage.monitoring.state import MonitorConfig, Observations

    n = MAX_LABELS + 1_000
    state = MonitorState(MonitorConfig(window=n, reference=100))
    obs = Observations()
    for i in range(n):
        obs.add(0.9, 0.5, None, "a", False, f"r{i}")
    state.version("v1").observe(obs, np.random.default_rng(0))
    assert all(state.add_label(f"r{i}", "a", "alice") == "v1" for i in range(n))  # each settles its sample
    for i in range(MAX_AUDITS + 10):
        state.add_audit(f"x{i}", "v1", 0.9, "a")
        state.add_label(f"x{i}", "b", "bob")
    for i in range(MAX_AUDITS + 10):
        state.add_audit(f"y{i}", "v1", 0.9, "a")
    assert len(state.answers) <= MAX_ANSWERED + 2 * MAX_LABELS
    assert len(state.audits) == MAX_AUDITS + MAX_ANSWERED
    assert state.add_label("r0", UNDO, "alice") == "v1"  # forgotten answers: its sample still takes a label


def test_labels_of_one_kind_never_push_out_what_the_monitor_keeps_for_another(monkeypatch: pytest.MonkeyPatch
                                                                             ) -> None:
    """The join kept reviewed samples' answers and labelled audits in the queues meant for labels
    waiting for their audit copy and for audits waiting for their label: a burst of the first
    made the monitor forget the second, which the join before it did not."""
    from triage.monitoring import checkpoint
    from triage.monitoring.checkpoint import MonitorState
    from triage.monitoring.state import MonitorConfig, Observations

    monkeypatch.setattr(checkpoint, "MAX_LABELS", 100)
    monkeypatch.setattr(checkpoint, "MAX_AUDITS", 100)
    monkeypatch.setattr(checkpoint, "MAX_ANSWERED", 100)
    state = MonitorState(MonitorConfig(window=500, reference=10))
    obs = Observations()
    for i in range(200):
        obs.add(0.9, 0.5, None, "cat", False, f"r{i}")
    state.version("v1").observe(obs, np.random.default_rng(0))
    state.add_label("early", "dog")  # its audit copy is still on its way
    state.add_audit("slow", "v1", 0.9, "cat")  # its label takes a while
    for i in range(200):  # reviewed samples' labels settle the window
        assert state.add_label(f"r{i}", "cat") == "v1"
    for i in range(150):  # audits labelled at once
        state.add_audit(f"a{i}", "v1", 0.9, "cat")
        state.add_label(f"a{i}", "cat")
    assert state.add_audit("early", "v1", 0.9, "cat") == "v1"
    assert state.add_label("slow", "dog") == "v1"
    # audited samples whose prediction is folded after their label keep their answers among the
    # audits, not in the places of unaudited labels still waiting for their sample
    state.add_label("reviewed", "dog")
    for i in range(150):
        state.add_label(f"b{i}", "cat")
        state.add_audit(f"b{i}", "v1", 0.9, "cat")
    later = Observations()
    later.add(0.6, 0.5, None, "dog", False, "reviewed")
    later.add(0.9, 0.5, None, "cat", False, "b149")
    state.versions["v1"].observe(later, np.random.default_rng(0))
    labelled = state.versions["v1"].labelled()
    assert state.join_waiting("v1", later.sample_id) and state.versions["v1"].labelled() == labelled + 2
    # and a checkpoint keeps each queue's order
    loaded = MonitorState.from_json(state.to_json(), state.config)
    assert (list(loaded.answered), list(loaded.waiting), list(loaded.settled), list(loaded.unanswered)) == \
        (list(state.answered), list(state.waiting), list(state.settled), list(state.unanswered))
