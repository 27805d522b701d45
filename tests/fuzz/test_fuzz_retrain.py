"""Retrain ingest (``Trainer.ingest``) on generated labels, with generated review records on
the review topic as its join index.

One Trainer runs for the whole test (its label consumer stays in the retrain group). Each
hypothesis example produces ~30-50 generated review records plus valid sentinel reviews,
then ~30-50 generated labels plus sentinel labels (joined through the index, standalone
with features, unjoinable, unknown class, edge case, undo), and runs ingest until the group
has committed past every label. Property: every label is either a row of the label store
(its partition/offset recorded) or a dead letter with stage ``label`` (never both, never
neither); the counts ingest returns add up; rows agree with the decoded label; what the
contract refuses is dead-lettered; joined sentinels carry their review's features.
"""

from __future__ import annotations

import itertools
import json
import uuid
from typing import Any, Callable

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from consumers.trainer import Trainer
from tests.fuzz.kit import (
    FC, FUZZ, MAX_BYTES, Feeder, In, Offsets, Tail, interleave, records, show, sticky, value, verdict,
)
from triage.contracts import ReviewRequest, ScoreFields, TopClass, encode
from triage.contracts.dlq import error_class
from triage.errors import InputError
from triage.lifecycle.labelstore import EDGE_CASE, UNDO
from triage.lifecycle.registry import Registry
from triage.settings import Settings


def test_retrain_ingest_folds_or_dead_letters_every_label(
    settings_factory: Callable[..., Settings], registry: Registry, digits: tuple[np.ndarray, np.ndarray],
) -> None:
    X, _ = digits
    s = settings_factory(registry=registry.root, max_message_bytes=MAX_BYTES)
    manifest = registry.manifest(registry.current() or "")
    classes = list(manifest["classes"])
    trainer = Trainer(s, registry, progress=lambda m: None)
    feeder, tail, offsets = Feeder(s), Tail(s, [s.topics.dlq_topic]), Offsets(s, s.retrain.retrain_group_id)
    tag, n = uuid.uuid4().hex[:6], itertools.count()
    review_features: dict[str, list[float]] = {}
    ran: list[int] = []

    def review(i: int) -> In:
        rid = f"rv-{tag}-{i}"
        features = X[i % len(X)].tolist()
        review_features[rid] = features
        return In(rid.encode(), encode(ReviewRequest(rid, features, "uncertain", "3", 0.4, ScoreFields(0.1, 0.5, None),
                                                     0.5, "v1", None, [TopClass("3", 0.4)])))

    def label(doc: dict[str, Any]) -> In:
        return In(doc["id"].encode(), json.dumps(doc).encode())

    def sentinels(i: int) -> list[In]:
        rid = f"rv-{tag}-{i}"
        return [
            label({"id": rid, "label": classes[i % len(classes)], "annotator": "fuzz"}),  # joined via the index
            label({"id": f"lone-{tag}-{i}", "label": classes[0], "features": X[i % len(X)].tolist()}),
            label({"id": f"nobody-{tag}-{i}", "label": classes[1]}),  # unjoinable
            label({"id": rid, "label": "not-a-class"}),  # unknown class
            label({"id": rid, "label": EDGE_CASE}),
            label({"id": f"undo-{tag}-{i}", "label": UNDO}),
        ]

    try:
        @FUZZ
        @given(reviews=records("review", 15, 25), labels=records("label", 25, 40),
               at=st.lists(st.integers(0, 60), min_size=6, max_size=6))
        @sticky
        def run(reviews: list[In], labels: list[In], at: list[int]) -> None:
            i = next(n)
            ran.append(i)
            feeder.send(s.topics.review_topic, interleave(reviews, [review(i)], at))
            made = sentinels(i)
            batch = feeder.send(s.topics.labels_topic, interleave(labels, made, at))
            folded = rejected = 0
            for _ in range(20):  # each ingest drains until the topic is quiet; bounded re-runs
                f, r = trainer.ingest(classes, FC)
                folded, rejected = folded + f, rejected + r
                if offsets.caught_up(s.topics.labels_topic, feeder):
                    break
            assert offsets.caught_up(s.topics.labels_topic, feeder), "ingest did not commit past every label"

            positions = {rec.pos: rec for rec in batch}
            rows = {(row.get("partition"), row.get("offset")): row for _, row in trainer.store.rows()
                    if (row.get("partition"), row.get("offset")) in positions}
            dead = {}
            for o in tail.read():
                assert o.header("triage.source.topic") == s.topics.labels_topic
                pos = (int(o.header("triage.source.partition")), int(o.header("triage.source.offset")))
                assert pos in positions, f"dead letter for {pos}, no label of this batch"
                assert pos not in dead, f"label {pos} dead-lettered twice: {show(positions[pos].value)}"
                dead[pos] = o
            assert (folded, rejected) == (len(rows), len(dead)), (folded, rejected, len(rows), len(dead))
            print(f"retrain batch of {len(batch)} labels: folded {folded}, dead-lettered {rejected}")
            problems = []
            for pos, rec in positions.items():
                decoded = verdict("label", rec.value)
                where = [w for w, found in (("store", pos in rows), ("dlq", pos in dead)) if found]
                if len(where) != 1:
                    problems.append(f"label {pos} is in {where or 'neither store nor DLQ'}: {show(rec.value)}")
                    continue
                if pos in dead:
                    o = dead[pos]
                    if o.header("triage.error.stage") != "label" or o.value != rec.value or o.key != rec.key:
                        problems.append(f"label {pos}: dead letter {o.headers!r} does not keep the record")
                    if isinstance(decoded, InputError) and o.header("triage.error.class") != error_class(decoded):
                        problems.append(f"label {pos}: class {o.header('triage.error.class')}, contract says "
                                        f"{error_class(decoded)}")
                    continue
                row = rows[pos]
                if isinstance(decoded, InputError):
                    problems.append(f"label {pos} folded although the contract refuses it ({decoded.message}): "
                                    f"{show(rec.value)}")
                    continue
                if (row["id"], row["label"]) != (decoded.id, decoded.label):
                    problems.append(f"label {pos}: row {row['id']!r}/{row['label']!r} != "
                                    f"{decoded.id!r}/{decoded.label!r}")
                if row["label"] != UNDO and len(row["features"]) != FC:
                    problems.append(f"label {pos}: row with {len(row['features'])} features")
                if decoded.features is None and row["id"] in review_features and row["label"] != UNDO:
                    if row["features"] != review_features[row["id"]]:
                        problems.append(f"label {pos}: joined features differ from the review record's")
            assert not problems, "\n".join(problems)
            # the sentinels: joined, standalone, edge case and undo folded; unjoinable and unknown class dead
            fates = sorted((json.loads(rec.value or b"{}")["label"], rec.pos in rows) for rec in made)
            assert fates == sorted([(classes[i % len(classes)], True), (classes[0], True), (classes[1], False),
                                    ("not-a-class", False), (EDGE_CASE, True), (UNDO, True)]), fates
            assert value(trainer.metrics.loop.internal_errors, loop="retrain") == 0
            assert value(trainer.metrics.loop.internal_errors, loop="retrain-review-index") == 0

        run()
        assert len(ran) >= min(2, FUZZ.max_examples), f"hypothesis ran only {len(ran)} examples"
    finally:
        trainer.close()
        for client in (feeder, tail, offsets):
            client.close()
