"""The retrain decision (``promotion_verdict``), one retrain step (``retrain_once``) on a real
registry, and the bundle entry points (``train_initial``, ``import_model``). No Kafka."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import numpy as np
import onnx
import pytest
from sklearn.datasets import load_digits

from triage.lifecycle.bundles import import_model, train_initial
from triage.errors import ConfigError, ModelLoadError, TriageError
from triage.lifecycle.labelstore import RELABEL_MARK, TIEBREAK_MARK, UNDO, LabelStore
from triage.lifecycle.registry import Registry
from triage.lifecycle.retraining import RetrainOutcome, Verdict, promotion_verdict, retrain_once
from triage.settings import PolicySettings, QualitySettings, RetrainSettings, ServingSettings

NAN = float("nan")
QUANTILE = 0.995


# --- promotion_verdict -------------------------------------------------------------------


def splits(holdout: float, combined: float, eval_labels: float = NAN) -> dict[str, dict[str, Any]]:
    """``training.evaluate``-shaped metrics per split (only accuracy matters to the verdict)."""
    return {name: {"accuracy": acc, "macro_f1": acc, "ece": 0.0, "n": 0 if acc != acc else 100}
            for name, acc in (("holdout", holdout), ("combined", combined), ("eval_labels", eval_labels))}


@pytest.mark.parametrize(
    ("candidate", "current", "tolerance", "promote", "worse"),
    [
        pytest.param(splits(0.95, 0.94, 0.9), splits(0.90, 0.90, 0.9), 0.0, True, (), id="better"),
        pytest.param(splits(0.90, 0.90, 0.9), splits(0.90, 0.90, 0.9), 0.0, True, (), id="equal"),
        pytest.param(splits(0.89, 0.88, 0.9), splits(0.90, 0.90, 0.9), 0.02, True, (), id="worse-within-tolerance"),
        pytest.param(splits(0.85, 0.85, 0.9), splits(0.90, 0.90, 0.9), 0.02, False, ("holdout", "combined"),
                     id="worse-beyond-tolerance"),
        pytest.param(splits(0.85, 0.92, 0.9), splits(0.90, 0.90, 0.9), 0.0, False, ("holdout",), id="worse-on-holdout-only"),
        pytest.param(splits(0.92, 0.85, 0.9), splits(0.90, 0.90, 0.9), 0.0, False, ("combined",), id="worse-on-combined-only"),
        pytest.param(splits(0.92, 0.92), splits(0.90, 0.90), 0.0, True, (), id="nan-eval-labels-no-reserved-labels"),
        pytest.param(splits(0.92, 0.92, 0.10), splits(0.90, 0.90, 0.95), 0.0, True, (),
                     id="eval-labels-alone-do-not-decide"),
    ],
)
def test_promotion_verdict(candidate: dict[str, Any], current: dict[str, Any], tolerance: float,
                           promote: bool, worse: tuple[str, ...]) -> None:
    verdict = promotion_verdict(candidate, current, tolerance)
    assert verdict == Verdict(promote, worse, verdict.reason)
    if promote:
        assert verdict.reason == ""
    else:
        assert verdict.reason.startswith("worse than current on ")
        for split in worse:
            assert (f"{split} ({candidate[split]['accuracy']:.4f} < {current[split]['accuracy']:.4f} "
                    f"- tolerance {tolerance})") in verdict.reason


def test_verdict_is_immutable() -> None:
    verdict = promotion_verdict(splits(0.9, 0.9), splits(0.9, 0.9), 0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        verdict.promote = False  # type: ignore[misc]


# --- retrain_once on a real registry -----------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(X))
    return X[order], y[order]


@pytest.fixture(scope="module")
def v1_registry(tmp_path_factory: pytest.TempPathFactory, digits: tuple[np.ndarray, np.ndarray]) -> Registry:
    """v1 from a weak start (60 base rows, 240 held out), built once and copied per test."""
    X, y = digits
    reg = Registry(tmp_path_factory.mktemp("v1") / "registry")
    train_initial(X[:300], y[:300], reg, retrain=RetrainSettings(holdout_fraction=0.8), policy=PolicySettings(),
                  outlier_quantile=QUANTILE, progress=lambda m: None)
    return reg


@pytest.fixture
def registry(tmp_path: Path, v1_registry: Registry) -> Registry:
    shutil.copytree(v1_registry.root, tmp_path / "registry")
    return Registry(tmp_path / "registry")


def add_labels(reg: Registry, digits: tuple[np.ndarray, np.ndarray], start: int, stop: int,
               wrong: bool = False) -> LabelStore:
    """Human labels for rows start..stop (``wrong``: every one names another class), as ingest stores them."""
    X, y = digits
    store = LabelStore(reg.data_dir)
    store.append({"id": f"d{i}", "label": str((int(y[i]) + 3) % 10 if wrong else int(y[i])),
                  "features": X[i].tolist(), "annotator": "test", "partition": i % 2, "offset": i}
                 for i in range(start, stop))
    return store


def run(reg: Registry, store: LabelStore, messages: list[str] | None = None, pending: list[int] | None = None,
        **retrain: Any) -> RetrainOutcome:
    sink = messages if messages is not None else []
    counts = pending if pending is not None else []
    return retrain_once(reg, store, retrain=RetrainSettings(**retrain), policy=PolicySettings(),
                        outlier_quantile=QUANTILE, progress=sink.append, pending=counts.append)


def test_too_few_new_labels_is_skipped_and_registers_nothing(
        registry: Registry, digits: tuple[np.ndarray, np.ndarray]) -> None:
    store = add_labels(registry, digits, 300, 305)
    pending: list[int] = []
    outcome = run(registry, store, pending=pending, min_new_labels=20)
    assert outcome == RetrainOutcome("skipped", reason="5 new labels < min_new_labels 20")
    assert pending == [5]
    assert registry.versions() == ["v1"] and registry.current() == "v1"


@pytest.mark.parametrize("quality", [None, QualitySettings()], ids=["latest-wins", "aggregated"])
def test_markers_and_undos_are_not_new_labels(registry: Registry, digits: tuple[np.ndarray, np.ndarray],
                                              quality: QualitySettings | None) -> None:
    """The retrain job's __relabel__/__tiebreak__ markers (and undos) are not human labels: they
    neither reach min_new_labels nor count in triage_labels_pending."""
    store = add_labels(registry, digits, 300, 305)
    X = digits[0]
    store.append([{"id": f"d{300 + i % 5}", "label": mark, "features": X[300 + i % 5].tolist(),
                   "annotator": "triage-retrain", "partition": 0, "offset": 1000 + i}
                  for i, mark in enumerate([RELABEL_MARK, TIEBREAK_MARK] * 10 + [UNDO])])
    assert store.count() == 26
    pending: list[int] = []
    outcome = retrain_once(registry, store, retrain=RetrainSettings(min_new_labels=20), policy=PolicySettings(),
                           outlier_quantile=QUANTILE, pending=pending.append, quality=quality)
    assert outcome == RetrainOutcome("skipped", reason="5 new labels < min_new_labels 20")
    assert pending == [5]
    assert registry.versions() == ["v1"]


def test_good_labels_promote_the_candidate(registry: Registry, digits: tuple[np.ndarray, np.ndarray]) -> None:
    store = add_labels(registry, digits, 300, 700)
    messages: list[str] = []
    pending: list[int] = []
    outcome = run(registry, store, messages, pending, min_new_labels=20)
    assert (outcome.outcome, outcome.version, outcome.reason) == ("promoted", "v2", "")
    assert pending == [400] and messages[0] == "400 new labels since v1"
    assert outcome.candidate["holdout"]["accuracy"] > outcome.current["holdout"]["accuracy"]
    assert outcome.candidate["eval_labels"]["n"] > 0  # some labels were reserved, not trained on
    assert registry.current() == "v2" and registry.history() == ["v1", "v2"]
    v2 = registry.verify("v2")
    assert v2["status"] == "current" and "status_reason" not in v2 and v2["parent"] == "v1"
    assert registry.manifest("v1")["status"] == "previous"
    data = v2["data"]
    assert data["labels_upto"] == 400 and data["labels_trained"] + data["labels_eval"] == 400
    assert data["label_offsets"] == {"0": 698, "1": 699}
    assert v2["metrics"]["current_at_evaluation"]["version"] == "v1"
    assert v2["routing"].get("risk") or v2["routing"].get("skipped")
    assert messages[-1].endswith("-> promoted")
    # v2 was trained on every stored label: nothing new, so the next run is skipped.
    assert run(registry, store).reason == "0 new labels < min_new_labels 20"


def test_the_gate_never_judges_the_rows_that_certify(tmp_path: Path, registry: Registry,
                                                     digits: tuple[np.ndarray, np.ndarray]) -> None:
    """Promotion must not select on the certifying rows: make every one of their labels wrong
    and the gate's evidence and verdict stay the same, while the certificate sees the change."""
    from triage.lifecycle.retraining import gate_rows

    shutil.copytree(registry.root, tmp_path / "broken")
    broken = Registry(tmp_path / "broken")
    hold = np.load(broken.data_dir / "holdout.npz")
    X_hold, y_hold = hold["X"], hold["y"].astype(str)
    classes = registry.manifest("v1")["classes"]
    certifying = np.setdiff1d(np.arange(len(y_hold)), gate_rows(y_hold, classes, PolicySettings()))
    assert 0 < len(certifying) < len(y_hold)
    y_bad = y_hold.copy()
    y_bad[certifying] = [str((int(v) + 1) % 10) for v in y_hold[certifying]]
    np.savez_compressed(broken.data_dir / "holdout.npz", X=X_hold, y=y_bad)
    outcomes = [run(reg, add_labels(reg, digits, 300, 500), min_new_labels=20) for reg in (registry, broken)]
    assert outcomes[0].candidate == outcomes[1].candidate and outcomes[0].current == outcomes[1].current
    assert outcomes[0].outcome == outcomes[1].outcome == "promoted"
    risks = [reg.manifest("v2")["routing"]["risk"] for reg in (registry, broken)]
    assert risks[1]["coverage"] == 0.0 < risks[0]["coverage"]  # every certifying row wrong: nothing certified


