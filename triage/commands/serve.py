"""``triage serve``: the scorer."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from triage.commands.base import install_stop_handlers, subcommand
from triage.errors import ConfigError
from triage.settings import Settings
from triage.transport import backend_name, check_broker, ensure_topics

if TYPE_CHECKING:
    from consumers.scorer import Scorer
    from triage.scoring.servable import ServingModel

log = logging.getLogger("triage.serve")

SECTIONS = ("connection", "topics", "serving", "policy", "operations")


def initial_model(settings: Settings) -> "ServingModel":
    from triage.lifecycle.loading import serving_model_from_file, serving_model_from_registry
    from triage.lifecycle.registry import registry_from
    from triage.policies import prepare_model

    if settings.serving.registry is not None:
        if settings.serving.model is not None:
            raise ConfigError("give either --model PATH or --registry DIR, not both")
        registry = registry_from(settings.serving)
        registry.check_readable()
        version = registry.current()
        if version is None:
            raise ConfigError(f"registry {settings.serving.registry} has no CURRENT version; run `triage train` "
                              "or `triage models import` first")
        # Calibration and routing come from the bundle's manifest (fitted at train time).
        return prepare_model(settings.policy, serving_model_from_registry(registry, version, settings.serving))
    # The same preparation as `triage models import`: a labelled reference fits calibration + routing.
    return serving_model_from_file(settings.serving, settings.policy)


def build_scorer(settings: Settings) -> "Scorer":
    from consumers.scorer import Scorer

    if settings.connection.create_topics:
        ensure_topics(settings, settings.topics.all())
    return Scorer(settings, initial_model(settings))


@subcommand("serve", "Score samples from Kafka and route them to predictions, review or the DLQ.", SECTIONS)
def run(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.backlog import BacklogWatcher
    from consumers.model_watcher import ModelWatcher
    from triage.lifecycle.registry import registry_from
    from triage.runtime.http import OpsServer

    check_broker(settings)  # no broker: one line and a non-zero exit within --connect-timeout-s
    scorer = build_scorer(settings)
    install_stop_handlers(scorer.stop_event)
    ops = OpsServer(settings.operations.metrics_host, settings.operations.metrics_port, scorer.metrics.registry, scorer.readiness,
                    scorer.readiness_reasons).start()
    log.info(
        "serving model %s (%d features, classes %s) from %s via %s; metrics on %s:%d",
        scorer.model.version, scorer.model.feature_count, ",".join(scorer.model.classes[:10]),
        settings.topics.samples_topic, backend_name(settings), settings.operations.metrics_host, ops.port,
    )
    # A helper thread that keeps crashing stops the scorer: the process exits non-zero and
    # the orchestrator restarts it, instead of serving on without hot-swaps or budgets.
    watcher = ModelWatcher(settings, registry_from(settings.serving), scorer,
                           on_fatal=scorer.fail).start() if settings.serving.registry else None
    backlog = BacklogWatcher(settings, scorer.feed_backlog, metrics=scorer.metrics.loop,
                             on_fatal=scorer.fail).start() if settings.policy.annotation_capacity else None
    try:
        scorer.run()
    finally:
        for helper in (watcher, backlog):
            if helper is not None:
                helper.stop()
        ops.stop()
    if scorer.fatal is not None:
        log.critical("stopped because a helper thread kept failing: %s: %s", type(scorer.fatal).__name__, scorer.fatal)
        return 1
    log.info("scorer stopped cleanly")
    return 0
