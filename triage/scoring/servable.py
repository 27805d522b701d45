"""A servable model: the classifier plus everything scoring needs, swapped as one value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from triage.scoring.calibration import Calibrator
from triage.errors import ModelLoadError, ModelRunError, ScoreError
from triage.model import OnnxClassifier
from triage.model.classifier import KNOWN_GOOD_ROWS, run_sizes
from triage.scoring.outlier import OutlierDetector
from triage.settings import ServingSettings

DEFAULT_MAX_BATCH: int = ServingSettings.model_fields["batch_size"].default


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

    def warm_up(self, canary: Optional[np.ndarray] = None, *, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        """Run the canary rows (zeros of the input's shape without them) at every batch size a
        scorer of ``max_batch`` rows runs (``run_sizes``); refuse a model that fails at run time
        on any of them, or whose output is not a probability table. Once it passed, the canary
        rows are what a failing live batch is compared with (``OnnxClassifier.known_good``)."""
        rows = np.asarray(canary, dtype=np.float64) if canary is not None and len(canary) else \
            np.zeros((1, self.feature_count))
        who = f"{self.version}: {self.classifier.described}"
        passed = 0
        for n in run_sizes(max_batch, self.classifier.spec.batch):
            X = np.resize(rows, (n, rows.shape[1]))
            try:
                probs = self.classifier.predict_proba(X)
            except (ModelRunError, ScoreError) as exc:
                reason = exc.reason if isinstance(exc, ModelRunError) else exc.message
                then = f" (the smaller sizes tried, up to {passed} row{'s' if passed > 1 else ''}, passed)" if passed else ""
                raise ModelRunError(who, f"a canary batch of {n} rows{then}", f"{reason}; a scorer runs batches of "
                                    f"1 to {max_batch} rows (--batch-size), so the model is refused") from exc
            self._check_probabilities(probs, len(X), who)
            passed = n
        self.classifier.known_good = rows[:KNOWN_GOOD_ROWS]

    def _check_probabilities(self, probs: np.ndarray, n: int, who: str) -> None:
        if probs.shape != (n, len(self.classes)):
            raise ModelLoadError(who, f"canary output has shape {probs.shape}, expected {(n, len(self.classes))}")
        if not np.isfinite(probs).all():
            raise ModelLoadError(who, "its output on the canary rows contains NaN or infinity; no flag changes "
                                 "this: check the model against its reference data")
        if (probs < -1e-6).any() or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
            hint = ("it is set to logits, so check --output-name" if self.classifier.spec.output_kind == "logits"
                    else "if the model outputs logits, set --output-kind logits")
            raise ModelLoadError(who, f"its output on the canary rows is not probabilities (negative or rows not "
                                 f"summing to 1); {hint}")