def test_poisoned_labels_are_rejected_and_current_stays(
        registry: Registry, digits: tuple[np.ndarray, np.ndarray]) -> None:
    store = add_labels(registry, digits, 300, 700, wrong=True)
    outcome = run(registry, store, min_new_labels=20)
    assert (outcome.outcome, outcome.version) == ("rejected", "v2")
    assert outcome.candidate["holdout"]["accuracy"] < outcome.current["holdout"]["accuracy"]
    assert registry.current() == "v1" and registry.history() == ["v1"]
    v2 = registry.manifest("v2")
    assert v2["status"] == "rejected" and v2["status_reason"] == outcome.reason
    assert outcome.reason.startswith("worse than current on holdout")
    assert registry.manifest("v1")["status"] == "current"


def test_a_registry_without_current_fails_clearly(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    with pytest.raises(TriageError, match="no CURRENT version"):
        run(reg, LabelStore(reg.data_dir))


# --- bundle entry points -----------------------------------------------------------------


def test_train_initial_refuses_a_registry_that_already_serves(
        registry: Registry, digits: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = digits
    with pytest.raises(ConfigError, match="already has a current model"):
        train_initial(X[:300], y[:300], registry, retrain=RetrainSettings(), policy=PolicySettings(),
                      outlier_quantile=QUANTILE)


def test_import_model_registers_a_candidate(
        tmp_path: Path, registry: Registry, digits: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = digits
    external = tmp_path / "external.onnx"
    shutil.copyfile(registry.model_path("v1"), external)
    version = import_model(registry, external, serving=ServingSettings(outlier_quantile=QUANTILE),
                           policy=PolicySettings(), reference=X[1000:1300], labels=y[1000:1300])
    m = registry.verify(version)
    assert (version, m["status"], m["parent"], m["family"]) == ("v2", "candidate", "v1", "imported")
    assert m["data"] == {"imported_from": str(external), "reference_rows": 300, "labelled_rows": 300}
    assert m["metrics"]["accuracy"] > 0.7 and registry.current() == "v1"
    # labelled reference -> calibration and routing, as `serve --model` fits them
    assert m["routing"]["calibration"] and m["routing"]["risk"]["threshold"] > 0
    with pytest.raises(ModelLoadError, match="--feature-count 32 given"):
        import_model(registry, external, serving=ServingSettings(feature_count=32), policy=PolicySettings(),
                     reference=X[1000:1300, :32])
    assert registry.versions() == ["v1", "v2"]


def test_import_refuses_a_failing_canary_before_writing(
        tmp_path: Path, registry: Registry, digits: tuple[np.ndarray, np.ndarray]) -> None:
    """A logits model imported as probabilities fails its canary: nothing is registered."""
    X, _ = digits
    path = tmp_path / "logits.onnx"
    W = onnx.helper.make_tensor("W", onnx.TensorProto.FLOAT, [64, 10], np.random.default_rng(0).normal(size=640).tolist())
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "W"], ["logits"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 64])],
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [None, 10])], [W])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8), str(path))
    serving = ServingSettings(classes=",".join(str(i) for i in range(10)))
    with pytest.raises(ModelLoadError, match="--output-kind logits"):
        import_model(registry, path, serving=serving, policy=PolicySettings(), reference=X[:300])
    assert registry.versions() == ["v1"] and registry.current() == "v1"
    ok = import_model(registry, path, serving=serving.model_copy(update={"output_kind": "logits"}),
                      policy=PolicySettings(), reference=X[:300])
    assert registry.manifest(ok)["output_kind"] == "logits"


