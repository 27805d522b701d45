"""The live loop's label quality on the embedded broker (issue 24): labels from several people
for one sample train as their aggregate, annotator quality is exported with bounded names, and a
label cleanlab flags goes back to review (reason relabel) and stays out of training until a new
label settles it, also after the store is rebuilt from the labels topic."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from prometheus_client import generate_latest

from consumers.label_rebuild import rebuild_label_store
from consumers.trainer import Trainer
from tests.fixtures import produce, read_all
from triage.contracts import decode_review, encode_label
from triage.lifecycle.registry import Registry
from triage.settings import Settings


def _value(trainer: Trainer, name: str, **labels: str) -> float:
    got = trainer.metrics.registry.get_sample_value(name, labels or None)
    assert got is not None, (name, labels)
    return float(got)


def _label(sid: str, label: Any, who: str, x: np.ndarray) -> tuple[bytes, bytes]:
    return sid.encode(), encode_label(sid, str(label), annotator=who, features=[float(v) for v in x])


def test_the_retrain_job_aggregates_exports_and_sends_flagged_labels_back(
    settings_factory: Callable[..., Settings], registry: Registry, digits: tuple[np.ndarray, np.ndarray],
) -> None:
    X, y = digits
    s = settings_factory(registry=registry.root, min_new_labels=1, annotator_metrics_top=2, relabel_share=0.1)
    records = []
    # three overlapped samples: ann and bob disagree on s0, cid breaks the tie for the truth
    for i in range(3):
        truth, other = y[300 + i], (y[300 + i] + 1) % 10
        records += [_label(f"s{i}", truth, "ann", X[300 + i]), _label(f"s{i}", other if i == 0 else truth, "bob", X[300 + i])]
    records.append(_label("s0", y[300], "cid", X[300]))
    records.append(_label("s1", (y[301] + 2) % 10, "cid", X[301]))  # cid's only disagreement
    # 80 single labels from ann, four of them wrong: cleanlab's candidates
    wrong = {310, 330, 350, 370}
    for i in range(303, 383):
        records.append(_label(f"s{i - 300}", (y[i] + 3) % 10 if i in wrong else y[i], "ann", X[i]))
    produce(s, s.topics.labels_topic, records)

    trainer = Trainer(s, registry, progress=lambda m: None)
    try:
        outcome = trainer.run_once()
        assert outcome.outcome in ("promoted", "rejected"), outcome
        q = outcome.quality
        assert (q["multi_annotator"], q["contested"]) == (3, 2), q

        # what trains holds the aggregate: cid breaks ann/bob's tie on s0 for the truth
        view = trainer.store.view(trainer.store.count(), s.quality.aggregation, 10)
        assert view.labels["s0"] == str(y[300]) and view.labels["s1"] == str(y[301])
        upto = registry.manifest(outcome.version or "")["data"]["labels_upto"]
        Xt, yt, Xe, ye = trainer.store.arrays(upto, s.retrain.eval_label_share, s.quality.aggregation, 10)
        at = [k for k, row in enumerate(np.vstack([Xt, Xe])) if np.array_equal(row, X[300].astype(np.float32))]
        assert [np.concatenate([yt, ye])[k] for k in at] == [str(y[300])], "s0 trains once, with the majority"
        manifest = registry.manifest(outcome.version or "")
        assert manifest["data"]["quality"]["held"] == q["held"]

        # the flagged labels went back to review and are held
        reviews = [decode_review(r["value"], 10**6) for r in
                   read_all(s, [s.topics.review_topic], expect=q["held"])]
        relabel = [r for r in reviews if r.reason == "relabel"]
        assert 1 <= len(relabel) <= int(0.1 * 87), [r.id for r in reviews]
        assert all(r.annotators == 2 and r.labelled_by == ["ann"] for r in relabel)
        held = {r.id for r in relabel}
        assert q["held"] == len(held) and all(view.samples[sid].held is not None for sid in held)
        assert not held & set(view.training()), "held samples are out of training"
        assert manifest["data"]["labels_trained"] + manifest["data"]["labels_eval"] == len(view.training())
        assert _value(trainer, "triage_labels_reasked_total", reason="relabel") == len(held)

        # annotator quality, with two names and the rest as other
        text = generate_latest(trainer.metrics.registry).decode()
        names = {line.split('annotator="')[1].split('"')[0] for line in text.splitlines()
                 if line.startswith("triage_annotator_accuracy{")}
        assert names == {"ann", "bob", "other"}, names
        assert _value(trainer, "triage_annotator_accuracy", annotator="other") < _value(
            trainer, "triage_annotator_accuracy", annotator="ann")
        assert _value(trainer, "triage_annotator_labels_total", annotator="ann") == 83
        assert _value(trainer, "triage_annotator_labels_total", annotator="other") == 2
        assert not np.isnan(_value(trainer, "triage_annotator_agreement"))
        assert _value(trainer, "triage_annotator_accuracy_alert_below") == s.quality.annotator_accuracy_alert_below

        # a second run asks nothing again for the same label state
        before = len(reviews)
        trainer.run_once()
        assert len(read_all(s, [s.topics.review_topic], expect=before)) == before

        # a rebuild from the labels topic reproduces the holds
        rebuilt_reg = Registry(registry.root)
        rebuild_label_store(s, rebuilt_reg, replace=True, progress=lambda m: None)
        rebuilt = rebuilt_reg.label_store().view(None, s.quality.aggregation, 10)
        assert {sid for sid, st in rebuilt.samples.items() if st.held is not None} == held
        assert rebuilt.labels == view.labels

        # dan answers two relabels, confirming one and changing the other: both train again,
        # the outcomes are counted, and the changed one (ann and dan now disagree) gets a tiebreak
        same, other = sorted(held)[:2]
        changed_to = str((int(view.labels[other]) + 5) % 10)
        produce(s, s.topics.labels_topic, [_label(same, view.labels[same], "dan", X[300 + int(same[1:])]),
                                           _label(other, changed_to, "dan", X[300 + int(other[1:])])])
        trainer.store = registry.label_store()  # the rebuild replaced the file under the old reader
        trainer._stored = trainer.store.positions()
        trainer.run_once()
        assert _value(trainer, "triage_relabels_total", outcome="confirmed") == 1
        assert _value(trainer, "triage_relabels_total", outcome="changed") == 1
        after = trainer.store.view(None, s.quality.aggregation, 10)
        assert after.samples[same].held is None and after.training()[same]["label"] == view.labels[same]
        assert after.samples[other].held is None and other in after.training()
        reviews = [decode_review(r["value"], 10**6) for r in read_all(s, [s.topics.review_topic], expect=before + 1)]
        tie = [(r.id, r.annotators, r.labelled_by) for r in reviews if r.reason == "tiebreak"]
        assert tie == [(other, 3, ["ann", "dan"])]
    finally:
        trainer.close()
