"""``triage monitor``: label-free accuracy estimate and drift alarms on the scored outputs."""

from __future__ import annotations

import argparse
import logging

from triage.commands.base import install_stop_handlers, subcommand
from triage.settings import Settings
from triage.transport import check_broker, ensure_topics

log = logging.getLogger("triage.monitor")

SECTIONS = ("connection", "topics", "monitor", "operations")
FIELDS = ("batch_size", "poll_timeout_ms", "max_message_bytes", "audit_recent_labels")


@subcommand("monitor", "Watch every scorer's outputs between labels: estimate accuracy per model version "
            "(triage_estimated_accuracy with its band, corrected by the audit slice's labels), run drift detectors whose false-alarm rate is set by "
            "--drift-ert-samples (triage_drift_statistic/_threshold/_alarms_total), and publish a retrain "
            "request on a drift alarm or an estimate below --accuracy-floor. Run one replica.",
            SECTIONS, fields=FIELDS)
def run(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.monitor import MonitorConsumer
    from triage.runtime.http import OpsServer

    check_broker(settings)
    ensure_topics(settings, [settings.topics.retrain_requests_topic])
    consumer = MonitorConsumer(settings)
    install_stop_handlers(consumer.stop_event)
    ops = OpsServer(settings.operations.metrics_host, settings.operations.metrics_port, consumer.metrics.registry,
                    consumer.ready).start()
    log.info("monitoring %s + %s (checkpoint in %s); metrics on %s:%d", settings.topics.predictions_topic,
             settings.topics.review_topic, settings.monitor.monitor_state_dir, settings.operations.metrics_host, ops.port)
    try:
        consumer.run()
    finally:
        ops.stop()
    return 0