def test_serve_model_and_import_route_alike(
        tmp_path: Path, registry: Registry, digits: tuple[np.ndarray, np.ndarray]) -> None:
    """One preparation path: the same model and labelled reference give the same calibrated
    scores and routing parameters from a file as from the registry."""
    from triage.policies import prepare_model
    from triage.scoring.scores import score_batch
    from triage.lifecycle.loading import serving_model_from_file, serving_model_from_registry

    X, y = digits
    external, ref = tmp_path / "external.onnx", tmp_path / "ref.npz"
    shutil.copyfile(registry.model_path("v1"), external)
    np.savez(ref, X=X[1000:1400], y=y[1000:1400])
    policy = PolicySettings()
    from_file = serving_model_from_file(ServingSettings(model=external, reference=ref), policy)
    version = import_model(registry, external, serving=ServingSettings(), policy=policy,
                           reference=X[1000:1400], labels=y[1000:1400])
    from_registry = prepare_model(policy, serving_model_from_registry(registry, version, ServingSettings()))
    assert from_file.manifest["routing"] == registry.manifest(version)["routing"]
    a, b = score_batch(from_file, X[:300], policy.acquisition), score_batch(from_registry, X[:300], policy.acquisition)
    np.testing.assert_allclose(a.probs, b.probs)
    np.testing.assert_allclose(a.outlier, b.outlier)


