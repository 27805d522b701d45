"""A servable model: the classifier plus everything scoring needs, swapped as one value."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from triage.calibrators import Calibrator
from triage.data import load_dataset
from triage.errors import ConfigError, ModelLoadError
from triage.model import OnnxClassifier, sha256_of
from triage.outlier import OutlierDetector
from triage.settings import ServingSettings

if TYPE_CHECKING:
    from triage.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingModel:
    classifier: OnnxClassifier
    version: str
    sha256: str
    outlier: Optional[OutlierDetector] = None
    temperature: float = 1.0
    manifest: dict[str, Any] = field(default_factory=dict)
    calibrator: Optional[Calibrator] = None  # when set, used instead of temperature (policies)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.classifier.spec.classes

    @property
    def feature_count(self) -> int:
        return self.classifier.spec.feature_count

    def warm_up(self, canary: Optional[np.ndarray] = None) -> None:
        """Run a canary batch; refuse a model whose output is not a probability table."""
        X = canary if canary is not None else np.zeros((8, self.feature_count))
        probs = self.classifier.predict_proba(X)
        if probs.shape != (len(X), len(self.classes)):
            raise ModelLoadError(self.version, f"canary output has shape {probs.shape}")
        if not np.isfinite(probs).all():
            raise ModelLoadError(self.version, "canary output contains NaN or infinity")
        if (probs < -1e-6).any() or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
            raise ModelLoadError(
                self.version,
                "canary output rows are not probabilities (negative or not summing to 1); "
                "if the model outputs logits, set --output-kind logits",
            )


def serving_model_from_file(serving: ServingSettings, *, seed: int = 0) -> ServingModel:
    """Build the model for ``triage serve --model PATH [--reference FILE]``."""
    if serving.model is None:
        raise ConfigError("no model: pass --model PATH or --registry DIR")
    reference = None
    if serving.reference is not None:
        reference, _ = load_dataset(serving.reference)
    feature_count = serving.feature_count or (reference.shape[1] if reference is not None else None)
    classifier = OnnxClassifier(
        serving.model,
        classes=serving.class_names,
        input_name=serving.input_name,
        output_name=serving.output_name,
        feature_count=feature_count,
        output_kind=serving.output_kind,
        threads=serving.ort_threads,
    )
    digest = sha256_of(serving.model)
    outlier = None
    if reference is not None:
        if reference.shape[1] != classifier.spec.feature_count:
            raise ConfigError(
                f"reference {serving.reference} has {reference.shape[1]} features; "
                f"the model takes {classifier.spec.feature_count}"
            )
        outlier = OutlierDetector.fit(reference, quantile=serving.outlier_quantile, seed=seed)
    else:
        log.warning("no --reference given: outlier routing is OFF (triage_outlier_detection_enabled=0)")
    model = ServingModel(
        classifier=classifier,
        version=serving.model_version or f"file-{digest[:12]}",
        sha256=digest,
        outlier=outlier,
    )
    model.warm_up(reference[:64] if reference is not None else None)
    return model


def serving_model_from_registry(
    registry: "Registry", version: str, serving: ServingSettings, *, running: Optional[ServingModel] = None
) -> ServingModel:
    """Load a registry version: verify sha256 first, then load, check it fits the running
    model (feature count), and warm it up on the bundle's canary rows."""
    from triage.errors import IncompatibleModelError
    from triage.outlier import OutlierDetector

    manifest = registry.verify(version)
    classifier = OnnxClassifier(
        registry.model_path(version),
        classes=manifest.get("classes") or serving.class_names,
        input_name=manifest.get("input_name") if manifest.get("input_name") else serving.input_name,
        output_name=None,
        feature_count=manifest.get("feature_count") or serving.feature_count,
        output_kind=manifest.get("output_kind", serving.output_kind),
        threads=serving.ort_threads,
    )
    if running is not None and classifier.spec.feature_count != running.feature_count:
        raise IncompatibleModelError(
            version, f"it takes {classifier.spec.feature_count} features; the stream carries {running.feature_count}"
        )
    outlier = OutlierDetector.from_dict(manifest["outlier"]) if manifest.get("outlier") else None
    if outlier is not None and outlier.feature_count != classifier.spec.feature_count:
        raise IncompatibleModelError(version, "its outlier detector and model disagree on the feature count")
    model = ServingModel(
        classifier=classifier,
        version=version,
        sha256=manifest["sha256"],
        outlier=outlier,
        temperature=float((manifest.get("calibration") or {}).get("temperature", 1.0)),
        manifest=manifest,
    )
    model.warm_up(registry.canary(version))
    return model
