"""One retrain step after label ingest: train a candidate, judge it against CURRENT, decide.

``retrain_once`` trains on base + folded labels, evaluates candidate and current on the same
held-out rows (the fixed holdout's rows that do not certify, plus the labels reserved for
evaluation), registers the candidate and promotes it or marks it rejected, as
``promotion_verdict`` says. It does not announce on Kafka: the caller announces
``registry.model_event(version, "promote")``.
No Kafka, no argparse; messages go to ``progress``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np

from triage.scoring.calibration import apply_temperature
from triage.errors import TriageError
from triage.lifecycle.labelstore import MARKERS, UNDO, LabelRows
from triage.lifecycle.loading import registered_classifier
from triage.lifecycle.registry import Registry
from triage.settings import PolicySettings, QualitySettings, RetrainSettings
from triage.lifecycle.bundles import cross_fitted_base
from triage.lifecycle.preparation import ModelFlags, prepare_bundle
from triage.lifecycle.training import class_counts, evaluate, train_model
from triage.policies.fit import MIN_LABELLED, label_positions, routing_split

log = logging.getLogger("triage.retrain")
RESERVED_NOT_LABELS = (UNDO, *MARKERS)  # rows that are not human labels

# Splits a candidate must not be worse on. The reserved labels alone are too few (and absent
# on the first runs) to decide; they count through "combined".
JUDGED = ("holdout", "combined")


@dataclass
class RetrainOutcome:
    """What one retrain run did. ``folded``/``rejected`` count ingested labels; ``retrain_once``
    runs after ingest and leaves them 0 for the caller (the ingest step) to fill in."""

    outcome: str  # promoted | rejected | skipped | failed
    version: Optional[str] = None
    reason: str = ""
    candidate: dict[str, Any] = field(default_factory=dict)
    current: dict[str, Any] = field(default_factory=dict)
    folded: int = 0
    rejected: int = 0
    quality: dict[str, Any] = field(default_factory=dict)  # labelview.LabelView.summary (with quality)


@dataclass(frozen=True)
class Verdict:
    """Whether to promote a candidate; ``worse`` names the judged splits it lost on and
    ``reason`` says why it is rejected (empty when promoted)."""

    promote: bool
    worse: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class Disagreement:
    """On one split, the rows only the candidate gets right and those only current gets right."""

    candidate_only: int
    current_only: int

    @staticmethod
    def of(candidate_right: np.ndarray, current_right: np.ndarray) -> "Disagreement":
        return Disagreement(int((candidate_right & ~current_right).sum()), int((current_right & ~candidate_right).sum()))

    def p_worse(self) -> float:
        """Exact one-sided McNemar p-value of "the candidate is no worse": the chance of at
        least ``current_only`` of the discordant rows going to current if both were equal."""
        from scipy.stats import binom

        n = self.candidate_only + self.current_only
        return float(binom.sf(self.current_only - 1, n, 0.5)) if n else 1.0


def _log_progress(message: str) -> None:
    log.info("%s", message)


def _ignore(count: int) -> None:
    pass


def promotion_verdict(candidate: dict[str, Any], current: dict[str, Any], tolerance: float,
                      disagreements: Optional[Mapping[str, Disagreement]] = None,
                      significance: float = 1.0) -> Verdict:
    """Promote unless the candidate's accuracy is below current's by more than ``tolerance``
    on the holdout or on holdout + reserved labels.

    ``candidate``/``current``: split name -> ``training.evaluate`` metrics; only ``holdout`` and
    ``combined`` are read. A NaN accuracy (an empty split) never counts as worse. With
    ``disagreements`` (per split) a drop counts only when its McNemar p-value is below
    ``significance``: current was promoted for doing well on the same reserved labels, so on
    them it looks better than it is, and a plain comparison keeps rejecting better candidates
    (``triage simulate`` measured it stalling the loop for hundreds of labels).
    """
    def worse_on(k: str) -> bool:
        if not candidate[k]["accuracy"] < current[k]["accuracy"] - tolerance:
            return False
        return disagreements is None or disagreements[k].p_worse() < significance

    worse = tuple(k for k in JUDGED if worse_on(k))
    if not worse:
        return Verdict(True, (), "")
    reason = "worse than current on " + ", ".join(
        f"{k} ({candidate[k]['accuracy']:.4f} < {current[k]['accuracy']:.4f} - tolerance {tolerance}"
        + (f", McNemar p={disagreements[k].p_worse():.3g} < {significance}" if disagreements is not None else "") + ")"
        for k in worse)
    return Verdict(False, worse, reason)


def load_npz(path: Path, labelled: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of a registry data file; y is empty when ``labelled`` is False."""
    with np.load(path, allow_pickle=False) as d:
        X = np.asarray(d["X"], dtype=np.float64)
        return X, (np.asarray(d["y"]).astype(str) if labelled else np.zeros(0, dtype=str))


def current_version(registry: Registry) -> str:
    """The registry's CURRENT version; TriageError when unreadable or when there is none."""
    registry.check_readable()
    current = registry.current()
    if current is None:
        raise TriageError(f"registry {registry.location} has no CURRENT version: run `triage train` first")
    return current


