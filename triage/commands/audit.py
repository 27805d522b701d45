"""``triage audit``: realized accuracy of auto-accepted predictions, from the audit slice."""

from __future__ import annotations

import argparse
import logging

from triage.commands.base import install_stop_handlers, subcommand
from triage.errors import ConfigError
from triage.settings import Settings
from triage.transport import check_broker

log = logging.getLogger("triage.audit")

SECTIONS = ("connection", "topics", "policy", "operations")
FIELDS = ("batch_size", "poll_timeout_ms", "max_message_bytes", "blas_threads", "registry", "registry_poll_s")


@subcommand("audit", "Join labels to audit samples; export the accepted-prediction accuracy per model "
            "version (triage_accepted_accuracy_estimate/_lower/_upper) and its live risk certificate "
            "(triage_risk_live_upper_bound/_samples) on /metrics; with --risk-live-control and --registry, "
            "move the scorers' risk threshold to the live-certified one.", SECTIONS, fields=FIELDS)
def run(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.audit import AuditConsumer
    from triage.lifecycle.registry import registry_from
    from triage.runtime.http import OpsServer

    if settings.policy.risk_live_control:
        if settings.serving.registry is None:
            raise ConfigError("--risk-live-control moves the scorers' threshold through the model registry: "
                              "pass --registry DIR (the one the scorers serve from)")
        registry_from(settings.serving).check_readable()
    check_broker(settings)
    consumer = AuditConsumer(settings)
    install_stop_handlers(consumer.stop_event)
    ops = OpsServer(settings.operations.metrics_host, settings.operations.metrics_port, consumer.metrics.registry,
                    consumer.readiness, consumer.readiness_reasons).start()
    log.info("auditing %s + %s; metrics on %s:%d", settings.topics.review_topic, settings.topics.labels_topic,
             settings.operations.metrics_host, ops.port)
    try:
        consumer.run()
    finally:
        ops.stop()
    return 0
