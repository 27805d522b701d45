"""``triage label-studio``: the bridge between the review topic and a Label Studio project."""

from __future__ import annotations

import argparse
import logging
from typing import Optional

from triage.commands.base import install_stop_handlers, subcommand
from triage.errors import ConfigError, TransportError
from triage.settings import Settings
from triage.transport import check_broker, ensure_topics

log = logging.getLogger("triage.labelstudio")


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", dest="registry", default=argparse.SUPPRESS, metavar="DIR",
                   help="take the class names (and feature count) from the registry's current model "
                        "[env TRIAGE_REGISTRY]")
    p.add_argument("--classes", dest="classes", default=argparse.SUPPRESS,
                   help="comma-separated class names, when there is no registry [env TRIAGE_CLASSES]")


def model_facts(settings: Settings) -> tuple[list[str], Optional[int]]:
    """The class names and feature count tasks are built for."""
    from triage.lifecycle.registry import registry_from

    if settings.serving.registry is not None:
        registry = registry_from(settings.serving)
        current = registry.current()
        if current is None:
            raise ConfigError(f"registry {settings.serving.registry} has no current model to take class names from")
        manifest = registry.manifest(current)
        return list(manifest["classes"]), int(manifest["feature_count"])
    if settings.serving.class_names:
        return list(settings.serving.class_names), settings.serving.feature_count
    raise ConfigError("the bridge needs the class names: pass --registry DIR or --classes a,b,c")


@subcommand("label-studio", "Turn review requests into Label Studio tasks and annotations into labels.",
            ("connection", "topics", "operations", "label_studio"), _args,
            fields=("feature_count",))  # with --classes: a square feature count shows features as an image
def run(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.labelstudio_bridge import Bridge
    from triage.annotation.labelstudio.client import LabelStudio, LabelStudioError
    from triage.runtime.http import OpsServer

    key = settings.label_studio.label_studio_api_key
    if key is None:
        raise ConfigError("Label Studio needs an API key: --api-key or TRIAGE_LABEL_STUDIO_API_KEY "
                          "(Account & Settings -> Personal Access Token, or a legacy token)")
    classes, feature_count = model_facts(settings)
    client = LabelStudio(settings.label_studio.label_studio_url, key.get_secret_value())
    check_broker(settings)
    if settings.connection.create_topics:
        ensure_topics(settings, settings.topics.all())
    bridge = Bridge(settings, classes, client, feature_count=feature_count)
    install_stop_handlers(bridge.stop)
    ops = OpsServer(settings.operations.metrics_host, settings.operations.metrics_port, bridge.metrics.registry,
                    bridge.readiness, bridge.readiness_reasons).start()
    try:
        # Label Studio may start after the bridge (compose, k8s): start() waits for it, saying so,
        # while /readyz answers 503. A refusal (wrong key, unknown project) stops the bridge.
        try:
            bridge.start()
        except LabelStudioError as exc:
            raise ConfigError(f"Label Studio at {settings.label_studio.label_studio_url} refused: {exc.message}; "
                              "check --api-key / TRIAGE_LABEL_STUDIO_API_KEY and --project-id") from None
        except TransportError as exc:
            if bridge.stop.is_set() and bridge.fatal is None:
                return 0  # stopped (SIGTERM) while starting
            raise ConfigError(f"the bridge could not start: {exc.message}") from None
        log.info("bridging %s -> Label Studio project %d at %s; labels -> %s; webhooks on %s; metrics on %s:%d",
                 settings.topics.review_topic, bridge.project_id, settings.label_studio.label_studio_url,
                 settings.topics.labels_topic, bridge.webhook_url, settings.operations.metrics_host, ops.port)
        bridge.loop().run()
    finally:
        bridge.close()
        ops.stop()
    if bridge.fatal is not None:
        log.critical("stopped because the publisher kept failing: %s", bridge.fatal)
        return 1
    return 0