# --- model families: auto, cross-fit -------------------------------------------------------


def test_auto_keeps_the_family_with_the_lowest_validation_log_loss() -> None:
    from sklearn.datasets import make_classification

    from triage.lifecycle.training import AUTO_CANDIDATES, train_model

    # Two clusters per class in 10 informative dimensions: a linear model cannot separate them.
    X, y = make_classification(n_samples=800, n_features=12, n_informative=10, n_redundant=0, n_classes=4,
                               class_sep=1.5, random_state=3)
    trained = train_model(X, y, family="auto", seed=0)
    sel = trained.selection
    assert sel is not None and sel["candidates"] == list(AUTO_CANDIDATES) and sel["validation_rows"] == 160
    assert trained.family == sel["chosen"] == min(sel["scores"], key=sel["scores"].get)
    assert trained.family != "logreg" and sel["scores"]["logreg"] > sel["scores"][trained.family] + 0.1
    assert trained.family_label == f"auto:{trained.family}"
    assert trained.onnx_bytes and trained.classes == ["0", "1", "2", "3"]


def test_auto_with_few_rows_is_logreg_and_an_explicit_family_is_kept(digits: tuple[np.ndarray, np.ndarray]) -> None:
    from triage.lifecycle.training import AUTO_MIN_ROWS, train_model

    X, y = digits
    small = train_model(X[:AUTO_MIN_ROWS - 1], y[:AUTO_MIN_ROWS - 1], family="auto")
    assert small.family == "logreg" and small.selection is not None and small.selection["candidates"] == ["logreg"]
    gb = train_model(X[:300], y[:300], family="gb")
    assert (gb.family, gb.selection, gb.family_label) == ("gb", None, "gb")
    with pytest.raises(ConfigError, match="unknown model family 'svm'"):
        train_model(X[:300], y[:300], family="svm")


