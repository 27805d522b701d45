"""Loading a servable model: from a model file (prepared like ``triage models import``) or from a
registry version (sha256-verified, checked against the running model, warmed on its canary rows)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

from triage.errors import ConfigError, IncompatibleModelError
from triage.lifecycle.data import load_dataset
from triage.lifecycle.registry import Registry
from triage.model import OnnxClassifier
from triage.scoring.outlier import OutlierDetector
from triage.scoring.servable import ServingModel
from triage.settings import PolicySettings, ServingSettings


def serving_model_from_file(serving: ServingSettings, policy: PolicySettings) -> ServingModel:
    """The model for ``triage serve --model PATH [--reference FILE]``: the same preparation as
    ``triage models import`` (``preparation.prepare_bundle``), so both route alike. A labelled
    reference (``y``) also fits calibration and routing."""
    from triage.model import model_bytes
    from triage.lifecycle.preparation import ModelFlags, prepare_bundle

    if serving.model is None:
        raise ConfigError("no model: pass --model PATH or --registry DIR")
    X = y = None
    if serving.reference is not None:
        X, y = load_dataset(serving.reference)
    bundle = prepare_bundle(model_bytes(Path(serving.model)), ModelFlags.from_serving(serving), policy,
                            source=str(serving.model), outlier_quantile=serving.outlier_quantile, inliers=X,
                            labelled=(X, y) if X is not None and y is not None else None)
    model = bundle.model
    return dataclasses.replace(model, version=serving.model_version or model.version)


def registered_classifier(path: Path, manifest: dict[str, Any], serving: Optional[ServingSettings] = None) -> OnnxClassifier:
    """A registry version's classifier, read with the model flags its manifest recorded (a
    logits model stays logits wherever it is loaded: scorer, hot-swap or retrain judge)."""
    return OnnxClassifier(
        path,
        classes=manifest.get("classes") or (serving.class_names if serving else None),
        input_name=manifest.get("input_name") or (serving.input_name if serving else None),
        output_name=manifest.get("output_name"),
        feature_count=manifest.get("feature_count") or (serving.feature_count if serving else None),
        output_kind=manifest.get("output_kind", serving.output_kind if serving else "probabilities"),
        threads=serving.ort_threads if serving else 1,
    )


def serving_model_from_registry(
    registry: Registry, version: str, serving: ServingSettings, *, running: Optional[ServingModel] = None
) -> ServingModel:
    """Load a registry version: verify sha256 first, then load, check it fits the running
    model (feature count), and warm it up on the bundle's canary rows at every batch size this
    scorer runs (a model that fails at run time on any is refused: ``ModelRunError``)."""
    manifest = registry.verify(version)
    classifier = registered_classifier(registry.model_path(version), manifest, serving)
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
    model.warm_up(registry.canary(version), max_batch=serving.batch_size)
    return model
