"""The monitor's checkpoint: every version's state with the offsets it covers, in one file
replaced atomically (write, fsync, rename), so state and offsets can never disagree.

Restart rule: records below a partition's covered offset are already in the state and are
skipped; the consumer group's committed offsets never pass the covered ones (they are committed
only after the checkpoint that covers them is on disk). So a restart neither resets the state
nor counts a record twice, whatever moment it was killed at.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from triage.contracts.label import answer, standing
from triage.errors import ConfigError
from triage.monitoring.state import MonitorConfig, VersionMonitor

FORMAT = 1
FILE = "checkpoint.json"
KEEP_VERSIONS = 4  # versions whose state is kept: the ones updated most recently
MAX_AUDITS = 20_000  # audited samples waiting for their first label (oldest forgotten): days of a 1% slice
# audited samples already labelled, kept while a later label (a correction, an undo) may still
# change them: the least recently labelled forgotten first; they never push out an unlabelled one
MAX_ANSWERED = 20_000
# answered samples without an audit copy, each kind bounded apart so one never pushes out the
# other: those whose copy or sample is not read yet (``waiting``), and reviewed ones settled in
# a window (``settled``), kept while a later label may change them; least recently labelled first
MAX_LABELS = 2_000


@dataclass
class MonitorState:
    config: MonitorConfig
    versions: dict[str, VersionMonitor] = field(default_factory=dict)
    covered: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset not yet in the state
    rng: Optional[dict[str, Any]] = None  # numpy bit generator state (tie-breaking draws)
    pending: list[dict[str, Any]] = field(default_factory=list)  # retrain requests not yet acknowledged
    requested_ms: dict[str, int] = field(default_factory=dict)  # version -> last request
    audits: dict[str, list[Any]] = field(default_factory=dict)  # sample id -> [version, confidence, predicted]
    # sample id -> annotator -> answer (``triage.contracts.label.answer``): kept for audited samples,
    # whose label may still change, and for labels read before their audit copy or sample
    answers: dict[str, dict[str, str]] = field(default_factory=dict)
    # the three bounded queues of answered samples (keys in order, the least recently labelled first)
    answered: dict[str, None] = field(default_factory=dict)  # audited
    waiting: dict[str, None] = field(default_factory=dict)  # no audit copy, not in a window
    settled: dict[str, None] = field(default_factory=dict)  # no audit copy, settled in a window
    unanswered: dict[str, None] = field(default_factory=dict)  # audited, no label yet (oldest first)

    def add_audit(self, sample_id: str, version: str, confidence: float, predicted: str) -> Optional[str]:
        """An audit copy (a redelivered one changes nothing); returns the version it corrected,
        if its label was already read."""
        if sample_id in self.audits:
            return None
        self.audits[sample_id] = [version, confidence, predicted]
        if sample_id not in self.answers:
            self.unanswered[sample_id] = None
            while len(self.unanswered) > MAX_AUDITS:  # the oldest goes
                del self.audits[self._oldest(self.unanswered)]
            return None
        self.waiting.pop(sample_id, None)
        self.settled.pop(sample_id, None)
        self._keep(self.answered, sample_id, MAX_ANSWERED)  # its prediction, if folded later, finds them
        return self._join(sample_id)

    def add_label(self, sample_id: str, label: str, annotator: Optional[str] = None) -> Optional[str]:
        """A human label (a class, an edge case or an undo), folded into the sample's answers:
        joined to its audit copy, or to its sample in a version's window (a reviewed one);
        returns the version whose estimate it changed. Otherwise kept a while in case the copy
        or the sample is still on its way."""
        answer(self.answers.setdefault(sample_id, {}), label, annotator)
        if sample_id in self.audits:
            self.unanswered.pop(sample_id, None)
            self._keep(self.answered, sample_id, MAX_ANSWERED)
            return self._join(sample_id)
        for vm in reversed(self.versions.values()):  # the newest first: a sample re-scored by a new version
            if vm.add_review_label(sample_id, standing(self.answers[sample_id])):
                self.waiting.pop(sample_id, None)
                self._keep(self.settled, sample_id, MAX_LABELS)  # a later label may change it
                return vm.version
        self.settled.pop(sample_id, None)
        self._keep(self.waiting, sample_id, MAX_LABELS)  # its copy or sample may be on its way
        return None

    def _keep(self, queue: dict[str, None], sample_id: str, bound: int) -> None:
        """``sample_id`` to the newest end of ``queue``; beyond ``bound`` the oldest is forgotten
        (an audited one with its audit)."""
        queue.pop(sample_id, None)
        queue[sample_id] = None
        while len(queue) > bound:
            sid = self._oldest(queue)
            if queue is self.answered:
                self.audits.pop(sid, None)
            if sid not in self.audits:
                self.answers.pop(sid, None)

    @staticmethod
    def _oldest(d: dict[str, Any]) -> str:
        sid = next(iter(d))
        del d[sid]
        return sid

    def _join(self, sample_id: str) -> Optional[str]:
        version, confidence, predicted = self.audits[sample_id]
        vm = self.versions.get(version)  # a label never brings a version's state (back) in
        if vm is None:
            return None
        label = standing(self.answers[sample_id])
        vm.add_label(confidence, None if label is None else predicted == label, sample_id)
        return str(version)

    def join_waiting(self, version: str, sample_ids: list[str]) -> bool:
        """Labels read before these samples of ``version`` were folded in; True if one joined. The
        answers stay: an audit copy of the sample may still be on its way (``add_audit``)."""
        vm, joined = self.versions.get(version), False
        if vm is None or not self.answers:
            return False
        for sid in sample_ids:
            if sid and sid in self.answers and vm.add_review_label(sid, standing(self.answers[sid])):
                joined = True
                if sid in self.waiting:
                    del self.waiting[sid]
                    self._keep(self.settled, sid, MAX_LABELS)
        return joined

    def version(self, name: str) -> VersionMonitor:
        """The version's state, now the most recently updated. Least recently updated ones are
        dropped beyond KEEP_VERSIONS: records naming versions that no scorer serves (the
        contract allows any string) cannot push out the state of the one that serves."""
        vm = self.versions.pop(name, None) or VersionMonitor(name, self.config)
        self.versions[name] = vm
        for old in list(self.versions)[:-KEEP_VERSIONS]:
            del self.versions[old]
        return vm

    def to_json(self) -> bytes:
        return json.dumps({
            "format": FORMAT, "config": self.config.__dict__,
            "versions": [v.state() for v in self.versions.values()],
            "covered": [[t, p, o] for (t, p), o in sorted(self.covered.items())],
            "rng": self.rng, "pending": self.pending, "requested_ms": self.requested_ms,
            "audits": self.audits, "answers": self.answers,
            "answered": list(self.answered), "waiting": list(self.waiting), "settled": list(self.settled),
        }, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes, config: MonitorConfig) -> "MonitorState":
        doc = json.loads(raw)
        if doc.get("format") != FORMAT:
            raise ConfigError(f"monitor checkpoint format {doc.get('format')!r} is not {FORMAT}")
        saved = MonitorConfig(**doc["config"])
        state = cls(config, covered={(t, int(p)): int(o) for t, p, o in doc["covered"]}, rng=doc.get("rng"),
                    pending=list(doc.get("pending", [])), requested_ms=dict(doc.get("requested_ms", {})),
                    audits=dict(doc.get("audits", {})), answers=_answers(doc))
        state.answered, state.waiting, state.settled = _queues(doc, state)
        state.unanswered = dict.fromkeys(sid for sid in state.audits if sid not in state.answers)
        # A changed window or ERT applies from now on; detectors keep the thresholds they were built with
        # unless the ERT or k changed, in which case each version starts a new reference.
        rebuild = (saved.ert, saved.k, saved.reference) != (config.ert, config.k, config.reference)
        for v in doc["versions"]:
            vm = VersionMonitor.from_state(v, config)
            if rebuild:
                vm = VersionMonitor(vm.version, config)
            state.versions[vm.version] = vm
        return state


def _answers(doc: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The checkpoint's answers; one from before them kept each waiting sample's first label."""
    if "answers" in doc:
        return {sid: dict(a) for sid, a in doc["answers"].items()}
    return {sid: {"": label} for sid, label in doc.get("labels", {}).items()}


def _queues(doc: dict[str, Any], state: MonitorState) -> tuple[dict[str, None], ...]:
    """The answered samples' queues; a checkpoint from before them: by first answer."""
    if "answered" in doc:
        return tuple(dict.fromkeys(doc[k]) for k in ("answered", "waiting", "settled"))
    return (dict.fromkeys(sid for sid in state.answers if sid in state.audits),
            dict.fromkeys(sid for sid in state.answers if sid not in state.audits), {})


def load(directory: Path, config: MonitorConfig) -> MonitorState:
    path = Path(directory) / FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return MonitorState(config)
    try:
        return MonitorState.from_json(raw, config)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is not a monitor checkpoint ({exc}); move it away to start from scratch") from exc


def save(directory: Path, state: MonitorState) -> None:
    """Atomically replace the checkpoint (OSError when the disk refuses: the world's fault)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{FILE}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(state.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, directory / FILE)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
