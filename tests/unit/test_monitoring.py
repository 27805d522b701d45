"""The monitor's pure core: label-free accuracy estimation and ERT-calibrated drift detection,
each attacked the way traffic will: many seeds, finite references, ties, restarts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import beta as beta_dist
from scipy.stats import poisson

from triage.errors import ConfigError
from triage.monitoring import checkpoint
from triage.monitoring.checkpoint import MonitorState
from triage.monitoring.drift import Detector, cusum, detectors, run_length, threshold
from triage.monitoring.estimate import estimate
from triage.monitoring.state import MonitorConfig, Observations


def _calibrated(rng: np.random.Generator, n: int, classes: int = 4, sharpness: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels drawn from them: calibrated by construction."""
    logits = rng.normal(0, sharpness, size=(n, classes))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = (rng.random(n)[:, None] > np.cumsum(probs, axis=1)).sum(axis=1)
    return probs, labels


def test_threshold_inverts_the_run_length() -> None:
    for ert in (1e3, 1e5, 1e7):
        assert run_length(threshold(ert)) == pytest.approx(ert, rel=1e-6)
    with pytest.raises(ValueError, match="too short"):
        threshold(0.5)


def test_vectorised_cusum_matches_the_recursion() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(0.3, 1, size=5_000)
    h, k = 6.0, 0.25
    pos = neg = 0.0
    alarms = 0
    for x in z:
        pos, neg = max(0.0, pos + x - k), max(0.0, neg - x - k)
        if max(pos, neg) > h:
            alarms, pos, neg = alarms + 1, 0.0, 0.0
    got = cusum(z, 0.0, 0.0, k, h)
    assert got[2] == alarms > 10
    assert got[0] == pytest.approx(pos) and got[1] == pytest.approx(neg)
    # split into chunks, the state carries over exactly
    state = (0.0, 0.0)
    total = 0
    for part in np.array_split(z, 7):
        p, n, a, _ = cusum(part, *state, k, h)
        state, total = (p, n), total + a
    assert total == alarms and state[0] == pytest.approx(pos)


@pytest.mark.parametrize("reference", [1_000, 5_000])
def test_false_alarms_are_no_more_than_configured_over_seeds(reference: int) -> None:
    """The shipped detector, built as the monitor builds it (``detectors``: a finite reference,
    ranks, ties, CUSUM), on in-distribution data, 20 seeds x 100,000 samples of a skewed, tied
    signal at ERT 5,000: the alarm count stays within the Poisson tolerance of what the ERT
    allows (400 expected). A threshold that ignores the reference's own sampling error raised
    about 512 at a 1,000-value reference (bench/monitoring.py: +28%). Long ERTs: the bench."""
    ert, seeds, n = 5_000, 20, 100_000
    alarms = 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        x = np.round(rng.beta(5, 1, size=n + reference), 3)  # rounded: many ties, as float32 scores have
        d = detectors({"confidence": x[:reference].tolist()}, ert)["confidence"]
        for chunk in np.array_split(x[reference:], 50):
            d.update(chunk, rng)
        alarms += d.alarms
    allowed = poisson.ppf(0.999, seeds * n / ert)
    print(f"reference {reference}: {alarms} false alarms, {seeds * n / ert:.0f} expected")
    assert alarms <= allowed, f"{alarms} false alarms in {seeds * n} samples; configured ERT allows {allowed:.0f}"
    assert alarms > 0.5 * seeds * n / ert  # the calibration is not simply conservative to uselessness
    assert alarms > 0.5 * seeds * n / ert  # the calibration is not simply conservative to uselessness


def test_a_shift_is_detected_quickly_and_every_class_counts() -> None:
    rng = np.random.default_rng(7)
    classes = rng.choice(3, size=2_000, p=[0.5, 0.3, 0.2])
    ds = detectors({"confidence": rng.beta(5, 1, size=2_000).tolist(),
                    **{f"class:{c}": (classes == c).astype(float).tolist() for c in range(3)}}, ert=1e6)
    shifted = rng.beta(3, 1, size=5_000)
    first = next(i for i in range(0, 5_000, 50) if ds["confidence"].update(shifted[i:i + 50], rng))
    assert first < 1_000
    mix = (rng.choice(3, size=5_000, p=[0.3, 0.5, 0.2]) == 1).astype(float)
    assert any(ds["class:1"].update(mix[i:i + 100], rng) for i in range(0, 5_000, 100))
    assert ds["class:0"].h == ds["confidence"].h  # one calibration for the whole set