def test_cross_fit_scores_every_row_out_of_fold() -> None:
    """On random labels a model scoring rows it was fitted on looks far better than chance."""
    from triage.lifecycle.training import FAMILIES, aligned_probs, cross_fit

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5))
    y = rng.integers(0, 3, 300).astype(str)
    classes = ["0", "1", "2"]
    oof = cross_fit(X, y, family="gb", classes=classes, folds=5, seed=0)
    assert oof.shape == (300, 3)
    np.testing.assert_allclose(oof.sum(axis=1), 1.0, atol=1e-6)
    in_sample = aligned_probs(FAMILIES["gb"](0).fit(X.astype(np.float32), y), X, classes)
    assert (np.asarray(classes)[in_sample.argmax(axis=1)] == y).mean() > 0.7
    assert (np.asarray(classes)[oof.argmax(axis=1)] == y).mean() < 0.45
    with pytest.raises(ConfigError, match="concrete family"):
        cross_fit(X, y, family="auto", classes=classes, folds=5)


def test_train_initial_certifies_on_held_out_rows_only_and_records_the_family(v1_registry: Registry) -> None:
    m = v1_registry.manifest("v1")
    assert m["family"] == "auto:logreg"  # 60 base rows: below AUTO_MIN_ROWS
    assert m["family_selection"]["candidates"] == ["logreg"]
    assert "cross_fit" not in m["routing"]
    holdout = m["routing"]["holdout"]
    assert holdout["n_calibration"] + holdout["n_certification"] == 240
    assert m["routing"]["certification"] == {"mode": "strict", "rows": m["routing"]["risk"]["n"]}
    assert m["routing"]["risk"]["n"] <= holdout["n_certification"] and "multiplicity" not in m["routing"]["risk"]


def test_cross_fit_certifies_on_more_rows_with_the_served_models_own_calibrator(
        tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]) -> None:
    """Cross-fit adds the base rows, scored out of fold, to the certifying rows only: the
    served model and its calibrator (fitted on its own held-out probabilities) are the strict ones."""
    X, y = digits
    kw: dict[str, Any] = dict(policy=PolicySettings(), outlier_quantile=QUANTILE, progress=lambda msg: None)
    strict = train_initial(X[:400], y[:400], Registry(tmp_path / "strict"), retrain=RetrainSettings(), **kw)
    crossed = train_initial(X[:400], y[:400], Registry(tmp_path / "cross"),
                            retrain=RetrainSettings(certification="cross-fit"), **kw)
    assert crossed["routing"]["cross_fit"]["out_of_fold_rows"] == 320
    assert crossed["routing"]["certification"]["mode"] == "cross-fit"
    assert crossed["routing"]["risk"]["n"] > strict["routing"]["risk"]["n"] + 300
    assert crossed["routing"]["calibration"] == strict["routing"]["calibration"]


def test_train_initial_cross_fit_off_and_bad_folds(tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = digits
    reg = Registry(tmp_path / "off")
    m = train_initial(X[:400], y[:400], reg, retrain=RetrainSettings(model_family="logreg", certification="cross-fit",
                                                                     cross_fit_folds=0),
                      policy=PolicySettings(), outlier_quantile=QUANTILE, progress=lambda msg: None)
    assert m["family"] == "logreg" and "family_selection" not in m
    assert "cross_fit" not in m["routing"] and m["routing"]["holdout"]["n_certification"] == 40
    with pytest.raises(ConfigError, match="cross_fit_folds 1"):
        train_initial(X[:400], y[:400], Registry(tmp_path / "one"),
                      retrain=RetrainSettings(certification="cross-fit", cross_fit_folds=1),
                      policy=PolicySettings(), outlier_quantile=QUANTILE, progress=lambda msg: None)


def test_retrain_records_its_family_and_keeps_auto_choice_until_the_data_doubles(
        tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]) -> None:
    from triage.lifecycle.training import reselect_due

    X, y = digits
    reg = Registry(tmp_path / "registry")
    train_initial(X[:700], y[:700], reg, retrain=RetrainSettings(), policy=PolicySettings(),
                  outlier_quantile=QUANTILE, progress=lambda m: None)
    chosen = reg.manifest("v1")["family_selection"]
    assert chosen["rows"] == 560 and len(chosen["candidates"]) == 3
    store = add_labels(reg, digits, 700, 900)  # 560 base + 190 trained < 1120: keep the choice
    outcome = run(reg, store, min_new_labels=20)
    v2 = reg.manifest(outcome.version or "")
    assert v2["family"] == reg.manifest("v1")["family"]
    assert v2["family_selection"]["kept"] is True and v2["family_selection"]["rows"] == 560
    # Strict: certified on the holdout's certifying rows, the same ones as v1; the gate judged the others.
    assert "cross_fit" not in v2["routing"]
    assert v2["routing"]["holdout"] == {**reg.manifest("v1")["routing"]["holdout"], "accuracy": ANY}
    assert reselect_due(chosen, 1120) and not reselect_due(chosen, 1119)
    assert reselect_due({"chosen": "logreg", "rows": 150}, 160)  # chosen by rule, not compared
    assert reselect_due(None, 10)


