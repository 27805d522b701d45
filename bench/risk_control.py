"""Risk-control benchmark: how much of the stream ``--policy risk`` accepts at the same guarantee.

Task (fixed): ``make_classification(n_features=20, n_informative=8, n_redundant=4, n_classes=4,
class_sep=1.5, flip_y=0.01, random_state=7)``, one pool of 120,000 rows. Per seed, 2,500 rows
are the labelled training data and 40,000 others the test stream. (class_sep 1.0 caps the
best family near 80% accuracy; at 1.5 logreg gets ~75% and mlp ~91%, the asked 85-93% range.)
Target: alpha = 0.05, delta = 0.1, margin acquisition, as `triage serve --policy risk`.

Configurations (same data, same base/holdout split as `triage train`):

- ``before``: the old defaults: logreg, routing on the 500-row holdout (250 fit the
  calibrator, 250 certify), the grid starting at the one-error set size.
- ``lever: grid start``, ``lever: auto family``, ``lever: cross-fit``: one change each.
- ``mlp/gb, holdout only``: the other families with the old certification.
- ``new default``: auto family + cross-fit (5 folds) + grid start at alpha/2.
- ``MAPIE ...``: mapie.risk_control.BinaryClassificationController on the new default's model
  and certification rows (after the same calibrator): positive = "prediction correct",
  score = 1 - uncertainty, risk precision >= 1 - alpha at confidence 1 - delta/m (m = the
  families auto chose among, as triage uses), its default grid of 100 thresholds.
- ``end to end``: `bundles.train_initial` into a temp registry, loaded back with
  `serving_model_from_registry` + `prepare_model` + `make_policy`, the stream scored with
  `score_batch` and routed by the policy stack's `decide` (outliers included).

    .venv/bin/python -m bench.risk_control          # writes bench/results/risk_control.{json,md}
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
from sklearn.datasets import make_classification
from sklearn.model_selection import train_test_split

from triage.scoring.acquisition import uncertainty
from triage.scoring.calibration import calibrator_from_dict
from triage.policies import risk as risk_module
from triage.policies.fit import fit_routing
from triage.policies.risk import accept_mask
from triage.settings import PolicySettings, RetrainSettings
from triage.lifecycle.training import AUTO_CANDIDATES, aligned_probs, cross_fit, train_model

OUT = Path(__file__).resolve().parent / "results"
TASK: dict[str, Any] = dict(n_features=20, n_informative=8, n_redundant=4, n_classes=4, class_sep=1.5,
                            flip_y=0.01, random_state=7)
POOL, TRAIN, TEST = 120_000, 2_500, 40_000
ALPHA, DELTA, FOLDS = 0.05, 0.1, 5
OLD_START = float("inf")  # START_RATE = inf: the grid starts at the one-error size (the old rule)


@contextlib.contextmanager
def start_rate(rate: float) -> Iterator[None]:
    old = risk_module.START_RATE
    risk_module.START_RATE = rate
    try:
        yield
    finally:
        risk_module.START_RATE = old


def policy(seed: int) -> PolicySettings:
    return PolicySettings(policy="risk", risk_alpha=ALPHA, risk_delta=DELTA, seed=seed)


def realized(routing: dict[str, Any], raw_test: np.ndarray, y_test: np.ndarray, acquisition: str) -> dict[str, float]:
    """Coverage and error among accepted on the test stream, through the routing's calibrator."""
    cal = calibrator_from_dict(routing["calibration"])(raw_test)
    predicted = cal.argmax(axis=1)
    accepted = accept_mask(routing["risk"], uncertainty(cal, acquisition), predicted)  # type: ignore[arg-type]
    wrong = predicted != y_test
    return {"coverage": float(accepted.mean()),
            "error": float(wrong[accepted].mean()) if accepted.any() else 0.0,
            "certified_coverage": float(routing["risk"]["coverage"]), "accuracy": float(1 - wrong.mean())}