def test_detector_state_round_trips_through_json() -> None:
    rng = np.random.default_rng(3)
    d = Detector("margin", threshold(1e4), rng.random(500).tolist())
    d.update(rng.random(300), rng)
    again = Detector.from_state(json.loads(json.dumps(d.state())))
    r1, r2 = np.random.default_rng(9), np.random.default_rng(9)
    more = rng.random(3_000) * 0.8
    assert d.update(more, r1) == again.update(more, r2)
    assert (d.pos, d.neg, d.seen, d.alarms) == (again.pos, again.neg, again.seen, again.alarms)


def test_estimate_band_covers_the_realized_accuracy() -> None:
    """On calibrated probabilities, the realized accuracy of a 2,000-sample window falls in the
    95% band in about 95% of 400 windows (binomial tolerance), and the point estimate is close."""
    rng = np.random.default_rng(11)
    inside, errors = 0, []
    for _ in range(400):
        probs, labels = _calibrated(rng, 2_000)
        est = estimate(probs)
        realized = float(np.mean(probs.argmax(axis=1) == labels))
        inside += est.lower <= realized <= est.upper
        errors.append(abs(est.accuracy - realized))
    lo = beta_dist.ppf(0.001, inside, 400 - inside + 1)
    hi = beta_dist.ppf(0.999, inside + 1, 400 - inside)
    assert lo <= 0.95 <= hi, f"band covered {inside}/400"
    assert np.mean(errors) < 0.02


def test_macro_f1_estimate_tracks_the_realized_one() -> None:
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(5)
    probs, labels = _calibrated(rng, 20_000, classes=5)
    est = estimate(probs)
    assert est.macro_f1 == pytest.approx(f1_score(labels, probs.argmax(axis=1), average="macro"), abs=0.02)


def test_version_monitor_windows_references_and_survives_a_checkpoint(tmp_path: Path) -> None:
    config = MonitorConfig(window=50, ert=1e5, reference=200)
    rng = np.random.default_rng(2)

    def batch(n: int, shift: float = 0.0) -> Observations:
        obs = Observations()
        for c, lab in zip(np.clip(rng.beta(5, 1, size=n) - shift, 0.01, 1), rng.choice(["a", "b"], size=n)):
            obs.add(float(c), float(c) / 2, None, str(lab), True)
        return obs

    state = MonitorState(config)
    vm = state.version("v1")
    assert vm.observe(batch(150), rng) == [] and not vm.calibrated
    vm.observe(batch(100), rng)
    assert vm.calibrated and set(vm.detectors) == {"confidence", "margin", "class:a", "class:b"}  # outlier: all null
    assert vm.estimate().samples == 50
    state.covered[("t", 0)] = 250
    checkpoint.save(tmp_path, state)
    again = checkpoint.load(tmp_path, config)
    r1, r2 = np.random.default_rng(5), np.random.default_rng(5)
    shifted = batch(400, shift=0.3)
    assert vm.observe(shifted, r1) == again.version("v1").observe(shifted, r2) != []
    assert again.covered == {("t", 0): 250}
    assert again.version("v1").estimate() == vm.estimate()
    assert checkpoint.load(tmp_path / "none", config).versions == {}
    (tmp_path / checkpoint.FILE).write_text("{}")
    with pytest.raises(ConfigError, match="not a monitor checkpoint|format"):
        checkpoint.load(tmp_path, config)


def test_empty_estimate() -> None:
    assert estimate(np.zeros((0, 2))).samples == 0


def test_records_naming_unknown_versions_do_not_push_out_the_served_one() -> None:
    """The contract allows any model_version: a stream of records naming versions nobody serves
    (interleaved with the served one's) must not drop the served version's state."""
    state = MonitorState(MonitorConfig(window=50, reference=100))
    rng = np.random.default_rng(0)
    for i in range(50):
        served = state.version("v3")
        obs = Observations()
        for _ in range(10):
            obs.add(float(rng.uniform(0.5, 1)), 0.3, None, "1", True)
        served.observe(obs, rng)
        for j in range(checkpoint.KEEP_VERSIONS - 1):
            state.version(f"junk-{i}-{j}")
    assert state.versions["v3"].seen == 500
    assert len(state.versions) == checkpoint.KEEP_VERSIONS


def _overconfident(rng: np.random.Generator, n: int, by: float) -> tuple[np.ndarray, np.ndarray]:
    """Confidences that overstate the chance of being right by ``by``, and whether each was right."""
    conf = rng.uniform(0.7, 1.0, size=n)
    return conf, rng.random(n) < np.clip(conf - by, 0, 1)


