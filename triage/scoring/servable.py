"""A servable model: the classifier plus everything scoring needs, swapped as one value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from triage.scoring.calibration import Calibrator
from triage.errors import ModelLoadError
from triage.model import OnnxClassifier
from triage.scoring.outlier import OutlierDetector


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
        who = f"{self.version}: {self.classifier.described}"
        if probs.shape != (len(X), len(self.classes)):
            raise ModelLoadError(who, f"canary output has shape {probs.shape}, expected {(len(X), len(self.classes))}")
        if not np.isfinite(probs).all():
            raise ModelLoadError(who, "its output on the canary rows contains NaN or infinity; no flag changes "
                                 "this: check the model against its reference data")
        if (probs < -1e-6).any() or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
            hint = ("it is set to logits, so check --output-name" if self.classifier.spec.output_kind == "logits"
                    else "if the model outputs logits, set --output-kind logits")
            raise ModelLoadError(who, f"its output on the canary rows is not probabilities (negative or rows not "
                                 f"summing to 1); {hint}")
