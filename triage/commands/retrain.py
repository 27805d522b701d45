"""``triage retrain``: fold labels in, train and check a candidate, promote or reject."""

from __future__ import annotations

import argparse
import logging
import sys
import threading

from triage.commands.base import install_stop_handlers, registry_arg, subcommand
from triage.errors import ConfigError
from triage.settings import Settings
from triage.transport import check_broker, ensure_topics

log = logging.getLogger("triage.retrain")


def _args(p: argparse.ArgumentParser) -> None:
    registry_arg(p)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="one run, then exit (non-zero if it failed)")
    mode.add_argument("--every", type=float, metavar="SECONDS", help="run periodically until stopped")


@subcommand("retrain", "Consume labels, train a candidate, promote it if it is not worse.",
            ("connection", "topics", "retrain", "operations"), _args)
def run(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.trainer import Trainer
    from triage.lifecycle.registry import registry_from
    from triage.runtime.http import OpsServer

    assert settings.serving.registry is not None
    if args.every is not None and args.every <= 0:
        raise ConfigError("--every must be a positive number of seconds")
    check_broker(settings)  # both modes; later outages are the guarded loop's business
    if settings.connection.create_topics:
        ensure_topics(settings, settings.topics.all())
    stop = threading.Event()
    install_stop_handlers(stop)  # the ingest leaves its batch uncommitted and returns, even mid-outage
    trainer = Trainer(settings, registry_from(settings.serving),
                      progress=lambda m: print(f"[retrain] {m}", file=sys.stderr, flush=True), stop=stop)
    ops = None if args.once or args.every is None else OpsServer(
        settings.operations.metrics_host, settings.operations.metrics_port, trainer.metrics.registry,
        trainer.readiness, trainer.readiness_reasons).start()
    try:
        while True:
            outcome = trainer.run_once()
            print(f"[retrain] outcome: {outcome.outcome}" + (f" {outcome.version}" if outcome.version else "")
                  + (f" ({outcome.reason})" if outcome.reason else ""), file=sys.stderr, flush=True)
            if args.every is None:
                return 1 if outcome.outcome == "failed" else 0
            if stop.wait(args.every):
                return 0
    finally:
        trainer.close()
        if ops is not None:
            ops.stop()