def test_audit_labels_correct_a_biased_estimate_and_its_band_keeps_its_coverage() -> None:
    """Probabilities 0.06 too confident: the label-free band misses the realized accuracy of
    most windows; corrected by the version's last 200 audit labels (whose own standard error
    is about 0.03), the error is less than half and the band (widened by the correction's standard
    error) covers at least its level over 300 windows. Below 100 labels nothing is corrected."""
    rng = np.random.default_rng(3)
    config = MonitorConfig(window=2_000, reference=100)
    inside = {"raw": 0, "fixed": 0}
    errors: dict[str, list[float]] = {"raw": [], "fixed": []}
    for _ in range(300):
        vm = MonitorState(config).version("v1")
        obs = Observations()
        conf, right = _overconfident(rng, 2_000, 0.06)
        for c in conf:
            obs.add(float(c), 0.5, None, "a", True)
        vm.observe(obs, rng)
        raw = vm.estimate()
        audit_conf, audit_right = _overconfident(rng, 200, 0.06)
        for c, ok in zip(audit_conf[:99], audit_right[:99]):
            vm.add_label(float(c), bool(ok))
        assert vm.correction() is None and vm.estimate() == raw
        for c, ok in zip(audit_conf[99:], audit_right[99:]):
            vm.add_label(float(c), bool(ok))
        fixed = vm.estimate()
        realized = float(right.mean())
        for name, est in (("raw", raw), ("fixed", fixed)):
            inside[name] += est.lower <= realized <= est.upper
            errors[name].append(abs(est.accuracy - realized))
    assert inside["raw"] < 30  # the bias is ten sampling errors wide
    assert inside["fixed"] >= beta_dist.ppf(0.001, 0.95 * 300, 0.05 * 300 + 1) * 300, inside
    assert np.mean(errors["fixed"]) < 0.5 * np.mean(errors["raw"])


def test_only_accepted_samples_are_corrected_and_calibrated_ones_barely_move() -> None:
    from triage.monitoring.estimate import accuracy_estimate, correction

    rng = np.random.default_rng(4)
    conf = rng.uniform(0.6, 1.0, size=2_000)
    fix = correction(np.full(200, -0.1) + rng.normal(0, 0.01, 200))
    assert fix is not None and fix.weight > 0.9
    half = accuracy_estimate(conf, corrected=np.arange(2_000) % 2 == 0, fix=fix)
    assert half.accuracy == pytest.approx(conf.mean() + 0.5 * fix.shift)
    right = rng.random(5_000) < (c := rng.uniform(0.6, 1.0, size=5_000))
    calibrated = correction((right - c)[:200])
    assert calibrated is not None and abs(calibrated.shift) < 2 * calibrated.se  # noise is shrunk, not applied


def test_labels_join_their_audit_copies_in_either_order_and_survive_a_checkpoint(tmp_path: Path) -> None:
    config = MonitorConfig(window=50, reference=100, min_labels=2)
    state = MonitorState(config)
    vm = state.version("v1")
    state.add_audit("s1", "v1", 0.9, "a")
    state.add_label("s2", "b")  # before its audit copy
    checkpoint.save(tmp_path, state)
    again = checkpoint.load(tmp_path, config)
    again.add_label("s1", "b")  # wrong: 0 - 0.9
    again.add_audit("s2", "v1", 0.8, "b")  # right: 1 - 0.8
    again.add_audit("s1", "v1", 0.9, "a")  # redelivered: counts nothing
    again.add_audit("s3", "gone", 0.9, "a")
    again.add_label("s3", "a")  # a version no longer kept: dropped, not brought back
    got = again.versions["v1"].residuals.filled()
    assert sorted(got.round(6).tolist()) == [-0.9, 0.2] and "gone" not in again.versions
    assert again.versions["v1"].correction() is not None and vm.correction() is None
    checkpoint.save(tmp_path, again)
    assert checkpoint.load(tmp_path, config).versions["v1"].correction() == again.versions["v1"].correction()


def test_a_checkpoint_from_before_the_correction_loads_uncorrected(tmp_path: Path) -> None:
    config = MonitorConfig(window=50, reference=100, min_labels=2)
    state = MonitorState(config)
    vm = state.version("v1")
    obs = Observations()
    for c in np.linspace(0.7, 0.95, 30):
        obs.add(float(c), 0.5, None, "a", True)
    vm.observe(obs, np.random.default_rng(0))
    doc = json.loads(state.to_json())
    for v in doc["versions"]:
        del v["window_accepted"], v["residuals"], v["known"], v["ids"], v["predicted"]
    for key in ("audits", "answers"):
        del doc[key]
    (tmp_path / checkpoint.FILE).write_text(json.dumps(doc))
    old = checkpoint.load(tmp_path, config).versions["v1"]
    for _ in range(5):
        old.add_label(0.9, False)
    assert old.correction() is not None and old.estimate().accuracy == pytest.approx(vm.estimate().accuracy)
    assert old.labelled() == 0 and not old.add_review_label("", "a")  # no ids: nothing to join


