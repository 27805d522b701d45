"""Risk-control benchmark: how much of the stream ``--policy risk`` accepts at the same guarantee.

Task (fixed): ``make_classification(n_features=20, n_informative=8, n_redundant=4, n_classes=4,
class_sep=1.5, flip_y=0.01, random_state=7)``, one pool of 120,000 rows. Per seed, 2,500 rows
are the labelled training data and 40,000 others the test stream. (logreg gets ~76% here, mlp
~92%.) Target: alpha = 0.05, delta = 0.1, margin acquisition, as `triage serve --policy risk`.

Configurations (same data per seed):

- ``strict (default), end to end``: `bundles.train_initial` at the defaults into a temp
  registry, loaded back with `serving_model_from_registry` + `prepare_model` + `make_policy`,
  the stream scored with `score_batch` and routed by the policy stack's `decide` (outliers
  included). The 500-row holdout: half fits the calibrator, half (250 rows) certifies.
- ``cross-fit (opt-in), end to end``: the same with ``--certification cross-fit`` (the base
  rows scored out of fold also certify; an approximation).
- ``MAPIE ...``: mapie.risk_control.BinaryClassificationController on the strict model's
  certification rows, after the same calibrator: positive = "prediction correct", score =
  1 - uncertainty, risk precision >= 1 - alpha at confidence 1 - delta, its default grid of 100
  thresholds.
- ``strict lever: ...``: the strict model with one change to how its holdout is used
  (Mondrian per-class thresholds; a smaller calibration share, so more rows certify), or a
  larger holdout (30%: more certifying rows, fewer training rows; retrained). Levers are routed
  by the certified threshold alone (outliers not removed).

    .venv/bin/python -m bench.risk_control          # writes bench/results/risk_control.{json,md}
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
from sklearn.datasets import make_classification

from triage.lifecycle.bundles import train_initial
from triage.lifecycle.loading import serving_model_from_registry
from triage.lifecycle.registry import Registry
from triage.policies.factory import make_policy
from triage.policies.fit import fit_routing, label_indices, prepare_model, routing_split
from triage.policies.risk import accept_mask
from triage.scoring.acquisition import uncertainty
from triage.scoring.calibration import calibrator_from_dict
from triage.scoring.scores import score_batch
from triage.scoring.servable import ServingModel
from triage.settings import PolicySettings, RetrainSettings, ServingSettings

OUT = Path(__file__).resolve().parent / "results"
TASK: dict[str, Any] = dict(n_features=20, n_informative=8, n_redundant=4, n_classes=4, class_sep=1.5,
                            flip_y=0.01, random_state=7)
POOL, TRAIN, TEST = 120_000, 2_500, 40_000
ALPHA, DELTA = 0.05, 0.1
STRICT, CROSS_FIT = "strict (default), end to end", "cross-fit (opt-in), end to end"


def policy(seed: int, **changes: Any) -> PolicySettings:
    return PolicySettings(policy="risk", risk_alpha=ALPHA, risk_delta=DELTA, seed=seed, **changes)


def realized(routing: dict[str, Any], raw_test: np.ndarray, y_test: np.ndarray, acquisition: str) -> dict[str, float]:
    """Coverage and error among accepted on the test stream, through the routing's calibrator."""
    cal = calibrator_from_dict(routing["calibration"])(raw_test)
    predicted = cal.argmax(axis=1)
    accepted = accept_mask(routing["risk"], uncertainty(cal, acquisition), predicted)  # type: ignore[arg-type]
    wrong = predicted != y_test
    return {"coverage": float(accepted.mean()),
            "error": float(wrong[accepted].mean()) if accepted.any() else 0.0,
            "certified_coverage": float(routing["risk"]["coverage"]), "accuracy": float(1 - wrong.mean()),
            "certifying_rows": int(routing["risk"]["n"])}


