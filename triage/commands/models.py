"""``triage models list|show|promote|rollback|import``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from triage.bundles import import_model
from triage.cli import subcommand
from triage.commands.train import registry_arg
from triage.data import load_dataset
from triage.registry import Registry
from triage.settings import Settings
from triage.transport import make_producer


def _args(p: argparse.ArgumentParser) -> None:
    registry_arg(p)
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("list", help="every version with status, metrics, data and parent")
    show = sub.add_parser("show", help="one version's full manifest")
    show.add_argument("version")
    promote = sub.add_parser("promote", help="make VERSION current and announce it")
    promote.add_argument("version")
    promote.add_argument("--force", action="store_true", help="promote even a rejected version")
    sub.add_parser("rollback", help="go back to the previously promoted version and announce it")
    imp = sub.add_parser("import", help="register an ONNX classifier trained elsewhere")
    imp.add_argument("--model", dest="import_model", required=True, type=Path)
    imp.add_argument("--reference", dest="import_reference", required=True, type=Path,
                     help="data from the model's training distribution (npz X[,y] or CSV)")
    imp.add_argument("--promote", action="store_true", help="also make it current")
    imp.add_argument("--classes", dest="import_classes", help="comma-separated class names, if the model lacks them")


def _row(m: dict[str, Any]) -> str:
    metrics = m.get("metrics", {})
    acc = metrics.get("accuracy")
    data = m.get("data", {})
    return (f"{m['version']:>5}  {m.get('status', '?'):9}  acc={acc:.4f}  " if isinstance(acc, (int, float)) else
            f"{m['version']:>5}  {m.get('status', '?'):9}  acc=   n/a  ") + \
        f"rows={data.get('base_rows', '?')}+{data.get('labels_trained', 0)} labels  parent={m.get('parent') or '-'}  " \
        f"{m.get('created', '')}" + (f"  ({m['status_reason']})" if m.get("status_reason") else "")


def _announce(settings: Settings, registry: Registry, version: str, action: str) -> None:
    from consumers.trainer import announce

    producer = make_producer(settings)
    try:
        announce(settings, producer, registry.model_event(version, action))
    finally:
        producer.close()


@subcommand("models", "Inspect and manage the model registry.", ("kafka", "topics"), _args)
def run(settings: Settings, args: argparse.Namespace) -> int:
    assert settings.serving.registry is not None
    registry = Registry(settings.serving.registry)
    if args.action != "import":
        registry.check_readable()
    if args.action == "list":
        versions = registry.versions()
        if not versions:
            print(f"no versions in {registry.root}")
        current = registry.current()
        for v in versions:
            print(("* " if v == current else "  ") + _row(registry.manifest(v)))
    elif args.action == "show":
        m = registry.manifest(args.version)
        m = {k: v for k, v in m.items() if k != "outlier"} | {"outlier": {"kind": m.get("outlier", {}).get("kind"), "threshold": m.get("outlier", {}).get("threshold")}}
        print(json.dumps(m, indent=2, sort_keys=True))
    elif args.action == "promote":
        registry.promote(args.version, force=args.force)
        _announce(settings, registry, args.version, "promote")
        print(f"CURRENT = {args.version} (announced on {settings.topics.models_topic})")
    elif args.action == "rollback":
        m = registry.rollback()
        _announce(settings, registry, m["version"], "rollback")
        print(f"rolled back: CURRENT = {m['version']} (announced on {settings.topics.models_topic})")
    elif args.action == "import":
        X, y = load_dataset(args.import_reference)
        version = import_model(registry, args.import_model, X, y, seed=settings.policy.seed,
                               outlier_quantile=settings.serving.outlier_quantile,
                               classes=args.import_classes.split(",") if args.import_classes else None)
        if args.promote:
            registry.promote(version)
            _announce(settings, registry, version, "promote")
        print(f"imported {args.import_model} as {version}" + (" (current)" if args.promote else ""))
    return 0

