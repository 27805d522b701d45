"""The model registry: a directory of versioned bundles and an atomically replaced CURRENT.

    <root>/CURRENT                  the served version (one line), replaced with os.replace
    <root>/HISTORY                  promoted versions, oldest first (for rollback)
    <root>/models/<v>/model.onnx    the model bytes
    <root>/models/<v>/manifest.json see docs/contracts.md "Manifest"
    <root>/models/<v>/canary.npy    reference rows used to warm up and sanity-check
    <root>/models/<v>/live_risk.json the live-certified risk threshold and its history (`triage audit`)
    <root>/data/                    training data: base.npz, holdout.npz, labels.jsonl

The registry, not a Kafka event, is the source of truth for model bytes. No Kafka here.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from triage.contracts import decode_manifest, encode_manifest
from triage.errors import IntegrityError, RegistryError
from triage.model import sha256_of

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


class Registry:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

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
        """Write a new version (status ``candidate``) and return its name. The bundle is
        assembled in a temporary directory and renamed into place, so readers never see half."""
        self.models_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            version = self.next_version()
            staging = Path(tempfile.mkdtemp(dir=self.models_dir, prefix=f".{version}."))
            (staging / "model.onnx").write_bytes(onnx_bytes)
            if canary is not None:
                np.save(staging / "canary.npy", np.asarray(canary, dtype=np.float64), allow_pickle=False)
            full = {
                **manifest,
                "version": version,
                "sha256": sha256_of(staging / "model.onnx"),
                "path": f"models/{version}/model.onnx",
                "created": manifest.get("created") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "status": manifest.get("status", "candidate"),
            }
            (staging / "manifest.json").write_bytes(encode_manifest(full))
            try:
                os.rename(staging, self.models_dir / version)
                return version
            except OSError:  # another writer took this number; try the next
                for f in staging.iterdir():
                    f.unlink()
                staging.rmdir()
        raise RegistryError("could not allocate a version name")

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
        path = self.root / "HISTORY"
        return path.read_text().split() if path.exists() else []

    def promote(self, version: str, *, force: bool = False) -> dict[str, Any]:
        """Make ``version`` CURRENT (after verifying its bytes); the old one becomes previous."""
        manifest = self.verify(version)
        if manifest.get("status") == "rejected" and not force:
            raise RegistryError(f"{version} was rejected ({manifest.get('status_reason')}); "
                                "promote it anyway with --force")
        old = self.current()
        _atomic_write(self.root / "CURRENT", f"{version}\n".encode())
        history = [v for v in self.history() if v != version] + [version]
        _atomic_write(self.root / "HISTORY", ("\n".join(history) + "\n").encode())
        if old and old != version:
            self.set_status(old, "previous")
        self.set_status(version, "current")
        return self.manifest(version)

    def rollback(self) -> dict[str, Any]:
        """Re-promote the version that was current before the current one."""
        current = self.current()
        history = [v for v in self.history() if v != current]
        if not history:
            raise RegistryError("nothing to roll back to: no earlier promoted version")
        target = history[-1]
        manifest = self.promote(target, force=True)
        # The rolled-back version leaves history so a second rollback goes further back.
        remaining = [v for v in self.history() if v != current]
        _atomic_write(self.root / "HISTORY", ("\n".join(remaining) + "\n").encode())
        if current:
            self.set_status(current, "rejected", "rolled back")
        return manifest

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
