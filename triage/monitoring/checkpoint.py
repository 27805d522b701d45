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

from triage.errors import ConfigError
from triage.monitoring.state import MonitorConfig, VersionMonitor

FORMAT = 1
FILE = "checkpoint.json"
KEEP_VERSIONS = 4  # versions whose state is kept: the ones updated most recently
MAX_AUDITS = 20_000  # audited samples waiting for their label (oldest forgotten): days of a 1% slice
MAX_LABELS = 2_000  # labels read before their sample left the reorder (most came after it left the window: never joined)


@dataclass
class MonitorState:
    config: MonitorConfig
    versions: dict[str, VersionMonitor] = field(default_factory=dict)
    covered: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset not yet in the state
    rng: Optional[dict[str, Any]] = None  # numpy bit generator state (tie-breaking draws)
    pending: list[dict[str, Any]] = field(default_factory=list)  # retrain requests not yet acknowledged
    requested_ms: dict[str, int] = field(default_factory=dict)  # version -> last request
    audits: dict[str, list[Any]] = field(default_factory=dict)  # sample id -> [version, confidence, predicted]
    labels: dict[str, str] = field(default_factory=dict)  # sample id -> label, its audit copy not yet seen

    def add_audit(self, sample_id: str, version: str, confidence: float, predicted: str) -> Optional[str]:
        """An audit copy; returns the version it corrected, if its label was already read."""
        label = self.labels.pop(sample_id, None)
        if label is not None:
            joined = self._join(version, confidence, predicted, label, sample_id)
            if joined is not None and sample_id not in self.versions[joined].slot:
                self.labels[sample_id] = label  # its prediction is folded after it: ``join_waiting``
            return joined
        self.audits[sample_id] = [version, confidence, predicted]
        _trim(self.audits, MAX_AUDITS)
        return None

    def add_label(self, sample_id: str, label: str) -> Optional[str]:
        """A human label: joined to its audit copy, or to its sample in a version's window (a
        reviewed one); returns the version whose estimate it changed. Otherwise kept a while in
        case the copy or the sample is still on its way; the first label of a sample counts."""
        audit = self.audits.pop(sample_id, None)
        if audit is not None:
            return self._join(audit[0], audit[1], audit[2], label, sample_id)
        for vm in reversed(self.versions.values()):  # the newest first: a sample re-scored by a new version
            if vm.add_review_label(sample_id, label):
                return vm.version
        if sample_id not in self.labels:
            self.labels[sample_id] = label
            _trim(self.labels, MAX_LABELS)
        return None

    def _join(self, version: str, confidence: float, predicted: str, label: str, sample_id: str = "") -> Optional[str]:
        vm = self.versions.get(version)  # a label never brings a version's state (back) in
        if vm is None:
            return None
        vm.add_label(confidence, predicted == label, sample_id)
        return version

    def join_waiting(self, version: str, sample_ids: list[str]) -> bool:
        """Labels read before these samples of ``version`` were folded in; True if one joined. The
        labels stay: an audit copy of the sample may still be on its way (``add_audit``)."""
        vm, joined = self.versions.get(version), False
        if vm is None or not self.labels:
            return False
        for sid in sample_ids:
            label = self.labels.get(sid) if sid else None
            if label is not None:
                joined = vm.add_review_label(sid, label) or joined
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
            "audits": self.audits, "labels": self.labels,
        }, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes, config: MonitorConfig) -> "MonitorState":
        doc = json.loads(raw)
        if doc.get("format") != FORMAT:
            raise ConfigError(f"monitor checkpoint format {doc.get('format')!r} is not {FORMAT}")
        saved = MonitorConfig(**doc["config"])
        state = cls(config, covered={(t, int(p)): int(o) for t, p, o in doc["covered"]}, rng=doc.get("rng"),
                    pending=list(doc.get("pending", [])), requested_ms=dict(doc.get("requested_ms", {})),
                    audits=dict(doc.get("audits", {})), labels=dict(doc.get("labels", {})))
        # A changed window or ERT applies from now on; detectors keep the thresholds they were built with
        # unless the ERT or k changed, in which case each version starts a new reference.
        rebuild = (saved.ert, saved.k, saved.reference) != (config.ert, config.k, config.reference)
        for v in doc["versions"]:
            vm = VersionMonitor.from_state(v, config)
            if rebuild:
                vm = VersionMonitor(vm.version, config)
            state.versions[vm.version] = vm
        return state


def _trim(d: dict[str, Any], size: int) -> None:
    while len(d) > size:
        del d[next(iter(d))]


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
