"""``triage retrain``: fold labels in, train and check a candidate, promote or reject."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from typing import TYPE_CHECKING, Optional

from triage.commands.base import install_stop_handlers, registry_arg, subcommand
from triage.errors import ConfigError
from triage.settings import Settings
from triage.transport import check_broker, ensure_topics

if TYPE_CHECKING:
    from consumers.retrain_requests import RetrainRequests

log = logging.getLogger("triage.retrain")


def _args(p: argparse.ArgumentParser) -> None:
    registry_arg(p)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="one run, then exit (non-zero if it failed)")
    mode.add_argument("--every", type=float, metavar="SECONDS", help="run periodically until stopped; a retrain "
                      "request (triage monitor) starts the next run early")
    mode.add_argument("--on-request", action="store_true", help="run only when a retrain request arrives "
                      "(triage monitor: a drift alarm or a low estimated accuracy), until stopped")


@subcommand("retrain", "Consume labels, train a candidate, promote it if it is not worse.",
            ("connection", "topics", "retrain", "operations"), _args)
def run(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.retrain_requests import RetrainRequests
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
    periodic = args.every is not None or args.on_request
    requests = RetrainRequests(settings, trainer.metrics.loop).start() if periodic else None
    ops = None if not periodic else OpsServer(
        settings.operations.metrics_host, settings.operations.metrics_port, trainer.metrics.registry,
        trainer.readiness, trainer.readiness_reasons).start()
    try:
        while True:
            if args.on_request:
                assert requests is not None
                while not requests.wake.wait(0.5):
                    if stop.is_set():
                        return 0
            if requests is not None:
                requests.wake.clear()
            outcome = trainer.run_once()
            print(f"[retrain] outcome: {outcome.outcome}" + (f" {outcome.version}" if outcome.version else "")
                  + (f" ({outcome.reason})" if outcome.reason else ""), file=sys.stderr, flush=True)
            if not periodic:
                return 1 if outcome.outcome == "failed" else 0
            if args.every is not None and _wait(stop, requests, args.every):
                return 0
    finally:
        if requests is not None:
            requests.close()
        trainer.close()
        if ops is not None:
            ops.stop()


def _wait(stop: threading.Event, requests: "Optional[RetrainRequests]", seconds: float) -> bool:
    """Wait ``seconds`` or until a retrain request; True when stopped."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if stop.wait(min(0.5, max(0.0, deadline - time.monotonic()))):
            return True
        if requests is not None and requests.wake.is_set():
            return False
    return stop.is_set()