def mapie_point(routing: dict[str, Any], raw: np.ndarray, y: np.ndarray, raw_test: np.ndarray, y_test: np.ndarray,
                seed: int, multiplicity: int, fwer: str) -> dict[str, float]:
    """MAPIE's controller on the rows fit_routing certified on (same permutation, same calibrator)."""
    from mapie.risk_control import BinaryClassificationController

    n = len(raw)
    order = np.random.default_rng(seed).permutation(n)
    cert = order[int(round(n * policy(seed).calibration_fraction)):]
    calibrate = calibrator_from_dict(routing["calibration"])
    cal = calibrate(raw[cert])
    score = 1.0 - uncertainty(cal, "margin")
    correct = (cal.argmax(axis=1) == y[cert]).astype(int)
    controller = BinaryClassificationController(
        predict_function=lambda s: np.column_stack([1.0 - s[:, 0], s[:, 0]]),
        risk="precision", target_level=1 - ALPHA, confidence_level=1 - DELTA / multiplicity, fwer_method=fwer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        controller.calibrate(score[:, None], correct)
    cal_test = calibrate(raw_test)
    wrong = cal_test.argmax(axis=1) != y_test
    if controller.best_predict_param is None:
        return {"coverage": 0.0, "error": 0.0}
    accepted = controller.predict((1.0 - uncertainty(cal_test, "margin"))[:, None]).astype(bool)
    return {"coverage": float(accepted.mean()), "error": float(wrong[accepted].mean()) if accepted.any() else 0.0}


def end_to_end(X: np.ndarray, y: np.ndarray, X_test: np.ndarray, y_test: np.ndarray, seed: int,
               retrain: RetrainSettings) -> dict[str, Any]:
    """`triage train` with ``retrain`` settings, served and routed by the service's own code."""
    from triage.lifecycle.bundles import train_initial
    from triage.policies.factory import make_policy
    from triage.policies.fit import prepare_model
    from triage.lifecycle.registry import Registry
    from triage.scoring.scores import score_batch
    from triage.lifecycle.loading import serving_model_from_registry
    from triage.settings import ServingSettings

    pol = policy(seed)
    with tempfile.TemporaryDirectory() as tmp:
        reg = Registry(Path(tmp) / "registry")
        t0 = time.perf_counter()
        manifest = train_initial(X, y, reg, retrain=retrain, policy=pol, outlier_quantile=0.995, progress=lambda m: None)
        seconds = time.perf_counter() - t0
        model = prepare_model(pol, serving_model_from_registry(reg, reg.current(), ServingSettings()))
        stack = make_policy(pol, model)
        accepted, wrong = [], []
        for i in range(0, len(X_test), 1000):
            scores = score_batch(model, X_test[i:i + 1000], pol.acquisition)
            accepted.append(stack.decide(scores).accepted)
            wrong.append(np.asarray(model.classes)[scores.predicted] != y_test[i:i + 1000])
    acc, bad = np.concatenate(accepted), np.concatenate(wrong)
    return {"coverage": float(acc.mean()), "error": float(bad[acc].mean()) if acc.any() else 0.0,
            "accuracy": float(1 - bad.mean()), "family": manifest["family"], "train_seconds": seconds,
            "certified_coverage": float(manifest["routing"]["risk"]["coverage"])}


def run_seed(seed: int, X_pool: np.ndarray, y_pool: np.ndarray, e2e: bool) -> dict[str, dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(X_pool), TRAIN + TEST, replace=False)
    X, y = X_pool[rows[:TRAIN]], y_pool[rows[:TRAIN]]
    X_test, y_test_s = X_pool[rows[TRAIN:]], y_pool[rows[TRAIN:]]
    # The same split train_initial makes (holdout_fraction 0.2, stratified, random_state = policy seed).
    X_base, X_hold, y_base, y_hold = train_test_split(X, y, test_size=0.2, random_state=seed, stratify=y)
    out: dict[str, dict[str, Any]] = {}
    models = {fam: train_model(X_base, y_base, family=fam, seed=seed) for fam in AUTO_CANDIDATES}
    auto = train_model(X_base, y_base, family="auto", seed=seed)
    chosen = auto.family
    m = len(auto.selection["candidates"]) if auto.selection else 1
    classes = models["logreg"].classes
    index = {c: i for i, c in enumerate(classes)}
    y_hold_i = np.array([index[c] for c in y_hold])
    y_base_i = np.array([index[c] for c in y_base])
    y_test = np.array([index[c] for c in y_test_s])
    raw_hold = {f: aligned_probs(t.estimator, X_hold, classes) for f, t in models.items()}
    raw_test = {f: aligned_probs(t.estimator, X_test, classes) for f, t in models.items()}
    oof = {f: cross_fit(X_base, y_base, family=f, classes=classes, folds=FOLDS, seed=seed) for f in ("logreg", chosen)}
    pol = policy(seed)

    def holdout_only(fam: str, rate: float) -> tuple[dict[str, Any], dict[str, float]]:
        with start_rate(rate):
            routing = fit_routing(raw_hold[fam], y_hold_i, pol)
        return routing, realized(routing, raw_test[fam], y_test, pol.acquisition)

    def crossfitted(fam: str, rate: float, mult: int) -> tuple[dict[str, Any], np.ndarray, np.ndarray, dict[str, float]]:
        raw = np.vstack([raw_hold[fam], oof[fam]])  # the order prepare_bundle stacks them in
        labels = np.concatenate([y_hold_i, y_base_i])
        with start_rate(rate):
            routing = fit_routing(raw, labels, pol, multiplicity=mult)
        return routing, raw, labels, realized(routing, raw_test[fam], y_test, pol.acquisition)

    out["before (logreg, holdout only)"] = holdout_only("logreg", OLD_START)[1]
    out["lever: grid start at alpha/2"] = holdout_only("logreg", risk_module.START_RATE)[1]
    out["lever: auto family"] = {**holdout_only(chosen, OLD_START)[1], "family": chosen}
    out["lever: cross-fit (logreg)"] = crossfitted("logreg", OLD_START, 1)[3]
    out["mlp, holdout only"] = holdout_only("mlp", OLD_START)[1]
    out["gb, holdout only"] = holdout_only("gb", OLD_START)[1]
    out["auto + cross-fit, old grid start"] = crossfitted(chosen, OLD_START, m)[3]
    routing, raw, labels, point = crossfitted(chosen, risk_module.START_RATE, m)
    out["new default (auto + cross-fit + grid start)"] = {**point, "family": chosen}
    for fwer in ("bonferroni_holm", "fixed_sequence"):
        out[f"MAPIE BinaryClassificationController ({fwer})"] = mapie_point(
            routing, raw, labels, raw_test[chosen], y_test, seed, m, fwer)
    if e2e:
        out["end to end: triage train defaults"] = end_to_end(X, y, X_test, y_test_s, seed, RetrainSettings())
        with start_rate(OLD_START):
            out["end to end: old defaults"] = end_to_end(
                X, y, X_test, y_test_s, seed, RetrainSettings(model_family="logreg", cross_fit_folds=0))
    return out


def summarize(runs: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for name in runs[0]:
        pts = [r[name] for r in runs]
        cov = np.array([p["coverage"] for p in pts])
        err = np.array([p["error"] for p in pts])
        row: dict[str, Any] = {
            "coverage_mean": float(cov.mean()), "coverage_min": float(cov.min()), "coverage_max": float(cov.max()),
            "error_mean": float(err.mean()), "error_min": float(err.min()), "error_max": float(err.max()),
            "share_error_above_alpha": float((err > ALPHA).mean()), "seeds": len(pts),
        }
        if "accuracy" in pts[0]:
            row["accuracy_mean"] = float(np.mean([p["accuracy"] for p in pts]))
        if "family" in pts[0]:
            fams = [p["family"] for p in pts]
            row["families"] = {f: fams.count(f) for f in sorted(set(fams))}
        if "train_seconds" in pts[0]:
            row["train_seconds_mean"] = float(np.mean([p["train_seconds"] for p in pts]))
        summary[name] = row
    return summary


def markdown(summary: dict[str, dict[str, Any]], seeds: int) -> str:
    lines = [
        f"# Risk control: alpha {ALPHA}, delta {DELTA}, {TRAIN} training rows, {seeds} seeds",
        "",
        "Task: `make_classification(" + ", ".join(f"{k}={v}" for k, v in TASK.items()) + ")`, "
        f"{TEST:,} test rows per seed. Coverage = share of the stream auto-accepted; error = error "
        "among the accepted. `> alpha` = share of seeds whose realized error exceeds alpha "
        f"(the certificate allows {DELTA:.0%}).",
        "",
        "| configuration | coverage mean [min, max] | error among accepted mean [min, max] | > alpha | accuracy | family |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in summary.items():
        fams = ", ".join(f"{f} x{c}" for f, c in r.get("families", {}).items())
        acc = f"{r['accuracy_mean']:.3f}" if "accuracy_mean" in r else ""
        lines.append(
            f"| {name} | {r['coverage_mean']:.3f} [{r['coverage_min']:.3f}, {r['coverage_max']:.3f}] | "
            f"{r['error_mean']:.4f} [{r['error_min']:.4f}, {r['error_max']:.4f}] | "
            f"{r['share_error_above_alpha']:.2f} | {acc} | {fams} |")
    secs = summary.get("end to end: triage train defaults", {}).get("train_seconds_mean")
    if secs is not None:
        lines += ["", f"`triage train` with the defaults took {secs:.1f} s on average (2,500 rows)."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--no-end-to-end", action="store_true", help="skip the train_initial + serving runs")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    X_pool, y_pool = make_classification(n_samples=POOL, **TASK)
    y_pool = y_pool.astype(str)
    runs = []
    for seed in range(args.seeds):
        t0 = time.perf_counter()
        runs.append(run_seed(seed, X_pool, y_pool, not args.no_end_to_end))
        new = runs[-1]["new default (auto + cross-fit + grid start)"]
        print(f"seed {seed}: new default coverage {new['coverage']:.3f} error {new['error']:.4f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    summary = summarize(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "risk_control.json").write_text(json.dumps(
        {"task": TASK, "alpha": ALPHA, "delta": DELTA, "train_rows": TRAIN, "test_rows": TEST, "folds": FOLDS,
         "summary": summary, "runs": runs}, indent=2))
    text = markdown(summary, args.seeds)
    (args.out / "risk_control.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
