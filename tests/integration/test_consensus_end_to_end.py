"""Both halves of issue 24 chained on the embedded broker: two consoles of a pool (alice, bob)
answer review requests that ask for two annotators, the retrain job ingests their labels, trains
on the aggregate (one row per sample), asks a third person where they disagree, and exports the
annotator metrics on its /metrics page."""

from __future__ import annotations

import urllib.request
from typing import Callable

import numpy as np

from consumers.trainer import Trainer
from tests.fixtures import produce, read_all
from tests.helpers import metric_value
from tests.integration.test_annotate import _request, answer_in_consoles, pool_consoles
from triage.contracts import decode_review
from triage.lifecycle.registry import Registry
from triage.runtime.http import OpsServer
from triage.settings import Settings


def test_two_consoles_label_a_pair_and_the_retrain_job_trains_on_the_aggregate(
    settings_factory: Callable[..., Settings], registry: Registry, digits: tuple[np.ndarray, np.ndarray],
) -> None:
    X, y = digits
    s = settings_factory(registry=registry.root, min_new_labels=1, relabel_share=0.0)
    agree, split = 300, 301  # alice and bob agree on the first sample and disagree on the second
    truth = {"agree": str(y[agree]), "split": str(y[split])}
    other = str((y[split] + 1) % 10)
    produce(s, s.topics.review_topic, [_request("agree", X[agree].tolist(), 0.9, annotators=2),
                                       _request("split", X[split].tolist(), 0.8, annotators=2)])
    pool = ["alice", "bob"]
    answers = {"alice": {"agree": truth["agree"], "split": truth["split"]},
               "bob": {"agree": truth["agree"], "split": other}}
    answer_in_consoles(pool_consoles(s, pool), {name: {rid: answers[name][rid] for rid in ("agree", "split")}
                                                for name in pool})  # priority order
    assert len(read_all(s, [s.topics.labels_topic], expect=4)) == 4

    trainer = Trainer(s, registry, progress=lambda m: None)
    ops = OpsServer("127.0.0.1", 0, trainer.metrics.registry, trainer.readiness, trainer.readiness_reasons).start()
    try:
        outcome = trainer.run_once()  # as `triage retrain --once` runs it
        assert outcome.outcome in ("promoted", "rejected"), outcome
        manifest = registry.manifest(outcome.version or "")
        q = manifest["data"]["quality"]
        assert (q["samples"], q["multi_annotator"], q["contested"]) == (2, 2, 1), q
        # what trained: one row per sample, the agreed one with its label; the contested one went
        # back for a tiebreak (a third person, alice and bob named), not for a relabel
        upto = manifest["data"]["labels_upto"]
        assert upto == 5  # four labels and the tiebreak's marker
        Xt, yt, Xe, ye = trainer.store.arrays(upto, s.retrain.eval_label_share, s.quality.aggregation, 10)
        rows = {sid: [str(lab) for x, lab in zip(np.vstack([Xt, Xe]), np.concatenate([yt, ye]))
                      if np.array_equal(x, X[i].astype(np.float32))] for sid, i in (("agree", agree), ("split", split))}
        assert rows["agree"] == [truth["agree"]], rows
        assert len(rows["split"]) == 1 and rows["split"][0] in (truth["split"], other), rows
        assert manifest["data"]["labels_trained"] + manifest["data"]["labels_eval"] == 2
        reviews = [decode_review(r["value"], 10**6) for r in read_all(s, [s.topics.review_topic], expect=3)]
        asked = [(r.id, r.reason, r.annotators, r.labelled_by) for r in reviews if r.reason in ("tiebreak", "relabel")]
        assert asked == [("split", "tiebreak", 3, ["alice", "bob"])]

        with urllib.request.urlopen(f"http://127.0.0.1:{ops.port}/metrics", timeout=10) as page:
            text = page.read().decode()
        for name in pool:
            assert metric_value(text, "triage_annotator_labels_total", annotator=name) == 2
        assert "triage_annotator_agreement " in text  # one agreement, one disagreement: a number
        agreement = metric_value(text, "triage_annotator_agreement")
        assert not np.isnan(agreement) and agreement < 1.0
    finally:
        ops.stop()
        trainer.close()
