"""The policy factory and model preparation (serve --reference path and manifest path)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from triage.examples import example_paths
from triage.lifecycle.data import load_dataset
from triage.errors import ConfigError
from triage.policies import make_policy, prepare_model
from triage.scoring.scores import score_batch
from triage.scoring.servable import ServingModel
from triage.lifecycle.loading import serving_model_from_file
from triage.settings import Settings


def _model(**kw: object) -> tuple[Settings, ServingModel]:
    model_path, ref = example_paths()
    s = Settings(model=model_path, reference=ref, **kw)  # type: ignore[call-arg, arg-type]
    return s, serving_model_from_file(s.serving, s.policy)


def test_risk_without_labels_is_a_config_error() -> None:
    s, model = _model(policy="risk")
    unfitted = dataclasses.replace(model, manifest={}, calibrator=None)  # as if the reference had no y
    with pytest.raises(ConfigError, match="--reference FILE whose data has y"):
        make_policy(s.policy, unfitted)


def test_serve_model_fits_routing_from_a_labelled_reference() -> None:
    s, model = _model(policy="risk")
    assert model.calibrator is not None and model.manifest["routing"]["risk"]["threshold"] > 0
    make_policy(s.policy, model)


def test_reference_labels_fit_routing_that_round_trips_through_a_manifest() -> None:
    s, model = _model(policy="risk", risk_alpha=0.02)
    X, y = load_dataset(s.serving.reference)  # type: ignore[arg-type]
    fitted = prepare_model(s.policy, model, X, y)
    routing = fitted.manifest["routing"]
    assert fitted.calibrator is not None and 0 < routing["risk"]["threshold"] < 1
    stored = json.loads(json.dumps(routing))  # what a registry manifest would hold
    reloaded = prepare_model(s.policy, ServingModel(model.classifier, "v2", model.sha256, model.outlier,
                                             manifest={"routing": stored}))
    a, b = score_batch(fitted, X[:50], s.policy.acquisition), score_batch(reloaded, X[:50], s.policy.acquisition)
    assert np.allclose(a.probs, b.probs)
    da, db = make_policy(s.policy, fitted).decide(a), make_policy(s.policy, reloaded).decide(b)
    assert (da.reason == db.reason).all()


def test_labels_that_are_not_classes_are_named() -> None:
    s, model = _model()
    X, _ = load_dataset(s.serving.reference)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'cat' is not one of the model's classes"):
        prepare_model(s.policy, model, X[:30], np.array(["cat"] * 30))
