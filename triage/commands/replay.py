"""``triage replay``: replay a dataset onto the samples topic as production traffic.

Used by docker-compose's sample producer and handy for load tests against a real cluster.
The pacing (rows as samples, one chunk per tick at a steady rate) is
``triage.runtime.pacing``; this module is the command line around it.
"""

from __future__ import annotations

import argparse
import logging
import threading
from pathlib import Path
from typing import Sized

from triage.commands.base import install_stop_handlers, subcommand
from triage.errors import ConfigError
from triage.settings import Settings
from triage.transport import check_broker, ensure_topics, make_producer

log = logging.getLogger("triage.replay")


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, help="dataset to replay (npz with X, or CSV)")
    p.add_argument("--rate", type=float, default=50.0, help="samples per second (0 = as fast as possible)")
    p.add_argument("--count", type=int, default=0, help="stop after this many samples (0 = one pass, or forever with --loop)")
    p.add_argument("--loop", action="store_true", help="start over at the end of the dataset")
    p.add_argument("--id-prefix", default="replay", help="sample ids are PREFIX-N")
    p.add_argument("--heartbeat", type=Path, default=None,
                   help="touch this file after every acknowledged chunk (for container health checks)")


def validate(rate: float, count: int, X: Sized, data: Path) -> None:
    if rate < 0:
        raise ConfigError(f"--rate must be >= 0 (samples per second), got {rate}")
    if count < 0:
        raise ConfigError(f"--count must be >= 0, got {count}")
    if not len(X):
        raise ConfigError(f"{data}: the dataset has no rows to replay")


@subcommand("replay", "Replay a dataset onto the samples topic at a steady rate (a sample producer).",
            ("connection", "topics"), _args)
def run(settings: Settings, args: argparse.Namespace) -> int:
    from triage.lifecycle.data import load_dataset
    from triage.runtime.pacing import sample_records, send_paced

    X, _ = load_dataset(args.data)
    validate(args.rate, args.count, X, args.data)
    check_broker(settings)
    stop = threading.Event()
    install_stop_handlers(stop)
    if settings.connection.create_topics:
        ensure_topics(settings, [settings.topics.samples_topic])
    producer = make_producer(settings)
    sent = send_paced(producer, sample_records(X, prefix=args.id_prefix, loop=args.loop,
                                               count=args.count, topic=settings.topics.samples_topic),
                      args.rate, stop, heartbeat=args.heartbeat)
    producer.close()
    log.info("replayed %d samples from %s to %s", sent, args.data, settings.topics.samples_topic)
    print(f"replayed {sent} samples to {settings.topics.samples_topic}", flush=True)
    return 0
