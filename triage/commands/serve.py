"""``triage serve``: the scorer."""

from __future__ import annotations

import argparse
import logging
import threading

from consumers.backlog import BacklogWatcher
from consumers.scorer import Scorer
from triage.cli import install_stop_handlers, subcommand
from triage.data import load_dataset
from triage.http import OpsServer
from triage.policies import prepare_model
from triage.serving import serving_model_from_file
from triage.settings import Settings
from triage.transport import backend_name, ensure_topics

log = logging.getLogger("triage.serve")

GROUPS = ("kafka", "topics", "model", "routing", "policy", "processing", "operations")


def build_scorer(settings: Settings) -> Scorer:
    if settings.create_topics:
        ensure_topics(settings, settings.all_topics())
    model = serving_model_from_file(settings)
    X = y = None
    if settings.reference is not None:
        X, y = load_dataset(settings.reference)  # held-out labels (y) fit calibration + risk
    return Scorer(settings, prepare_model(settings, model, X, y))


@subcommand("serve", "Score samples from Kafka and route them to predictions, review or the DLQ.", GROUPS)
def run(settings: Settings, args: argparse.Namespace) -> int:
    scorer = build_scorer(settings)
    install_stop_handlers(scorer.stop_event)
    ops = OpsServer(settings.metrics_host, settings.metrics_port, scorer.metrics.registry, scorer.readiness).start()
    log.info(
        "serving model %s (%d features, classes %s) from %s via %s; metrics on %s:%d",
        scorer.model.version, scorer.model.feature_count, ",".join(scorer.model.classes[:10]),
        settings.samples_topic, backend_name(settings), settings.metrics_host, ops.port,
    )
    watcher = BacklogWatcher(settings, scorer.feed_backlog).start() if settings.annotation_capacity else None
    try:
        scorer.run()
    finally:
        ops.stop()
        if watcher is not None:
            watcher.stop()
    log.info("scorer stopped cleanly")
    return 0
