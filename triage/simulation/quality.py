"""``triage simulate --annotators N``: the loop with noisy simulated annotators, once per
label-quality arm, on the same seeds and the same budget of human actions.

An arm is the service's loop (shipped acquisition, policy, retrain and promotion gate, as in
``replay``) plus what it does with annotators:

- ``latest_wins``: one annotator per sample, chosen at random; the label store keeps the latest.
- one arm per quality step (``ARMS``): consensus on the most uncertain share, consensus with
  quality-weighted votes, Dawid-Skene, second opinions for doubtful annotators, cleanlab relabel.
- ``shipped``: the ``quality`` settings as given (the shipped defaults unless flags change them).

Every annotation is one human action of the budget: an arm that asks two annotators labels
fewer samples. The bootstrap's labels (v1's training and holdout rows) are the true labels in
every arm: they stand for a small expert-checked seed set, so the arms differ only in the
loop's labels. Raw labels go to the label store with the annotator's name; where an arm
aggregates, the aggregate follows as a newer row (annotator ``aggregate``), so latest-wins
reading of the store gives the aggregate, and a label held for relabel is retracted with an
``__undo__`` row until it has been reviewed again.

Per run: the curve (test accuracy of the served model against human actions), the label error
rate of the stored labels that reach training (the latest row per sample, held ones excluded,
against the truth), relabels sent and changed, and each annotator's estimated accuracy next to
the true one.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from triage.contracts.output import RELABEL as RELABEL_REASON
from triage.lifecycle import askagain
from triage.lifecycle.labelstore import UNDO
from triage.lifecycle.labelview import CHANGED
from triage.quality.aggregate import aggregate
from triage.quality.annotators import agreement, estimate_accuracy
from triage.quality.base import Annotation
from triage.quality.consensus import ConsensusPolicy, collect
from triage.quality.issues import label_issues, out_of_fold_probs
from triage.lifecycle.retraining import RetrainOutcome, load_npz, retrain_once
from triage.settings import QualitySettings, Settings
from triage.simulation.annotators import AnnotatorPanel
from triage.simulation.datasets import Split
from triage.simulation.replay import Curve, Replay, ReplayConfig, step_labels
from triage.simulation.strategies import Strategy

LATEST_WINS, SHIPPED = "latest_wins", "shipped"
AGGREGATE = "aggregate"  # the annotator name of an aggregate row


@dataclass(frozen=True)
class QualityArm:
    name: str
    consensus: ConsensusPolicy = ConsensusPolicy()
    aggregation: str = "latest"  # latest | majority | weighted | dawid-skene
    relabel_share: float = 0.0
    description: str = ""
    live: bool = False  # run through the shipped code (LiveReplay) rather than the simulator's stand-in

    def settings(self) -> dict[str, Any]:
        c = self.consensus
        return {"consensus_share": c.share, "consensus_size": c.size, "consensus_tiebreak": c.tiebreak,
                "consensus_max_annotators": c.max_annotators, "consensus_doubt_below": c.doubt_below,
                "aggregation": self.aggregation, "relabel_share": self.relabel_share}


def arm_from_settings(name: str, q: QualitySettings, description: str = "") -> QualityArm:
    policy = ConsensusPolicy(q.consensus_share, q.consensus_size, q.consensus_tiebreak, q.consensus_max_annotators,
                             q.consensus_doubt_below)
    # the live loop has no second opinions for doubtful annotators: that step stays a stand-in
    return QualityArm(name, policy, q.aggregation, q.relabel_share, description, live=q.consensus_doubt_below == 0)


def one_step(**changes: Any) -> QualitySettings:
    """One quality step on top of latest-wins (every other step off, whatever the defaults)."""
    off = {"consensus_share": 0.0, "consensus_doubt_below": 0.0, "aggregation": "majority", "relabel_share": 0.0}
    return QualitySettings(**{**off, **changes})


def _default(name: str) -> Any:
    return QualitySettings.model_fields[name].default


SHARE, RELABEL = _default("consensus_share"), _default("relabel_share")
DOUBT_SHARE, DOUBT_BELOW = 0.1, 0.75

# One step each at the shipped values, so that each is measured alone against latest_wins (the
# aggregation and annotator-quality steps need overlaps: they ride on consensus and are read
# against the consensus arm).
ARMS: dict[str, QualityArm] = {a.name: a for a in (
    QualityArm(LATEST_WINS, ConsensusPolicy(tiebreak=False), "latest",
               description="one annotator per sample, chosen at random; the latest label wins"),
    arm_from_settings("consensus", one_step(consensus_share=SHARE),
                      f"the most uncertain {SHARE:.0%} of each batch get two annotators, a third when they disagree; "
                      "majority"),
    arm_from_settings("consensus_weighted", one_step(consensus_share=SHARE, aggregation="weighted"),
                      "consensus, votes weighted by each annotator's estimated accuracy"),
    arm_from_settings("dawid_skene", one_step(consensus_share=SHARE, aggregation="dawid-skene"),
                      "consensus, labels aggregated by Dawid-Skene (crowd-kit)"),
    arm_from_settings("doubt", one_step(consensus_share=DOUBT_SHARE, consensus_doubt_below=DOUBT_BELOW,
                                        aggregation="weighted"),
                      f"consensus on the most uncertain {DOUBT_SHARE:.0%} (to estimate annotators), and a second "
                      f"opinion for a lone label from an annotator estimated below {DOUBT_BELOW:.0%} accurate; weighted"),
    arm_from_settings("relabel", one_step(relabel_share=RELABEL),
                      f"{RELABEL:.0%} of each step's budget re-reviews the labels cleanlab flags; held out of training "
                      "meanwhile"),
)}


def parse_arms(text: Optional[str]) -> list[str]:
    """Comma-separated arm names or ``all``; latest_wins and shipped are always run."""
    from triage.errors import ConfigError

    names = list(ARMS) if text is None or text.strip() in ("", "all") else [
        n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ARMS and n != SHIPPED]
    if unknown:
        raise ConfigError(f"--quality-arms: unknown {', '.join(unknown)}; choose from {', '.join(ARMS)} or all")
    return list(dict.fromkeys([LATEST_WINS, *names, SHIPPED]))


@dataclass
class QualityRun:
    arm: str
    seed: int
    curve: Curve
    label_error_rate: float
    stored_labels: int
    spent: int
    samples_labelled: int  # distinct loop samples with at least one label
    multi_labelled: int  # of them, with two or more annotators
    relabel_sent: int = 0
    relabel_changed: int = 0  # came back with a different aggregate
    relabel_fixed: int = 0  # came back right after having been wrong
    flagged: int = 0
    flagged_wrong: int = 0  # flagged labels that were in fact wrong
    annotator_accuracy: dict[str, dict[str, float]] = field(default_factory=dict)
    agreement: Optional[float] = None
    seconds: float = 0.0
    tiebreaks_asked: int = 0  # by the retrain job (live arms)
    tiebreaks_answered: int = 0
    held: int = 0  # held for relabel at the end, out of training (live arms)

    @property
    def final_accuracy(self) -> float:
        return self.curve[-1][1]


class NoisyReplay(Replay):
    """A ``Replay`` whose annotators are the ``panel`` and whose labels go through ``arm``."""

    def __init__(self, split: Split, strategy: Strategy, seed: int, cfg: ReplayConfig, base: Settings,
                 arm: QualityArm, panel: AnnotatorPanel) -> None:
        super().__init__(split, strategy, seed, cfg, base)
        self._estimates: Optional[dict[str, float]] = None  # annotators' accuracy, for second opinions
        self.arm, self.panel = arm, panel
        self.raw: list[Annotation] = []
        self.stored: dict[str, str] = {}  # what the label store's latest row per sample says
        self.held: dict[str, str] = {}  # sample -> its label when flagged, waiting for relabel
        self.queue: list[str] = []  # flagged samples in the order to relabel
        self.reviewed: set[str] = set()  # flagged once already: never flagged again
        self.offset = 0
        self.counts = Counter[str]()
        self.trusted = load_npz(self.registry.data_file("base.npz"))  # type: ignore[arg-type]

    # --- annotators --------------------------------------------------------------------------
    def _row(self, sample: str) -> int:
        return int(sample[1:])

    def _ask(self, sample: str, asked: frozenset[str]) -> Optional[Annotation]:
        row = self._row(sample)
        who = self.panel.next_annotator(self.seed, row, frozenset(self.panel.names.index(a) for a in asked))
        if who is None:
            return None
        label = self.panel.answer(self.seed, row, str(self.split.y_pool[row]), who)
        return Annotation(sample, self.panel.names[who], label)

    def _accuracy(self) -> dict[str, float]:
        """Estimated from the consensus overlaps only: relabelled samples were chosen because
        their first label looked wrong, so agreement on them says little about an annotator."""
        overlaps = [a for a in self.raw if a.sample not in self.reviewed]
        return {w: q.accuracy for w, q in estimate_accuracy(overlaps).items()}

    # --- the store -------------------------------------------------------------------------
    def _append(self, rows: Sequence[tuple[str, str, str]]) -> None:
        """(sample, label, annotator) rows appended to the label store, as the ingest writes them."""
        X = self.split.X_pool
        out = []
        for sample, label, annotator in rows:
            out.append({"id": sample, "label": label, "features": X[self._row(sample)].tolist(),
                        "annotator": annotator, "partition": 0, "offset": self.offset})
            self.offset += 1
        self.store.append(out)

    def _write(self, rows: list[tuple[str, str, str]]) -> None:
        """Rows appended, and the stand-in's own latest label per sample kept."""
        self._append(rows)
        for sample, label, _ in rows:
            if label == UNDO:
                self.stored.pop(sample, None)
            else:
                self.stored[sample] = label

    def _aggregate(self) -> dict[str, str]:
        if self.arm.aggregation == "latest":
            return {a.sample: a.label for a in self.raw}
        return aggregate(self.raw, self.arm.aggregation, self._accuracy(),  # type: ignore[arg-type]
                         classes=len(self.panel.classes))

    def _sync(self, new: Sequence[Annotation]) -> None:
        """Raw rows for ``new``, then an aggregate row wherever the store's latest row differs
        from what should reach training (a held sample: an undo)."""
        self._write([(a.sample, a.label, a.annotator) for a in new])
        want = self._aggregate()
        fix = []
        for sample in sorted(want, key=self._row):
            target = UNDO if sample in self.held else want[sample]
            if (target == UNDO and sample in self.stored) or (target != UNDO and self.stored.get(sample) != target):
                fix.append((sample, target, AGGREGATE))
        self._write(fix)

    # --- a step ----------------------------------------------------------------------------
    def _relabel(self, budget: int) -> int:
        """Flagged samples back to review (reason relabel), oldest first, within ``budget``."""
        if not self.queue or budget <= 0:
            return 0
        prior: dict[str, list[Annotation]] = {}
        for a in self.raw:
            prior.setdefault(a.sample, []).append(a)
        policy = ConsensusPolicy(share=0.0, tiebreak=True, max_annotators=self.arm.consensus.max_annotators)
        got = collect(policy, self.queue, budget, self._ask, prior=prior, planned=[1] * len(self.queue))
        self.raw.extend(got.annotations)
        truth = self.split.y_pool
        now = self._aggregate()
        for sample in got.samples:
            before = self.held.pop(sample)
            self.queue.remove(sample)
            after = now[sample]
            self.counts["relabel_sent"] += 1
            self.counts["relabel_changed"] += int(after != before)
            self.counts["relabel_fixed"] += int(after != before and after == truth[self._row(sample)])
        self.spent += got.spent
        self._sync(got.annotations)
        return got.spent

    def _before_annotating(self, goal: int) -> None:
        nominal = goal - self.spent
        if self.arm.relabel_share > 0:
            self._relabel(min(nominal, math.ceil(self.arm.relabel_share * nominal)))
        self._estimates = self._accuracy() if self.arm.consensus.doubt_below > 0 else None

    def _label(self, rows: np.ndarray, limit: Optional[int] = None) -> None:
        """The picked rows go to the panel under the consensus policy, within ``limit`` actions."""
        got = collect(self.arm.consensus, [f"s{i}" for i in rows], len(rows) if limit is None else limit,
                      self._ask, accuracy=self._estimates)
        self.raw.extend(got.annotations)
        self.labelled[[self._row(x) for x in got.samples]] = True
        self.spent += got.spent
        self._sync(got.annotations)

    def _annotate(self, nominal: int) -> None:
        super()._annotate(nominal)
        if self.arm.relabel_share > 0:
            self._flag(math.ceil(self.arm.relabel_share * step_labels(self.cfg, self.spent)))

    def _flag(self, limit: int) -> None:
        """Confident learning over the stored labels; the likeliest wrong, up to what the next
        step's relabel budget can review, are held out of training and queued."""
        room = limit - len(self.queue)
        samples = sorted(self.stored, key=self._row)
        if room <= 0 or len(samples) < 2 * len(self.panel.classes):
            return
        rows = [self._row(x) for x in samples]
        y = np.asarray([self.stored[x] for x in samples])
        probs = out_of_fold_probs(self.split.X_pool[rows], y, self.panel.classes, trusted=self.trusted,
                                  seed=self.seed)
        truth = self.split.y_pool
        flagged = 0
        labelled_by = Counter(a.sample for a in self.raw)
        for i in label_issues(y, probs, self.panel.classes):
            sample = samples[int(i)]
            if sample in self.reviewed or labelled_by[sample] > 1:
                continue  # reviewed once already, or consensus has had its say
            self.reviewed.add(sample)
            self.held[sample] = self.stored[sample]
            self.queue.append(sample)
            self.counts["flagged"] += 1
            self.counts["flagged_wrong"] += int(self.stored[sample] != truth[self._row(sample)])
            flagged += 1
            if flagged >= room:
                break
        self._sync([])

    def quality_result(self) -> QualityRun:
        truth = self.split.y_pool
        wrong = sum(label != truth[self._row(x)] for x, label in self.stored.items())
        samples = Counter(a.sample for a in {(a.sample, a.annotator): a for a in self.raw}.values())
        estimated = self._accuracy()
        true_acc = self.panel.true_accuracy(list(truth))
        return QualityRun(
            self.arm.name, self.seed, list(self.curve), wrong / max(len(self.stored), 1), len(self.stored),
            self.spent, len(samples), sum(1 for n in samples.values() if n > 1),
            self.counts["relabel_sent"], self.counts["relabel_changed"], self.counts["relabel_fixed"],
            self.counts["flagged"], self.counts["flagged_wrong"],
            {name: {"estimated": round(estimated.get(name, float("nan")), 4), "true": round(true_acc[k], 4)}
             for k, name in enumerate(self.panel.names)},
            agreement([a for a in self.raw if a.sample not in self.reviewed]), time.monotonic() - self.started)


