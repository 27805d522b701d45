"""``triage audit``: realized accuracy of auto-accepted predictions, from the audit slice."""

from __future__ import annotations

import argparse
import logging

from consumers.audit import AuditConsumer
from triage.cli import install_stop_handlers, subcommand
from triage.runtime.http import OpsServer
from triage.settings import Settings
from triage.transport import check_broker

log = logging.getLogger("triage.audit")

GROUPS = ("kafka", "topics", "policy", "processing", "operations")


@subcommand("audit", "Join labels to audit samples; export the accepted-prediction accuracy per model "
            "version (triage_accepted_accuracy_estimate/_lower/_upper) on /metrics.", GROUPS)
def run(settings: Settings, args: argparse.Namespace) -> int:
    check_broker(settings)
    consumer = AuditConsumer(settings)
    install_stop_handlers(consumer.stop_event)
    ops = OpsServer(settings.operations.metrics_host, settings.operations.metrics_port, consumer.metrics.registry, lambda: {"running": True}).start()
    log.info("auditing %s + %s; metrics on %s:%d", settings.topics.review_topic, settings.topics.labels_topic,
             settings.operations.metrics_host, ops.port)
    try:
        consumer.run()
    finally:
        ops.stop()
    return 0
