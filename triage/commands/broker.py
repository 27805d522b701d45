"""``triage broker``: the embedded Kafka-compatible broker on loopback."""

from __future__ import annotations

import argparse
import threading

from triage.commands.base import install_stop_handlers, subcommand
from triage.settings import Settings


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=9092, help="loopback port to listen on")


@subcommand("broker", "Run the embedded Kafka-compatible broker (Tansu, memory-only) on loopback.", (), _args)
def run(settings: Settings, args: argparse.Namespace) -> int:
    from triage.runtime.broker import EmbeddedBroker

    stop = threading.Event()
    install_stop_handlers(stop)
    with EmbeddedBroker(port=args.port) as broker:
        print(f"embedded broker listening on {broker.bootstrap_servers} (memory-only; Ctrl-C stops it)", flush=True)
        while not stop.wait(0.5):
            if broker.process is not None and broker.process.poll() is not None:
                print(f"broker exited with status {broker.process.returncode}")
                return 1
    return 0