def _data_file(registry: Registry, name: str) -> Path:
    path = registry.data_file(name)
    if path is None:
        raise TriageError(f"registry {registry.location} has no data/{name} (written by `triage train`)")
    return path


def _labels_upto(registry: Registry, version: str) -> int:
    """How many stored labels ``version`` was trained with (a prefix of the label store)."""
    return int(registry.manifest(version).get("data", {}).get("labels_upto", 0))


def version_probs(registry: Registry, version: str, X: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Calibrated (temperature) probabilities of a registered version on ``X``, and its classes.
    The bytes are verified first: a tampered CURRENT must not judge a candidate."""
    manifest = registry.verify(version)
    clf = registered_classifier(registry.model_path(version), manifest)
    temperature = float((manifest.get("calibration") or {}).get("temperature", 1.0))
    return apply_temperature(clf.predict_proba(X), temperature), list(clf.spec.classes)


def label_offsets(store: LabelRows, upto: int) -> dict[str, int]:
    """Highest label offset per partition among the first ``upto`` labels (for the manifest)."""
    out: dict[str, int] = {}
    for row in store.latest(upto).values():
        key = str(row.get("partition"))
        out[key] = max(out.get(key, -1), int(row.get("offset", -1)))
    return out


def _evaluate_splits(probs: np.ndarray, classes: list[str], n_holdout: int,
                     hold_y: np.ndarray, ev_y: np.ndarray, both_y: np.ndarray) -> dict[str, dict[str, Any]]:
    """Metrics on the holdout rows (first ``n_holdout``), the reserved labels, and both."""
    return {"holdout": evaluate(probs[:n_holdout], classes, hold_y),
            "eval_labels": evaluate(probs[n_holdout:], classes, ev_y),
            "combined": evaluate(probs, classes, both_y)}


def _disagreements(cand_p: np.ndarray, cand_classes: list[str], cur_p: np.ndarray, cur_classes: list[str],
                   n_holdout: int, both_y: np.ndarray) -> dict[str, Disagreement]:
    cand_right = np.asarray(cand_classes)[cand_p.argmax(axis=1)] == both_y
    cur_right = np.asarray(cur_classes)[cur_p.argmax(axis=1)] == both_y
    return {"holdout": Disagreement.of(cand_right[:n_holdout], cur_right[:n_holdout]),
            "combined": Disagreement.of(cand_right, cur_right)}


def gate_rows(hold_y: np.ndarray, classes: list[str], policy: PolicySettings) -> np.ndarray:
    """Indices of the holdout rows the promotion gate judges on: every row except those that
    certify the risk threshold (``fit.routing_split`` of the rows whose class the model knows,
    as ``prepare_bundle`` fits routing). The gate picks the served version; if it picked on the
    certifying rows, a version that looked lucky on them would be promoted with its lucky
    bound. With too few rows to fit routing nothing certifies and every row is judged."""
    known = np.flatnonzero(label_positions(hold_y, classes) >= 0)
    if len(known) < MIN_LABELLED:
        return np.arange(len(hold_y))
    certifying = known[routing_split(len(known), policy)[1]]
    return np.setdiff1d(np.arange(len(hold_y)), certifying)


def human_labels_since(store: LabelRows, since: int, upto: int, aggregation: Optional[str] = None,
                       classes: Optional[int] = None) -> int:
    """Human labels among store rows ``since`` to ``upto``: the retrain job's ``__relabel__`` and
    ``__tiebreak__`` markers and undos are not new labels (for ``min_new_labels`` and
    ``triage_labels_pending``). With ``aggregation`` the store's cached view counts them."""
    if aggregation is not None:
        from bisect import bisect_left

        human = store.view(upto, aggregation, classes).human_rows
        return len(human) - bisect_left(human, since)
    return sum(1 for n, row in store.rows(upto) if n >= since and row["label"] not in RESERVED_NOT_LABELS)


def retrain_once(
    registry: Registry,
    store: LabelRows,
    *,
    retrain: RetrainSettings,
    policy: PolicySettings,
    outlier_quantile: float,
    progress: Callable[[str], None] = _log_progress,
    pending: Callable[[int], None] = _ignore,
    quality: Optional[QualitySettings] = None,
) -> RetrainOutcome:
    """Train, evaluate and promote or reject one candidate from the labels already in ``store``.

    Skipped (nothing registered) when fewer than ``retrain.min_new_labels`` labels arrived
    since CURRENT. Otherwise the candidate is registered, then promoted (CURRENT moves) or
    marked ``rejected`` with the reason. Errors propagate (the caller counts failed runs).
    ``pending`` receives the number of labels not yet in CURRENT (e.g. a gauge's ``set``),
    before anything is trained, so a failing run still reports its backlog.
    With ``quality`` (the retrain job) each sample's labels are aggregated over its annotators
    (``quality.aggregation``) and held samples are left out (labelview.py); without it the
    latest label per sample wins.
    """
    current = current_version(registry)
    total = store.count()  # read once: the candidate is trained on exactly this prefix
    upto = _labels_upto(registry, current)
    classes = list(registry.manifest(current).get("classes", []))
    aggregation = quality.aggregation if quality is not None else None
    new = human_labels_since(store, upto, total, aggregation, len(classes) or None)
    pending(new)
    progress(f"{new} new labels since {current}")
    if new < retrain.min_new_labels:
        return RetrainOutcome("skipped", reason=f"{new} new labels < min_new_labels {retrain.min_new_labels}")

    base_X, base_y = load_npz(_data_file(registry, "base.npz"))
    hold_X, hold_y = load_npz(_data_file(registry, "holdout.npz"))
    lab_X, lab_y, ev_X, ev_y = store.arrays(total, retrain.eval_label_share, aggregation, classes=len(classes) or None)
    summary_q = store.view(total, aggregation, len(classes) or None).summary(since=upto) if aggregation else {}
    if summary_q:
        progress(f"labels aggregated ({aggregation}): {summary_q['samples']} samples, {summary_q['multi_annotator']} with "
                 f"more than one annotator, {summary_q['contested']} contested, {summary_q['held']} held for relabel")
    X = np.vstack([base_X, lab_X]) if len(lab_X) else base_X
    y = np.concatenate([base_y, lab_y])
    progress(f"training candidate ({retrain.model_family}) on {len(X)} samples "
             f"({len(base_X)} base + {len(lab_X)} labelled)")
    ref_path = registry.data_file("reference.npz")
    reference = load_npz(ref_path, labelled=False)[0] if ref_path is not None else None
    previous = registry.manifest(current).get("family_selection")
    trained = train_model(X, y, family=retrain.model_family, seed=policy.seed, previous=previous)
    inliers = X if reference is None or not len(reference) else np.vstack([X, reference])
    # Strict (default): the holdout's certification rows certify, nothing else. Cross-fit: the
    # base rows too, scored by fold models that also train on the human labels; the labels
    # never certify: annotators see uncertain samples, not the stream's mix.
    cross_fitted = cross_fitted_base(base_X, base_y, trained, retrain, policy.seed, progress, also=(lab_X, lab_y))
    bundle = prepare_bundle(trained.onnx_bytes, ModelFlags(), policy, source=f"{trained.family_label} candidate",
                            outlier_quantile=outlier_quantile, inliers=inliers, labelled=(hold_X, hold_y),
                            calibration=trained.calibration, cross_fitted=cross_fitted)

    # Both models see exactly the same rows, so the comparison is fair; the rows that certify
    # the candidate's threshold are not among them, so promotion does not select on them.
    judged = gate_rows(hold_y, trained.classes, policy)
    progress(f"evaluating candidate and current on {len(judged)} holdout rows (not the {len(hold_y) - len(judged)} "
             "that certify) and the reserved labels")
    gate_X, gate_y = hold_X[judged], hold_y[judged]
    both_X = np.vstack([gate_X, ev_X]) if len(ev_X) else gate_X
    both_y = np.concatenate([gate_y, ev_y])
    cand_p = apply_temperature(bundle.model.classifier.predict_proba(both_X), trained.temperature)
    cur_p, cur_classes = version_probs(registry, current, both_X)
    cand = _evaluate_splits(cand_p, trained.classes, len(gate_X), gate_y, ev_y, both_y)
    cur = _evaluate_splits(cur_p, cur_classes, len(gate_X), gate_y, ev_y, both_y)
    verdict = promotion_verdict(cand, cur, retrain.retrain_tolerance,
                                _disagreements(cand_p, trained.classes, cur_p, cur_classes, len(gate_X), both_y),
                                retrain.gate_significance)

    data = {
        "base": "data/base.npz", "base_rows": int(len(base_X)), "holdout": "data/holdout.npz",
        "labels": "data/labels.jsonl", "labels_upto": total, "labels_trained": int(len(lab_X)),
        "labels_eval": int(len(ev_X)), "class_counts": class_counts(y),
        "label_offsets": label_offsets(store, total),
        **({"quality": summary_q} if summary_q else {}),
    }
    metrics = {**cand["holdout"], "eval_labels": cand["eval_labels"], "combined": cand["combined"],
               "current_at_evaluation": {"version": current, **cur["holdout"]}}
    # Rejected candidates are registered too, so `triage models list` shows why they lost.
    version = registry.add_bundle(bundle.onnx_bytes, {**bundle.manifest, "data": data, "metrics": metrics,
                                                      "parent": current, "family": trained.family_label,
                                                      **({"family_selection": trained.selection} if trained.selection else {})},
                                    bundle.canary)
    summary = (f"candidate {version}: holdout accuracy {cand['holdout']['accuracy']:.4f} vs "
               f"{current} {cur['holdout']['accuracy']:.4f}")
    if not verdict.promote:
        registry.set_status(version, "rejected", verdict.reason)
        progress(f"{summary} -> rejected: {verdict.reason}")
        return RetrainOutcome("rejected", version, verdict.reason, cand, cur, quality=summary_q)
    registry.promote(version, expect=current)  # judged against `current`: refused if CURRENT moved
    progress(f"{summary} -> promoted")
    return RetrainOutcome("promoted", version, "", cand, cur, quality=summary_q)
