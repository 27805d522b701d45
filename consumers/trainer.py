"""The retrain job: labels in, a checked candidate out, promotions announced.

ingest: read review records (the join index), consume labels as a group, join by sample id,
persist the good ones, dead-letter the rest, then commit (at-least-once).
run_once: fold -> train candidate -> evaluate candidate and current on the same held-out
data -> promote (and announce on the models topic) or register as rejected.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from triage.codec import decode_label, encode
from triage.errors import InputError, LabelError, TriageError
from triage.handlers import dlq_record
from triage.labelstore import EDGE_CASE, UNDO, LabelStore
from triage.metrics import RetrainMetrics
from triage.model import OnnxClassifier
from triage.calibration import apply_temperature
from triage.records import OutRecord, RecordBatch
from triage.registry import Registry
from triage.settings import Settings
from triage.training import class_counts, evaluate, fit_bundle_routing, manifest_for, register, train_model
from triage.transport import Consumer, Producer, make_consumer, make_producer

log = logging.getLogger("triage.retrain")
IDLE_POLLS = 2
JOIN_WAIT_S = 30.0
DRAIN_S = 10.0


@dataclass
class RetrainOutcome:
    outcome: str  # promoted | rejected | skipped | failed
    version: Optional[str] = None
    reason: str = ""
    candidate: dict[str, Any] = field(default_factory=dict)
    current: dict[str, Any] = field(default_factory=dict)
    folded: int = 0
    rejected: int = 0


def load_npz(path: Any, labelled: bool = True) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as d:
        X = np.asarray(d["X"], dtype=np.float64)
        return X, (np.asarray(d["y"]).astype(str) if labelled else np.zeros(0, dtype=str))


def announce(settings: Settings, producer: Producer, event: dict[str, Any]) -> None:
    rec = OutRecord(settings.topics.models_topic, event["version"].encode(), encode(event))
    for attempt in range(10):
        errors = producer.send_all([rec], 30)
        if errors[0] is None:
            return
        time.sleep(min(0.2 * 2**attempt, 5))
    raise TriageError(f"could not announce {event['action']} of {event['version']} on {settings.topics.models_topic}")


class Trainer:
    def __init__(self, settings: Settings, registry: Registry, *, metrics: Optional[RetrainMetrics] = None,
                 progress: Callable[[str], None] = lambda msg: log.info("%s", msg)) -> None:
        self.settings = settings
        self.registry = registry
        self.metrics = metrics or RetrainMetrics()
        self.progress = progress
        self.store = LabelStore(registry.data_dir)
        self.drain_s = DRAIN_S
        self._review: dict[str, list[float]] = {}
        self._review_reader: Optional[Consumer] = None
        self._labels: Optional[Consumer] = None
        self._producer: Optional[Producer] = None

    # --- clients (created lazily so `--once` without Kafka work still fails clearly) ------
    @property
    def producer(self) -> Producer:
        if self._producer is None:
            self._producer = make_producer(self.settings)
        return self._producer

    def close(self) -> None:
        for client in (self._review_reader, self._labels, self._producer):
            if client is not None:
                client.close()

    # --- ingest ----------------------------------------------------------------------------
    def _drain(self, consumer: Consumer, handle: Callable[[RecordBatch], None], wait_for_assignment: bool) -> None:
        """Read until the topic is quiet (a few empty polls) or DRAIN_S of reading has passed,
        so a steady label stream cannot keep a run from ever training."""
        join_deadline = time.monotonic() + JOIN_WAIT_S
        deadline: Optional[float] = None
        idle = 0
        while idle < IDLE_POLLS:
            batch = consumer.poll_batch(self.settings.serving.batch_size, 300)
            if not len(batch):
                if wait_for_assignment and not consumer.assigned() and time.monotonic() < join_deadline:
                    continue
                idle += 1
            else:
                idle = 0
                handle(batch)
            deadline = deadline or time.monotonic() + self.drain_s
            if time.monotonic() > deadline:
                break

    def _read_review(self, batch: RecordBatch) -> None:
        import json

        for value in batch.values:
            try:
                doc = json.loads(value) if value else None
                if isinstance(doc, dict) and isinstance(doc.get("id"), str) and isinstance(doc.get("features"), list):
                    self._review[doc["id"]] = doc["features"]
            except ValueError:
                continue

    def ingest(self, classes: list[str], feature_count: int) -> tuple[int, int]:
        s = self.settings
        if self._review_reader is None:
            self._review_reader = make_consumer(s, [s.topics.review_topic], group_id=None)
        self._drain(self._review_reader, self._read_review, wait_for_assignment=False)
        if self._labels is None:
            self._labels = make_consumer(s, [s.topics.labels_topic], group_id=s.retrain.retrain_group_id)
        folded = rejected = 0
        known = set(classes)

        def handle(batch: RecordBatch) -> None:
            nonlocal folded, rejected
            rows: list[dict[str, Any]] = []
            dead: list[OutRecord] = []
            for i, value in enumerate(batch.values):
                try:
                    label = decode_label(value, s.serving.max_message_bytes)
                    features = label.features if label.features is not None else self._review.get(label.id)
                    if features is None and label.label == UNDO:
                        features = []
                    elif features is None:
                        raise LabelError(f"no review record with id {label.id!r} and no `features` in the label")
                    if label.label != UNDO and len(features) != feature_count:
                        raise LabelError(f"`features` has {len(features)} values; the model takes {feature_count}")
                    if label.label not in (EDGE_CASE, UNDO) and label.label not in known and not s.retrain.accept_new_classes:
                        raise LabelError(f"unknown class {label.label!r} (known: {', '.join(sorted(known))}); "
                                         "set TRIAGE_ACCEPT_NEW_CLASSES=true to learn new classes")
                except InputError as exc:
                    reason = "unknown_class" if "unknown class" in exc.message else (
                        "unjoinable" if "no review record" in exc.message else "invalid")
                    self.metrics.rejected.labels(reason=reason).inc()
                    dead.append(dlq_record(batch, i, exc, "label", s, self.registry.current() or ""))
                    rejected += 1
                    continue
                if label.label == EDGE_CASE:
                    self.metrics.rejected.labels(reason="edge_case").inc()
                rows.append({"id": label.id, "label": label.label, "features": features, "annotator": label.annotator,
                             "partition": batch.partitions[i], "offset": batch.offsets[i]})
            # Persist first, then dead-letter, then commit: a crash re-reads, never loses.
            folded += self.store.append(rows)
            self.metrics.folded.inc(sum(r["label"] not in (EDGE_CASE, UNDO) for r in rows))
            if dead:
                errors = self.producer.send_all(dead, 60)
                if any(errors):
                    raise TriageError(f"could not dead-letter {sum(1 for e in errors if e)} labels: {next(e for e in errors if e).message}")
            assert self._labels is not None
            self._labels.commit(batch.next_offsets())

        self._drain(self._labels, handle, wait_for_assignment=True)
        return folded, rejected

    # --- evaluation and promotion ----------------------------------------------------------
    def _current_probs(self, version: str, X: np.ndarray) -> tuple[np.ndarray, list[str]]:
        manifest = self.registry.verify(version)
        clf = OnnxClassifier(self.registry.model_path(version), classes=manifest.get("classes"),
                             feature_count=manifest.get("feature_count"))
        temperature = float((manifest.get("calibration") or {}).get("temperature", 1.0))
        return apply_temperature(clf.predict_proba(X), temperature), list(clf.spec.classes)

    def run_once(self) -> RetrainOutcome:
        started = time.monotonic()
        try:
            outcome = self._run()
        except TriageError as exc:
            log.error("retrain failed: %s", exc.message)
            outcome = RetrainOutcome("failed", reason=exc.message)
        except Exception as exc:  # a failed run is counted and reported, never silent
            log.exception("retrain failed")
            outcome = RetrainOutcome("failed", reason=f"{type(exc).__name__}: {exc}")
        self.metrics.runs.labels(outcome=outcome.outcome).inc()
        self.metrics.duration.observe(time.monotonic() - started)
        self.metrics.last_run.set(time.time())
        return outcome

    def _run(self) -> RetrainOutcome:
        s, reg = self.settings, self.registry
        reg.check_readable()
        current = reg.current()
        if current is None:
            raise TriageError(f"registry {reg.root} has no CURRENT version: run `triage train` first")
        cur_manifest = reg.manifest(current)
        self.progress(f"ingesting labels from {s.topics.labels_topic} (current model {current})")
        folded, rejected = self.ingest(cur_manifest["classes"], int(cur_manifest["feature_count"]))
        total = self.store.count()
        used = int(cur_manifest.get("data", {}).get("labels_upto", 0))
        self.metrics.pending.set(max(total - used, 0))
        self.progress(f"folded {folded} labels, rejected {rejected}; {total - used} new since {current}")
        if total - used < s.retrain.min_new_labels:
            return RetrainOutcome("skipped", reason=f"{total - used} new labels < min_new_labels {s.retrain.min_new_labels}",
                                  folded=folded, rejected=rejected)

        base_X, base_y = load_npz(reg.data_dir / "base.npz")
        hold_X, hold_y = load_npz(reg.data_dir / "holdout.npz")
        lab_X, lab_y, ev_X, ev_y = self.store.arrays(total, s.retrain.eval_label_share)
        X = np.vstack([base_X, lab_X]) if len(lab_X) else base_X
        y = np.concatenate([base_y, lab_y])
        self.progress(f"training candidate ({s.retrain.model_family}) on {len(X)} samples "
                      f"({len(base_X)} base + {len(lab_X)} labelled)")
        ref_path = reg.data_dir / "reference.npz"
        reference = load_npz(ref_path, labelled=False)[0] if ref_path.exists() else None
        trained = train_model(X, y, family=s.retrain.model_family, seed=s.policy.seed, outlier_quantile=s.serving.outlier_quantile,
                              reference=reference)
        self.progress("evaluating candidate and current on the holdout and reserved labels")
        both_X = np.vstack([hold_X, ev_X]) if len(ev_X) else hold_X
        both_y = np.concatenate([hold_y, ev_y])
        cand_p = trained.estimator.predict_proba(both_X.astype(np.float32))
        cand_p = apply_temperature(cand_p, trained.temperature)
        cur_p, cur_classes = self._current_probs(current, both_X)
        n = len(hold_X)
        cand = {"holdout": evaluate(cand_p[:n], trained.classes, hold_y),
                "eval_labels": evaluate(cand_p[n:], trained.classes, ev_y),
                "combined": evaluate(cand_p, trained.classes, both_y)}
        cur = {"holdout": evaluate(cur_p[:n], cur_classes, hold_y),
               "eval_labels": evaluate(cur_p[n:], cur_classes, ev_y),
               "combined": evaluate(cur_p, cur_classes, both_y)}
        self.metrics.eval_accuracy.labels(model="candidate").set(cand["holdout"]["accuracy"])
        self.metrics.eval_accuracy.labels(model="current").set(cur["holdout"]["accuracy"])
        tol = s.retrain.retrain_tolerance
        worse = [k for k in ("holdout", "combined") if cand[k]["accuracy"] < cur[k]["accuracy"] - tol]
        data = {
            "base": "data/base.npz", "base_rows": int(len(base_X)), "holdout": "data/holdout.npz",
            "labels": "data/labels.jsonl", "labels_upto": total, "labels_trained": int(len(lab_X)),
            "labels_eval": int(len(ev_X)), "class_counts": class_counts(y),
            "label_offsets": self._offsets_upto(total),
        }
        metrics = {**cand["holdout"], "eval_labels": cand["eval_labels"], "combined": cand["combined"],
                   "current_at_evaluation": {"version": current, **cur["holdout"]}}
        manifest = manifest_for(trained, feature_count=X.shape[1], data=data, metrics=metrics, parent=current,
                                family=s.retrain.model_family, routing=fit_bundle_routing(trained, hold_X, hold_y, s))
        version = register(reg, trained, manifest)
        summary = (f"candidate {version}: holdout accuracy {cand['holdout']['accuracy']:.4f} vs "
                   f"{current} {cur['holdout']['accuracy']:.4f}")
        if worse:
            reason = "worse than current on " + ", ".join(
                f"{k} ({cand[k]['accuracy']:.4f} < {cur[k]['accuracy']:.4f} - tolerance {tol})" for k in worse)
            reg.set_status(version, "rejected", reason)
            self.progress(f"{summary} -> rejected: {reason}")
            return RetrainOutcome("rejected", version, reason, cand, cur, folded, rejected)
        reg.promote(version)
        announce(s, self.producer, reg.model_event(version, "promote"))
        self.metrics.pending.set(0)
        self.progress(f"{summary} -> promoted and announced on {s.topics.models_topic}")
        return RetrainOutcome("promoted", version, "", cand, cur, folded, rejected)

    def _offsets_upto(self, upto: int) -> dict[str, int]:
        """Highest label offset per partition folded into this version (for the manifest)."""
        out: dict[str, int] = {}
        for row in self.store.latest(upto).values():
            key = str(row.get("partition"))
            out[key] = max(out.get(key, -1), int(row.get("offset", -1)))
        return out