class LiveReplay(NoisyReplay):
    """What ships, with the panel as the people: raw labels in the label store (one row per
    annotator), the first round as the scorer plans it (``consensus_size`` annotators for the
    most uncertain ``consensus_share``, no tiebreak yet); at each retrain what the retrain job
    does (``askagain.asks_for`` on the store's ``label_view``, marker rows as it writes them,
    then ``retrain_once`` with the quality settings); the asks are answered first in the next
    step (priority 1.0, by an annotator not in ``labelled_by``), each one action of its budget.
    Asks left unanswered when the budget runs out stay held, as they would in the service."""

    def __init__(self, split: Split, strategy: Strategy, seed: int, cfg: ReplayConfig, base: Settings,
                 arm: QualityArm, panel: AnnotatorPanel) -> None:
        super().__init__(split, strategy, seed, cfg, base, arm, panel)
        self.quality = QualitySettings(**arm.settings())
        q = self.quality
        self.first = ConsensusPolicy(q.consensus_share, q.consensus_size, tiebreak=False,
                                     max_annotators=q.consensus_max_annotators)
        self.waiting: list[askagain.Ask] = []  # published asks no annotator has answered yet

    def _take(self, got: Sequence[Annotation]) -> None:
        self.raw.extend(got)
        self._append([(a.sample, a.label, a.annotator) for a in got])

    def _before_annotating(self, goal: int) -> None:
        """The retrain job's asks first, oldest first, within the step's budget."""
        while self.waiting and self.spent < goal:
            ask = self.waiting.pop(0)
            got = self._ask(ask.sample, frozenset(ask.labelled_by))
            if got is None:
                continue  # nobody left who has not labelled it
            self._take([got])
            self.spent += 1
            self.counts[f"{ask.reason}_answered"] += 1

    def _annotate(self, nominal: int) -> None:
        Replay._annotate(self, nominal)

    def _label(self, rows: np.ndarray, limit: Optional[int] = None) -> None:
        got = collect(self.first, [f"s{i}" for i in rows], len(rows) if limit is None else limit, self._ask)
        self._take(got.annotations)
        self.labelled[[self._row(x) for x in got.samples]] = True
        self.spent += got.spent

    def _classes(self) -> list[str]:
        return list(self.registry.manifest(self.registry.current() or "")["classes"])

    def _retrain(self) -> RetrainOutcome:
        """As the retrain job's run: the asks (consumers/trainer.py ``_quality_step``), their
        markers in the store, then ``retrain_once`` with ``quality``."""
        s, q, classes = self.s, self.quality, self._classes()
        total = self.store.count()
        view = self.store.view(total, q.aggregation, len(classes))
        versions = self.registry.versions()
        previous = int(self.registry.manifest(versions[-1]).get("data", {}).get("labels_upto", 0)) if versions else 0
        new_labels = sum(1 for n in view.human_rows if n >= previous)
        if new_labels >= s.retrain.min_new_labels:
            asks = askagain.asks_for(view, classes, new_labels, q, trusted=self.trusted, seed=s.policy.seed)
            truth = self.split.y_pool
            for a in asks:
                self.counts[f"{a.reason}_asked"] += 1
                if a.reason == RELABEL_REASON:
                    self.counts["flagged"] += 1
                    self.counts["flagged_wrong"] += int(view.labels[a.sample] != truth[self._row(a.sample)])
            self._append([(a.sample, askagain.MARK[a.reason], askagain.ASKER) for a in asks])
            self.waiting += asks
        try:
            return retrain_once(self.registry, self.store, retrain=s.retrain, policy=s.policy,
                                outlier_quantile=s.serving.outlier_quantile, progress=lambda _: None, quality=q)
        finally:
            self.store.forget_view()

    def quality_result(self) -> QualityRun:
        classes = self._classes()
        view = self.store.view(self.store.count(), self.quality.aggregation, len(classes))
        truth = self.split.y_pool
        training = view.training()
        wrong = sum(r["label"] != truth[self._row(sid)] for sid, r in training.items())
        samples = Counter(a.sample for a in {(a.sample, a.annotator): a for a in self.raw}.values())
        overlaps = view.overlapped()
        estimated = {w: q.accuracy for w, q in estimate_accuracy(overlaps).items()}
        true_acc = self.panel.true_accuracy(list(truth))
        changed = [r for r in view.releases if r.outcome == CHANGED]
        return QualityRun(
            self.arm.name, self.seed, list(self.curve), wrong / max(len(training), 1), len(training),
            self.spent, len(samples), sum(1 for n in samples.values() if n > 1),
            len(view.releases), len(changed),
            sum(view.labels.get(r.sample) == truth[self._row(r.sample)] for r in changed),
            self.counts["flagged"], self.counts["flagged_wrong"],
            {name: {"estimated": round(estimated.get(name, float("nan")), 4), "true": round(true_acc[k], 4)}
             for k, name in enumerate(self.panel.names)},
            agreement(overlaps), time.monotonic() - self.started,
            tiebreaks_asked=self.counts["tiebreak_asked"], tiebreaks_answered=self.counts["tiebreak_answered"],
            held=sum(s.held is not None for s in view.samples.values() if s.votes))


def run_arm(split: Split, strategy: Strategy, seed: int, cfg: ReplayConfig, flat: dict[str, Any], arm: QualityArm,
            panel: AnnotatorPanel, tick: Optional[Callable[[str], None]] = None) -> QualityRun:
    """One (arm, seed) run to the budget."""
    from triage.runtime.threads import limit_blas_threads

    limit_blas_threads(1)
    cls = LiveReplay if arm.live else NoisyReplay
    replay = cls(split, strategy, seed, cfg, Settings(**flat), arm, panel)
    try:
        while not replay.done:
            replay.step()
            if tick is not None:
                tick(arm.name)
        return replay.quality_result()
    finally:
        replay.close()