def test_labelled_samples_count_their_realized_correctness_and_the_band_holds() -> None:
    """Calibrated probabilities; the 5% most uncertain samples of each window are labelled (the
    review queue's order, not at random). Their realized correctness replaces their expected
    one: the error falls with the band's width (only the sampling error is left to remove here:
    a few %), and the band, summing p(1-p) over the unlabelled samples only, still covers at
    least its level over 300 windows."""
    from triage.monitoring.estimate import accuracy_estimate

    rng = np.random.default_rng(6)
    inside, errors, widths = {"raw": 0, "labelled": 0}, {"raw": [], "labelled": []}, {"raw": [], "labelled": []}
    for _ in range(300):
        conf = rng.beta(8, 1, size=2_000)
        right = (rng.random(2_000) < conf).astype(np.float64)
        known = np.where(conf <= np.quantile(conf, 0.05), right, np.nan)
        realized = float(right.mean())
        for name, est in (("raw", accuracy_estimate(conf)), ("labelled", accuracy_estimate(conf, known=known))):
            inside[name] += est.lower <= realized <= est.upper
            errors[name].append(abs(est.accuracy - realized))
            widths[name].append(est.upper - est.lower)
    assert inside["labelled"] >= beta_dist.ppf(0.001, 0.95 * 300, 0.05 * 300 + 1) * 300, inside
    assert np.mean(errors["labelled"]) < np.mean(errors["raw"]) and np.mean(widths["labelled"]) < 0.97 * np.mean(
        widths["raw"]), ({k: np.mean(v) for k, v in errors.items()}, {k: np.mean(v) for k, v in widths.items()})
    every = accuracy_estimate(np.full(4, 0.7), known=np.array([1.0, 0.0, 1.0, 1.0]))
    assert every.accuracy == every.lower == every.upper == 0.75  # all labelled: nothing left to estimate


def test_review_labels_join_samples_in_the_window_in_either_order_and_survive_a_checkpoint(tmp_path: Path) -> None:
    config = MonitorConfig(window=4, reference=100)
    state = MonitorState(config)
    rng = np.random.default_rng(0)

    def fold(*samples: tuple[str, float, str, bool]) -> None:
        obs = Observations()
        for sid, c, predicted, accepted in samples:
            obs.add(c, 0.5, None, predicted, accepted, sid)
        state.version("v1").observe(obs, rng)
        state.join_waiting("v1", obs.sample_id)

    fold(("s1", 0.6, "a", False), ("s2", 0.5, "b", False))
    assert state.add_label("s3", "a") is None  # its review is still in the reorder: kept
    fold(("s3", 0.9, "a", True), ("s4", 0.8, "a", True))
    vm = state.versions["v1"]
    assert vm.labelled() == 1
    assert state.add_label("s1", "b") == "v1"  # wrong
    assert state.add_label("s1", "a") == "v1" and vm.labelled() == 2  # the annotator's correction replaces it
    est = vm.estimate()
    assert est.accuracy == pytest.approx((1 + 0.5 + 1 + 0.8) / 4)
    assert est.accuracy - est.lower == pytest.approx(1.959964 * np.sqrt(0.25 + 0.16) / 4, rel=1e-5)  # upper: clipped at 1
    checkpoint.save(tmp_path, state)
    again = checkpoint.load(tmp_path, config)
    assert again.versions["v1"].estimate() == est
    assert again.add_label("s2", "b") == "v1" and again.versions["v1"].labelled() == 3
    state = again
    fold(("s5", 0.7, "a", True), ("s6", 0.7, "a", True), ("s7", 0.7, "a", True))  # s1 to s3 leave the window
    assert state.versions["v1"].labelled() == 0 and state.add_label("s2", "b") is None
    assert state.versions["v1"].estimate().accuracy == pytest.approx((0.8 + 3 * 0.7) / 4)


def test_a_label_read_before_its_audited_sample_corrects_and_settles_it_in_either_fold_order() -> None:
    """A label can be read before its sample's outputs leave the reorder (a restart into a backlog):
    both the audit copy (the correction) and the prediction (settled in the window) still get it."""
    config = MonitorConfig(window=10, reference=100)
    for copy_first in (True, False):
        state = MonitorState(config)
        state.version("v1")
        assert state.add_label("s1", "b") is None
        obs = Observations()
        obs.add(0.9, 0.5, None, "a", True, "s1")
        if copy_first:  # the monitor's fold: audit copies first, then the observations
            assert state.add_audit("s1", "v1", 0.9, "a") == "v1"
        state.version("v1").observe(obs, np.random.default_rng(0))
        state.join_waiting("v1", obs.sample_id)
        if not copy_first:
            assert state.add_audit("s1", "v1", 0.9, "a") == "v1"
        vm = state.versions["v1"]
        assert vm.labelled() == 1 and vm.residuals.filled().round(6).tolist() == [-0.9] and vm.estimate().accuracy == 0
