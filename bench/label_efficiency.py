"""Label-efficiency benchmark: how many labels each acquisition function needs.

Digits, several seeds. Every strategy sees the same stream (the pool in a seeded order, in
rounds of ``--round-size``), the same per-round label budget, the same static bootstrap
and the same model family as `triage train` (standardized logistic regression). Each round
the strategy picks which streamed samples get a label; the model is retrained; held-out
accuracy is recorded against the number of labels.

    .venv/bin/python -m bench.label_efficiency            # writes bench/results/label_efficiency.*
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from triage.acquisition import uncertainty
from triage.selection import select
from triage.training import FAMILIES

STRATEGIES = ("least-confidence", "margin", "entropy", "random")
OUT = Path(__file__).resolve().parent / "results"


def run_seed(seed: int, *, initial: int, round_size: int, per_round: int, rounds: int, family: str) -> dict[str, list[tuple[int, float]]]:
    X, y = load_digits(return_X_y=True)
    X_pool, X_eval, y_pool, y_eval = train_test_split(X, y, test_size=0.25, random_state=seed, stratify=y)
    rng = np.random.default_rng(seed)
    init = select(X_pool, initial, "stratified-kmeans", seed=seed)
    rest = rng.permutation(np.setdiff1d(np.arange(len(X_pool)), init))
    curves: dict[str, list[tuple[int, float]]] = {}
    for strategy in STRATEGIES:
        labelled = list(init)
        pick_rng = np.random.default_rng(seed + 1000)
        model = FAMILIES[family](seed).fit(X_pool[labelled], y_pool[labelled])
        curve = [(len(labelled), float(model.score(X_eval, y_eval)))]
        for r in range(rounds):
            chunk = rest[r * round_size:(r + 1) * round_size]
            if not len(chunk):
                break
            if strategy == "random":
                chosen = pick_rng.choice(chunk, size=min(per_round, len(chunk)), replace=False)
            else:
                u = uncertainty(model.predict_proba(X_pool[chunk]), strategy)  # type: ignore[arg-type]
                chosen = chunk[np.argsort(-u)[:per_round]]
            labelled.extend(chosen.tolist())
            model = FAMILIES[family](seed).fit(X_pool[labelled], y_pool[labelled])
            curve.append((len(labelled), float(model.score(X_eval, y_eval))))
        curves[strategy] = curve
    full = FAMILIES[family](seed).fit(X_pool, y_pool).score(X_eval, y_eval)
    curves["_full"] = [(len(X_pool), float(full))]
    return curves


def labels_to_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((n for n, acc in curve if acc >= target), None)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--initial", type=int, default=20)
    p.add_argument("--round-size", type=int, default=100, help="streamed samples per round")
    p.add_argument("--per-round", type=int, default=25, help="labels per round (the budget)")
    p.add_argument("--rounds", type=int, default=13)
    p.add_argument("--family", default="logreg", choices=sorted(FAMILIES))
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    runs = [run_seed(s, initial=args.initial, round_size=args.round_size, per_round=args.per_round,
                     rounds=args.rounds, family=args.family) for s in range(args.seeds)]
    full = float(np.mean([r["_full"][0][1] for r in runs]))
    table: dict[str, dict] = {}
    for strategy in STRATEGIES:
        labels = [n for n, _ in runs[0][strategy]]
        acc = np.array([[a for _, a in r[strategy]] for r in runs])
        mean_curve = list(zip(labels, acc.mean(axis=0).tolist()))
        table[strategy] = {
            "labels": labels, "accuracy_mean": acc.mean(axis=0).tolist(), "accuracy_std": acc.std(axis=0).tolist(),
            "labels_to_95pct_of_full": labels_to_reach(mean_curve, 0.95 * full),
            "labels_to_98pct_of_full": labels_to_reach(mean_curve, 0.98 * full),
        }
    result = {"dataset": "digits", "seeds": args.seeds, "family": args.family, "full_label_accuracy": full,
              "initial": args.initial, "round_size": args.round_size, "per_round": args.per_round, "strategies": table}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "label_efficiency.json").write_text(json.dumps(result, indent=2))
    md = render_markdown(result)
    (args.out / "label_efficiency.md").write_text(md)
    plot(result, args.out / "label_efficiency.png")
    print(md)
    return result


def render_markdown(result: dict) -> str:
    strategies = result["strategies"]
    labels = strategies["random"]["labels"]
    marks = [i for i in range(len(labels)) if i % 2 == 0 or i == len(labels) - 1]
    head = "| strategy | " + " | ".join(f"{labels[i]} labels" for i in marks) + " | to 95% of full | to 98% of full |"
    sep = "|---" * (len(marks) + 3) + "|"
    rows = [head, sep]
    for name, s in strategies.items():
        cells = " | ".join(f"{s['accuracy_mean'][i]:.3f}±{s['accuracy_std'][i]:.3f}" for i in marks)
        rows.append(f"| {name} | {cells} | {s['labels_to_95pct_of_full'] or 'not reached'} | "
                    f"{s['labels_to_98pct_of_full'] or 'not reached'} |")
    rows.append(f"\nFull-label accuracy (same family, every pool label): "
                f"{result['full_label_accuracy']:.3f}; {result['seeds']} seeds; {result['family']}; "
                f"{result['initial']} initial labels (stratified k-means, unlabelled), then {result['per_round']} "
                f"labels per {result['round_size']} streamed samples.")
    return "\n".join(rows) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for name, s in result["strategies"].items():
        mean, std = np.array(s["accuracy_mean"]), np.array(s["accuracy_std"])
        ax.plot(s["labels"], mean, marker="o", ms=3, label=name)
        ax.fill_between(s["labels"], mean - std, mean + std, alpha=0.15)
    ax.axhline(result["full_label_accuracy"], color="grey", ls="--", label="all labels")
    ax.set_xlabel("labels")
    ax.set_ylabel("held-out accuracy")
    ax.set_title(f"label efficiency on digits ({result['seeds']} seeds)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
