"""The registry on object storage: ``s3://bucket/prefix``, the directory layout as object keys.

    <prefix>/CURRENT                    {"current": "v3", "history": ["v1", "v2", "v3"]}: one
                                        object, so the served version and the history move together
    <prefix>/models/<v>/model.onnx      written once (If-None-Match: *): the claim of the number
    <prefix>/models/<v>/canary.npy
    <prefix>/models/<v>/manifest.json   written last: a version exists once its manifest does
    <prefix>/models/<v>/live_risk.json
    <prefix>/data/base.npz, holdout.npz, reference.npz
    <prefix>/data/labels/<n>.jsonl      the label store's segments (labelsegments.py)

Promote and rollback replace CURRENT with ``If-Match: <etag read>`` (``If-None-Match: *`` for the
first), so of two concurrent writers exactly one wins. Model bytes are downloaded into a local
cache (``cache_dir``) and sha256-checked against the manifest before anything loads them; a
scorer with an empty cache fills it from the store.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from triage.contracts import decode_manifest, encode_manifest
from triage.errors import IntegrityError, RegistryError
from triage.lifecycle.objectstore import ObjectStore, S3Location
from triage.lifecycle.registry import _VERSION, Registry, _atomic_write
from triage.model import sha256_of

if TYPE_CHECKING:
    from triage.lifecycle.labelstore import LabelRows, RepairCallback


def default_cache_dir(location: S3Location) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "triage" / "registry" / location.bucket / (location.prefix or "_")


class S3Registry(Registry):
    def __init__(self, location: S3Location, *, cache_dir: Optional[Path] = None) -> None:
        self.s3 = location
        self.store = ObjectStore(location)
        # The local cache takes the directory registry's place for whatever must be a file.
        self.root = Path(cache_dir) if cache_dir is not None else default_cache_dir(location)

    @property
    def location(self) -> str:
        return str(self.s3)

    def check_readable(self) -> None:
        self.store.check_bucket()

    def check_event_path(self, relative: str, version: str) -> None:
        if relative != f"models/{version}/model.onnx":
            raise RegistryError(f"event path {relative!r} is not the bundle of {version}")

    # --- versions --------------------------------------------------------------------------
    def _numbers(self, need_manifest: bool) -> list[str]:
        found: set[str] = set()
        for key in self.store.keys("models/"):
            parts = key.split("/")
            if len(parts) == 3 and _VERSION.match(parts[1]) and (parts[2] == "manifest.json" or not need_manifest):
                found.add(parts[1])
        return sorted(found, key=lambda v: int(v[1:]))

    def versions(self) -> list[str]:
        return self._numbers(need_manifest=True)

    def next_version(self) -> str:
        taken = self._numbers(need_manifest=False)
        return f"v{int(taken[-1][1:]) + 1 if taken else 1}"

    def manifest(self, version: str) -> dict[str, Any]:
        self.bundle_dir(version)  # validates the name
        got = self.store.get(f"models/{version}/manifest.json")
        if got is None:
            raise RegistryError(f"no version {version} (have {', '.join(self.versions()) or 'none'})")
        try:
            return decode_manifest(got[0])
        except RegistryError as exc:
            raise RegistryError(f"manifest of {version}: {exc.message}") from None

    def write_manifest(self, version: str, manifest: dict[str, Any]) -> None:
        self.bundle_dir(version)
        self.store.put(f"models/{version}/manifest.json", encode_manifest(manifest))

    def canary(self, version: str) -> Optional[np.ndarray]:
        got = self.store.get(f"models/{self.bundle_dir(version).name}/canary.npy")
        return None if got is None else np.load(io.BytesIO(got[0]), allow_pickle=False)

    def _publish_bundle(self, version: str, onnx: bytes, canary: Optional[bytes], manifest: bytes) -> bool:
        if not self.store.create(f"models/{version}/model.onnx", onnx):
            return False  # another writer took this number
        if canary is not None:
            self.store.put(f"models/{version}/canary.npy", canary)
        if not self.store.create(f"models/{version}/manifest.json", manifest):
            raise RegistryError(f"models/{version}/manifest.json appeared while {version} was being written")
        return True

    def verify(self, version: str) -> dict[str, Any]:
        """The manifest, once the cached model bytes match its sha256 (downloaded if missing or stale)."""
        manifest = self.manifest(version)
        expected = str(manifest.get("sha256"))
        path = super().model_path(version)
        if path.exists() and sha256_of(path) == expected:
            return manifest
        got = self.store.get(f"models/{version}/model.onnx")
        if got is None:
            raise RegistryError(f"{version} has no model.onnx")
        actual = hashlib.sha256(got[0]).hexdigest()
        if actual != expected:
            raise IntegrityError(f"{self.location}/models/{version}/model.onnx", expected, actual)
        _atomic_write(path, got[0])  # only verified bytes enter the cache
        return manifest

    def model_path(self, version: str) -> Path:
        """The verified local copy of ``version``'s model bytes."""
        self.verify(version)
        return super().model_path(version)

    # --- CURRENT and history ---------------------------------------------------------------
    def _pointer(self) -> tuple[Optional[str], list[str], Any]:
        got = self.store.get("CURRENT")
        if got is None:
            return None, [], None
        try:
            doc = json.loads(got[0])
            current, history = doc["current"], list(doc["history"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryError(f"{self.location}/CURRENT is not a registry pointer: {exc}") from None
        return current, history, got[1]

    def _swap_pointer(self, current: str, history: list[str], token: Any) -> bool:
        body = json.dumps({"current": current, "history": history}).encode()
        return self.store.create("CURRENT", body) if token is None else self.store.replace("CURRENT", body, token)

    def current(self) -> Optional[str]:
        return self._pointer()[0]

    def history(self) -> list[str]:
        return self._pointer()[1]

    # --- live re-certification ---------------------------------------------------------------
    def live_risk(self, version: str) -> Optional[dict[str, Any]]:
        got = self.store.get(f"models/{self.bundle_dir(version).name}/live_risk.json")
        if got is None:
            return None
        try:
            doc = json.loads(got[0])
        except ValueError as exc:
            raise RegistryError(f"cannot read live_risk.json of {version}: {exc}") from exc
        if not isinstance(doc, dict):
            raise RegistryError(f"live_risk.json of {version} is not a JSON object")
        return doc

    def write_live_risk(self, version: str, doc: dict[str, Any]) -> None:
        self.store.put(f"models/{self.bundle_dir(version).name}/live_risk.json",
                       json.dumps(doc, indent=2, sort_keys=True).encode())

    # --- training data and labels ----------------------------------------------------------
    def data_file(self, name: str) -> Optional[Path]:
        got = self.store.get(f"data/{name}")
        if got is None:
            return None
        path = self.data_dir / name
        _atomic_write(path, got[0])
        return path

    def _write_data(self, name: str, data: bytes) -> None:
        self.store.put(f"data/{name}", data)

    def label_store(self, on_repair: Optional["RepairCallback"] = None) -> "LabelRows":
        from triage.lifecycle.labelsegments import SegmentLabelStore

        return SegmentLabelStore(self.store, on_repair=on_repair)
