"""The model registry: versioned bundles and an atomically replaced CURRENT, in a directory
(this module) or on object storage (``s3://bucket/prefix``: triage.lifecycle.s3registry, same
layout and semantics). ``open_registry`` picks by the location.

    <root>/CURRENT                  the served version (one line), replaced with os.replace
    <root>/HISTORY                  promoted versions, oldest first (for rollback)
    <root>/models/<v>/model.onnx    the model bytes
    <root>/models/<v>/manifest.json see docs/contracts.md "Manifest"
    <root>/models/<v>/canary.npy    reference rows used to warm up and sanity-check
    <root>/models/<v>/live_risk.json the live-certified risk threshold and its history (`triage audit`)
    <root>/data/                    training data: base.npz, holdout.npz, labels.jsonl

The registry, not a Kafka event, is the source of truth for model bytes. No Kafka here.

Model bytes are immutable once written; a promote or rollback replaces CURRENT and HISTORY
only if both are still what it read (under an exclusive lock here, a conditional write on
object storage), so of two concurrent promotes exactly one wins and the other fails saying so.
Here the two files are one commit: the new history goes to HISTORY.next (naming the CURRENT it
belongs to) first, then CURRENT is replaced (the commit point), then HISTORY; a process killed
in between leaves a HISTORY.next that readers take if CURRENT names it, and ignore if not.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np

from triage.contracts import decode_manifest, encode_manifest
from triage.errors import IntegrityError, RegistryError
from triage.model import sha256_of
from triage.runtime import failpoints

if TYPE_CHECKING:
    from triage.lifecycle.labelstore import LabelRows, RepairCallback
    from triage.settings import ServingSettings

try:  # serialises promotes of one directory registry; not available on every platform
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX
    fcntl = None  # type: ignore[assignment]

_VERSION = re.compile(r"^v(\d+)$")
STATUSES = ("candidate", "current", "previous", "rejected")


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def open_registry(location: Union[str, Path], *, cache_dir: Optional[Path] = None) -> "Registry":
    """The registry at ``location``: a directory, or ``s3://bucket/prefix`` (``cache_dir``:
    where a scorer keeps verified bundles; default under the user cache directory)."""
    from triage.lifecycle.objectstore import parse_location

    s3 = parse_location(str(location)) if isinstance(location, str) else None
    if s3 is None:
        return Registry(Path(location))
    from triage.lifecycle.s3registry import S3Registry

    return S3Registry(s3, cache_dir=cache_dir)


def registry_from(serving: "ServingSettings") -> "Registry":
    """The registry of ``--registry`` (with ``--registry-cache`` for an object-storage one)."""
    if serving.registry is None:
        raise RegistryError("no registry given: pass --registry DIR|s3://bucket/prefix or set TRIAGE_REGISTRY")
    return open_registry(serving.registry, cache_dir=serving.registry_cache)


class PointerConflict(RegistryError):
    """CURRENT changed between reading it and replacing it: another writer won."""

    def __init__(self, action: str, target: str, expected: Optional[str], found: Optional[str]) -> None:
        super().__init__(f"{action} {target} lost a race: CURRENT moved from {expected or 'unset'} to "
                         f"{found or 'unset'} meanwhile; nothing changed (check `triage models list`, then retry)")


class Registry:
    def __init__(self, root: Path) -> None:
        from triage.lifecycle.objectstore import parse_location

        parse_location(str(root))  # refuses s3:, gs: ...: a URL is never a directory name
        self.root = Path(root)

    @property
    def location(self) -> str:
        """Where the registry is, as the user names it (for messages)."""
        return str(self.root)

    # --- layout ----------------------------------------------------------------------------
    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def bundle_dir(self, version: str) -> Path:
        if not _VERSION.match(version):
            raise RegistryError(f"{version!r} is not a version name (expected v<N>)")
        return self.models_dir / version

    def model_path(self, version: str) -> Path:
        return self.bundle_dir(version) / "model.onnx"

    def resolve(self, relative: str) -> Path:
        """A path from a model event, refused unless it stays inside the registry."""
        root = self.root.resolve()
        target = (root / relative).resolve()
        if target != root and root not in target.parents:
            raise RegistryError(f"path {relative!r} points outside the registry {root}")
        return target

    def check_event_path(self, relative: str, version: str) -> None:
        """Refuse a model event whose path is not ``version``'s bundle inside the registry."""
        if self.resolve(relative) != self.model_path(version).resolve():
            raise RegistryError(f"event path {relative!r} is not the bundle of {version}")

    # --- training data and labels ----------------------------------------------------------
    def data_file(self, name: str) -> Optional[Path]:
        """A local path to ``data/<name>`` (base.npz, holdout.npz, reference.npz), or None."""
        path = self.data_dir / name
        return path if path.exists() else None

    def save_data(self, name: str, **arrays: np.ndarray) -> None:
        """Save ``data/<name>`` as a compressed npz of ``arrays``."""
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
        self._write_data(name, buf.getvalue())

    def _write_data(self, name: str, data: bytes) -> None:
        _atomic_write(self.data_dir / name, data)

    def label_store(self, on_repair: Optional["RepairCallback"] = None) -> "LabelRows":
        """The label store: ``data/labels.jsonl`` here; segments on object storage."""
        from triage.lifecycle.labelstore import LabelStore

        return LabelStore(self.data_dir, on_repair=on_repair)

    def check_readable(self) -> None:
        if not self.root.is_dir():
            raise RegistryError(f"{self.root} is not a directory (create it with `triage train` or `triage models import`)")
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise RegistryError(f"{self.root} is not readable by this process")

    # --- versions --------------------------------------------------------------------------
    def versions(self) -> list[str]:
        if not self.models_dir.is_dir():
            return []
        found = [p.name for p in self.models_dir.iterdir() if _VERSION.match(p.name) and (p / "manifest.json").exists()]
        return sorted(found, key=lambda v: int(v[1:]))

    def next_version(self) -> str:
        existing = [int(p.name[1:]) for p in self.models_dir.iterdir() if _VERSION.match(p.name)] if self.models_dir.is_dir() else []
        return f"v{max(existing, default=0) + 1}"

    def manifest(self, version: str) -> dict[str, Any]:
        path = self.bundle_dir(version) / "manifest.json"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise RegistryError(f"no version {version} (have {', '.join(self.versions()) or 'none'})") from None
        except OSError as exc:
            raise RegistryError(f"cannot read manifest of {version}: {exc}") from None
        try:
            return decode_manifest(raw)
        except RegistryError as exc:
            raise RegistryError(f"manifest of {version}: {exc.message}") from None

    def write_manifest(self, version: str, manifest: dict[str, Any]) -> None:
        _atomic_write(self.bundle_dir(version) / "manifest.json", encode_manifest(manifest))

    def canary(self, version: str) -> Optional[np.ndarray]:
        path = self.bundle_dir(version) / "canary.npy"
        return np.load(path, allow_pickle=False) if path.exists() else None

    def add_bundle(self, onnx_bytes: bytes, manifest: dict[str, Any], canary: Optional[np.ndarray] = None) -> str:
        """Write a new version (status ``candidate``) and return its name. Readers never see
        half a bundle, and of two writers taking the same number one moves on to the next."""
        canary_bytes = None
        if canary is not None:
            buf = io.BytesIO()
            np.save(buf, np.asarray(canary, dtype=np.float64), allow_pickle=False)
            canary_bytes = buf.getvalue()
        for _ in range(100):
            version = self.next_version()
            full = {
                **manifest,
                "version": version,
                "sha256": hashlib.sha256(onnx_bytes).hexdigest(),
                "path": f"models/{version}/model.onnx",
                "created": manifest.get("created") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "status": manifest.get("status", "candidate"),
            }
            if self._publish_bundle(version, onnx_bytes, canary_bytes, encode_manifest(full)):
                return version
        raise RegistryError("could not allocate a version name")

    def _publish_bundle(self, version: str, onnx: bytes, canary: Optional[bytes], manifest: bytes) -> bool:
        """Assembled in a temporary directory and renamed into place; False if ``version`` is taken."""
        self.models_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.models_dir, prefix=f".{version}."))
        (staging / "model.onnx").write_bytes(onnx)
        if canary is not None:
            (staging / "canary.npy").write_bytes(canary)
        (staging / "manifest.json").write_bytes(manifest)
        try:
            os.rename(staging, self.models_dir / version)
            return True
        except OSError:  # another writer took this number; try the next
            for f in staging.iterdir():
                f.unlink()
            staging.rmdir()
            return False

    def verify(self, version: str) -> dict[str, Any]:
        """Manifest of ``version`` after checking the model file's sha256 against it."""
        manifest = self.manifest(version)
        path = self.model_path(version)
        if not path.exists():
            raise RegistryError(f"{version} has no model.onnx")
        actual = sha256_of(path)
        if actual != manifest.get("sha256"):
            raise IntegrityError(str(path), str(manifest.get("sha256")), actual)
        return manifest

    def set_status(self, version: str, status: str, reason: Optional[str] = None) -> None:
        manifest = self.manifest(version)
        manifest["status"] = status
        if reason:
            manifest["status_reason"] = reason
        else:
            manifest.pop("status_reason", None)
        self.write_manifest(version, manifest)

    # --- CURRENT and history ---------------------------------------------------------------
    def current(self) -> Optional[str]:
        try:
            value = (self.root / "CURRENT").read_text().strip()
        except FileNotFoundError:
            return None
        return value or None

    def history(self) -> list[str]:
        return self._pointer()[1]

    def _pointer(self) -> tuple[Optional[str], list[str], Any]:
        """(CURRENT, HISTORY, a token that ``_swap_pointer`` compares: both of them)."""
        current = self.current()
        try:
            pending = json.loads((self.root / "HISTORY.next").read_text())
        except (FileNotFoundError, ValueError):
            pending = None
        if isinstance(pending, dict) and pending.get("current") == current and current is not None:
            history = [str(v) for v in pending.get("history", [])]  # committed; HISTORY not yet replaced
        else:
            path = self.root / "HISTORY"
            history = path.read_text().split() if path.exists() else []
        return current, history, (current, tuple(history))

    def _swap_pointer(self, current: str, history: list[str], token: Any) -> bool:
        """Replace CURRENT and HISTORY unless either moved since ``_pointer`` gave ``token``."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)  # released by close
            if self._pointer()[2] != token:
                return False
            _atomic_write(self.root / "HISTORY.next", json.dumps({"current": current, "history": history}).encode())
            _atomic_write(self.root / "CURRENT", f"{current}\n".encode())
            failpoints.hit("registry.after_current")
            _atomic_write(self.root / "HISTORY", ("\n".join(history) + "\n").encode())
            os.unlink(self.root / "HISTORY.next")
            return True
        finally:
            os.close(fd)

    def promote(self, version: str, *, force: bool = False, expect: Optional[str] = None) -> dict[str, Any]:
        """Make ``version`` CURRENT (after verifying its bytes); the old one becomes previous.
        ``expect``: the CURRENT this promote was decided against (a retrain's judge); a
        different CURRENT refuses it. Raises PointerConflict when another writer moved CURRENT
        meanwhile."""
        manifest = self.verify(version)
        if manifest.get("status") == "rejected" and not force:
            raise RegistryError(f"{version} was rejected ({manifest.get('status_reason')}); "
                                "promote it anyway with --force")
        old, history, token = self._pointer()
        if expect is not None and old != expect:
            raise PointerConflict("promote", version, expect, old)
        history = [v for v in history if v != version] + [version]
        if not self._swap_pointer(version, history, token):
            raise PointerConflict("promote", version, old, self.current())
        if old and old != version:
            self.set_status(old, "previous")
        self.set_status(version, "current")
        return self.manifest(version)

    def rollback(self) -> dict[str, Any]:
        """Re-promote the version that was current before the current one."""
        current, history, token = self._pointer()
        # The rolled-back version leaves history so a second rollback goes further back.
        remaining = [v for v in history if v != current]
        if not remaining:
            raise RegistryError("nothing to roll back to: no earlier promoted version")
        target = remaining[-1]
        self.verify(target)
        if not self._swap_pointer(target, remaining, token):
            raise PointerConflict("rollback to", target, current, self.current())
        self.set_status(target, "current")
        if current:
            self.set_status(current, "rejected", "rolled back")
        return self.manifest(target)

    # --- live re-certification (written by `triage audit`, read by every scorer's watcher) ---
    def live_risk(self, version: str) -> Optional[dict[str, Any]]:
        """``models/<v>/live_risk.json``: the live control's threshold history (None: none yet)."""
        path = self.bundle_dir(version) / "live_risk.json"
        try:
            doc = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise RegistryError(f"cannot read {path}: {exc}") from exc
        if not isinstance(doc, dict):
            raise RegistryError(f"{path} is not a JSON object")
        return doc

    def write_live_risk(self, version: str, doc: dict[str, Any]) -> None:
        _atomic_write(self.bundle_dir(version) / "live_risk.json", json.dumps(doc, indent=2, sort_keys=True).encode())

    def model_event(self, version: str, action: str) -> dict[str, Any]:
        m = self.manifest(version)
        return {"version": version, "sha256": m["sha256"], "path": m["path"], "action": action,
                "metrics": m.get("metrics", {})}