def mapie_point(routing: dict[str, Any], raw: np.ndarray, y: np.ndarray, raw_test: np.ndarray, y_test: np.ndarray,
                seed: int, fwer: str, pol: Optional[PolicySettings] = None) -> dict[str, float]:
    """MAPIE's controller on the rows fit_routing certified on (same split, same calibrator);
    ``pol``: the policy the routing was fitted with (default: ``policy(seed)``)."""
    from mapie.risk_control import BinaryClassificationController

    cert = routing_split(len(raw), pol or policy(seed))[1]
    calibrate = calibrator_from_dict(routing["calibration"])
    cal = calibrate(raw[cert])
    score = 1.0 - uncertainty(cal, "margin")
    correct = (cal.argmax(axis=1) == y[cert]).astype(int)
    controller = BinaryClassificationController(
        predict_function=lambda s: np.column_stack([1.0 - s[:, 0], s[:, 0]]),
        risk="precision", target_level=1 - ALPHA, confidence_level=1 - DELTA, fwer_method=fwer)
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
               retrain: RetrainSettings, tmp: Path) -> tuple[dict[str, Any], Registry]:
    """`triage train` with ``retrain`` settings, served and routed by the service's own code."""
    pol = policy(seed)
    reg = Registry(tmp / "registry")
    t0 = time.perf_counter()
    manifest = train_initial(X, y, reg, retrain=retrain, policy=pol, outlier_quantile=0.995, progress=lambda m: None)
    seconds = time.perf_counter() - t0
    model = prepare_model(pol, serving_model_from_registry(reg, reg.current() or "", ServingSettings()))
    stack = make_policy(pol, model)
    accepted, wrong = [], []
    for i in range(0, len(X_test), 5000):
        scores = score_batch(model, X_test[i:i + 5000], pol.acquisition)
        accepted.append(stack.decide(scores).accepted)
        wrong.append(np.asarray(model.classes)[scores.predicted] != y_test[i:i + 5000])
    acc, bad = np.concatenate(accepted), np.concatenate(wrong)
    return {"coverage": float(acc.mean()), "error": float(bad[acc].mean()) if acc.any() else 0.0,
            "accuracy": float(1 - bad.mean()), "family": manifest["family"], "train_seconds": seconds,
            "certified_coverage": float(manifest["routing"]["risk"]["coverage"]),
            "certifying_rows": int(manifest["routing"]["risk"]["n"])}, reg


def holdout_and_test(reg: Registry, X_test: np.ndarray, y_test: np.ndarray
                     ) -> tuple[ServingModel, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The current version, and its raw probabilities and class indices on its holdout and the test rows."""
    model = serving_model_from_registry(reg, reg.current() or "", ServingSettings())
    hold = np.load(reg.data_dir / "holdout.npz")
    return (model, model.classifier.predict_proba(hold["X"]), label_indices(hold["y"], model.classes),
            model.classifier.predict_proba(X_test), label_indices(y_test, model.classes))


def run_seed(seed: int, X_pool: np.ndarray, y_pool: np.ndarray) -> dict[str, dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(X_pool), TRAIN + TEST, replace=False)
    X, y = X_pool[rows[:TRAIN]], y_pool[rows[:TRAIN]]
    X_test, y_test_s = X_pool[rows[TRAIN:]], y_pool[rows[TRAIN:]]
    out: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out[STRICT], reg = end_to_end(X, y, X_test, y_test_s, seed, RetrainSettings(), Path(tmp))
        model, raw_hold, y_hold, raw_test, y_test = holdout_and_test(reg, X_test, y_test_s)
        routing = model.manifest["routing"]
        for fwer in ("bonferroni_holm", "fixed_sequence"):
            out[f"MAPIE BinaryClassificationController ({fwer}), strict's rows"] = mapie_point(
                routing, raw_hold, y_hold, raw_test, y_test, seed, fwer)
        levers = {"strict lever: Mondrian (per predicted class)": policy(seed, risk_mondrian=True),
                  "strict lever: calibrator on 20% of the holdout (400 rows certify)":
                      policy(seed, calibration_fraction=0.2)}
        for name, pol in levers.items():
            out[name] = realized(fit_routing(raw_hold, y_hold, pol), raw_test, y_test, pol.acquisition)
    with tempfile.TemporaryDirectory() as tmp:
        out["strict lever: 30% holdout (375 rows certify)"] = end_to_end(
            X, y, X_test, y_test_s, seed, RetrainSettings(holdout_fraction=0.3), Path(tmp))[0]
    with tempfile.TemporaryDirectory() as tmp:
        out[CROSS_FIT] = end_to_end(X, y, X_test, y_test_s, seed, RetrainSettings(certification="cross-fit"),
                                    Path(tmp))[0]
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
    secs = {k: summary[k].get("train_seconds_mean") for k in (STRICT, CROSS_FIT)}
    lines += ["", f"`triage train` took {secs[STRICT]:.1f} s on average strict, {secs[CROSS_FIT]:.1f} s "
              "cross-fit (2,500 rows, same run)."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    X_pool, y_pool = make_classification(n_samples=POOL, **TASK)
    y_pool = y_pool.astype(str)
    runs = []
    for seed in range(args.seeds):
        t0 = time.perf_counter()
        runs.append(run_seed(seed, X_pool, y_pool))
        new = runs[-1][STRICT]
        print(f"seed {seed}: strict coverage {new['coverage']:.3f} error {new['error']:.4f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    summary = summarize(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "risk_control.json").write_text(json.dumps(
        {"task": TASK, "alpha": ALPHA, "delta": DELTA, "train_rows": TRAIN, "test_rows": TEST,
         "summary": summary, "runs": runs}, indent=2))
    text = markdown(summary, args.seeds)
    (args.out / "risk_control.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