def test_the_served_model_is_refitted_on_every_row(digits: tuple[np.ndarray, np.ndarray]) -> None:
    from triage.lifecycle.training import train_model

    X, y = digits
    trained = train_model(X[:300], y[:300], family="logreg")
    assert trained.calibration["refit_rows"] == 300
    assert trained.estimator[-1].coef_.shape == (10, 64)
    assert trained.estimator[0].n_samples_seen_ == 300  # the scaler saw all rows, not the 80% split


def test_a_tiny_bootstrap_with_a_class_seen_once_trains(tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]) -> None:
    """20 labels, one class with a single row (simulate's static bootstrap): no cross-fit, no crash,
    and the served model knows every class it was given."""
    X, y = digits
    rows = np.concatenate([np.flatnonzero(y == 0)[:1], np.flatnonzero(y != 0)[:19]])
    reg = Registry(tmp_path / "registry")
    m = train_initial(X[rows], y[rows], reg, retrain=RetrainSettings(holdout_fraction=0.2), policy=PolicySettings(),
                      outlier_quantile=QUANTILE, progress=lambda msg: None)
    assert "cross_fit" not in (m["routing"] or {})
    base = np.load(reg.data_dir / "base.npz")
    assert sorted(m["classes"]) == sorted(set(base["y"].tolist()))


def test_train_initial_with_four_rows_of_two_classes(tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]) -> None:
    """A 1-row holdout cannot be stratified over 2 classes: split plainly, do not crash."""
    X, y = digits
    rows = np.concatenate([np.flatnonzero(y == 0)[:2], np.flatnonzero(y == 1)[:2]])
    m = train_initial(X[rows], y[rows], Registry(tmp_path / "r"), retrain=RetrainSettings(), policy=PolicySettings(),
                      outlier_quantile=QUANTILE, progress=lambda msg: None, reference=X[:100])
    assert m["data"]["base_rows"] == 3
    # Without unlabelled rows three are too few for the outlier detector: a clear refusal.
    with pytest.raises(ConfigError, match="outlier detector needs at least 10"):
        train_initial(X[rows], y[rows], Registry(tmp_path / "s"), retrain=RetrainSettings(), policy=PolicySettings(),
                      outlier_quantile=QUANTILE, progress=lambda msg: None)


def test_the_mlp_refit_starts_from_the_80_percent_fit_and_converges_on_every_row() -> None:
    """The warm refit trains on every row (the scaler saw them all), runs to convergence rather
    than stopping after one epoch on stale counters, takes fewer epochs than a fresh fit and
    predicts as well on unseen rows. A class the 80% fit never saw forces a fresh fit."""
    from sklearn.datasets import make_classification

    from triage.lifecycle.training import _fit, refit

    X, y = make_classification(n_samples=2600, n_features=20, n_informative=10, n_redundant=4, n_classes=5,
                               random_state=0)
    y = y.astype(str)
    X_all, y_all, X_test, y_test = X[:2000], y[:2000], X[2000:], y[2000:]
    first = _fit("mlp", 0, X_all[:1600], y_all[:1600])
    warm, cold = refit("mlp", 0, first, X_all, y_all), _fit("mlp", 0, X_all, y_all)
    assert warm is not first and first[0].n_samples_seen_ == 1600  # the 80% fit is left as it was
    assert warm[0].n_samples_seen_ == 2000
    assert 5 < warm[-1].n_iter_ < cold[-1].n_iter_
    assert warm.score(X_test, y_test) > cold.score(X_test, y_test) - 0.03
    assert warm.score(X_test, y_test) > first.score(X_test, y_test) - 0.01

    y_new = y_all.copy()
    y_new[-5:] = "new"
    fresh = refit("mlp", 0, first, X_all, y_new)
    assert "new" in fresh.classes_ and fresh[-1].n_iter_ == _fit("mlp", 0, X_all, y_new)[-1].n_iter_
