"""``triage models list|show|promote|rollback|import``.

The group options (--registry, the kafka and topics flags) go before or after the action.
Actions that announce on the models topic check the broker first: with no broker they stop
with the registry unchanged. If the broker disappears between that check and the
announcement, the registry has changed already: the command says the announcement is
pending (scorers find the version at their next registry poll) and exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from triage.commands.base import Action, registry_arg, subcommand
from triage.errors import AnnouncementPendingError, ConfigError, TransportError
from triage.settings import Settings
from triage.transport import check_broker, make_producer

if TYPE_CHECKING:
    from triage.lifecycle.registry import Registry

log = logging.getLogger("triage.models")


def _group_args(p: argparse.ArgumentParser) -> None:
    registry_arg(p, required=False)


def _version(p: argparse.ArgumentParser) -> None:
    p.add_argument("version")


def _promote_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("version")
    p.add_argument("--force", action="store_true", help="promote even a rejected version")
    p.add_argument("--expect", metavar="VERSION", help="promote only if CURRENT is still VERSION "
                   "(a compare-and-swap: of two such promotes, one wins and the other changes nothing)")


def _import_args(p: argparse.ArgumentParser) -> None:
    # Parsed into settings.serving (dest = the Settings field), like `triage serve --model`.
    p.add_argument("--model", dest="model", type=Path, default=argparse.SUPPRESS,
                   metavar="PATH", help="the ONNX classifier to register [env TRIAGE_MODEL]")
    p.add_argument("--reference", dest="reference", type=Path, default=argparse.SUPPRESS,
                   metavar="DATA", help="data from the model's training distribution (npz X[,y] or CSV); "
                   "fits the outlier detector and is the canary; labels (y) also fit calibration, routing and the "
                   "manifest metrics [env TRIAGE_REFERENCE]")
    p.add_argument("--promote", action="store_true", help="also make it current and announce it")


ACTIONS = (
    Action("list", "every version with status, metrics, data and parent"),
    Action("show", "one version's full manifest", _version),
    Action("promote", "make VERSION current and announce it", _promote_args),
    Action("rollback", "go back to the previously promoted version and announce it"),
    # The model flags of `triage serve` (--classes, --input-name, --output-name, ...) read the
    # graph the same way here, so what is imported is what a scorer can serve.
    # Its outlier detector, calibration and routing are fitted as `triage serve` fits them.
    Action("import", "register an ONNX classifier trained elsewhere", _import_args, ("serving",), ("seed",)),
)


def _row(m: dict[str, Any]) -> str:
    metrics = m.get("metrics", {})
    acc = metrics.get("accuracy")
    data = m.get("data", {})
    return (f"{m['version']:>5}  {m.get('status', '?'):9}  acc={acc:.4f}  " if isinstance(acc, (int, float)) else
            f"{m['version']:>5}  {m.get('status', '?'):9}  acc=   n/a  ") + \
        f"rows={data.get('base_rows', '?')}+{data.get('labels_trained', 0)} labels  parent={m.get('parent') or '-'}  " \
        f"{m.get('created', '')}" + (f"  ({m['status_reason']})" if m.get("status_reason") else "")


def _announce(settings: Settings, registry: "Registry", version: str, action: str) -> None:
    """Publish the event, bounded by --connect-timeout-s. The registry has changed already:
    on failure say that the announcement is pending, not that nothing happened."""
    from consumers.trainer import announce

    timeout = settings.connection.connect_timeout_s
    try:
        producer = make_producer(settings)
        try:
            announce(settings, producer, registry.model_event(version, action), deadline_s=timeout)
        except BaseException:
            producer.close(timeout_s=0)  # the event was not acknowledged: do not wait on it again
            raise
        producer.close()
    except TransportError as exc:
        raise AnnouncementPendingError(version, action, settings.topics.models_topic,
                                       exc.message.removeprefix("kafka: ")) from None


def _preflight(settings: Settings, registry: "Registry") -> None:
    current = registry.current()
    check_broker(settings, note=f"registry unchanged (CURRENT is still {current or 'unset'})")


@subcommand("models", "Inspect and manage the model registry.", ("connection", "topics"), _group_args, ACTIONS)
def run(settings: Settings, args: argparse.Namespace) -> int:
    from triage.lifecycle.registry import registry_from

    if settings.serving.registry is None:
        raise ConfigError("needs the registry: --registry DIR (before or after the action) or TRIAGE_REGISTRY")
    registry = registry_from(settings.serving)
    if args.action != "import":
        registry.check_readable()
    if args.action == "list":
        versions = registry.versions()
        if not versions:
            print(f"no versions in {registry.location}")
        current = registry.current()
        for v in versions:
            print(("* " if v == current else "  ") + _row(registry.manifest(v)))
    elif args.action == "show":
        m = registry.manifest(args.version)
        m = {k: v for k, v in m.items() if k != "outlier"} | {"outlier": {"kind": m.get("outlier", {}).get("kind"), "threshold": m.get("outlier", {}).get("threshold")}}
        print(json.dumps(m, indent=2, sort_keys=True))
    elif args.action == "promote":
        registry.verify(args.version)  # an unknown or corrupt version fails before the broker check
        _preflight(settings, registry)
        registry.promote(args.version, force=args.force, expect=args.expect)
        _announce(settings, registry, args.version, "promote")
        print(f"CURRENT = {args.version} (announced on {settings.topics.models_topic})")
    elif args.action == "rollback":
        _preflight(settings, registry)
        m = registry.rollback()
        _announce(settings, registry, m["version"], "rollback")
        print(f"rolled back: CURRENT = {m['version']} (announced on {settings.topics.models_topic})")
    elif args.action == "import":
        model, reference = settings.serving.model, settings.serving.reference
        if model is None or reference is None:
            raise ConfigError("models import needs --model PATH and --reference DATA")
        from triage.lifecycle.bundles import import_model
        from triage.lifecycle.data import load_dataset

        X, y = load_dataset(reference)
        if args.promote:
            _preflight(settings, registry)
        version = import_model(registry, model, serving=settings.serving, policy=settings.policy,
                               reference=X, labels=y)
        if args.promote:
            registry.promote(version)
            _announce(settings, registry, version, "promote")
        print(f"imported {model} as {version}" + (" (current)" if args.promote else ""))
    return 0
