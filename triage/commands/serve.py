"""``triage serve``: the scorer."""

from __future__ import annotations

import argparse
import functools
import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, Optional

from triage.commands.base import install_stop_handlers, subcommand
from triage.errors import ConfigError
from triage.runtime.logs import held_back
from triage.settings import Settings
from triage.transport import backend_name, check_broker, ensure_topics

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from consumers.scorer import Scorer
    from triage.scoring.servable import ServingModel

log = logging.getLogger("triage.serve")

SECTIONS = ("connection", "topics", "serving", "policy", "operations")
# how many annotators review requests ask for (triage.policies.consensus)
QUALITY_FIELDS = ("consensus_share", "consensus_size", "consensus_max_annotators")


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


def build_scorer(settings: Settings, model: Optional["ServingModel"] = None) -> "Scorer":
    from consumers.scorer import Scorer

    if settings.connection.create_topics:
        ensure_topics(settings, settings.topics.all())
    return Scorer(settings, model or initial_model(settings))


@subcommand("serve", "Score samples from Kafka and route them to predictions, review or the DLQ.", SECTIONS,
            fields=QUALITY_FIELDS)
def run(settings: Settings, args: argparse.Namespace) -> int:
    # A bad --model/--registry is named first, at once: fixing the broker would only lead to it
    # (and with --workers it is one clear error, not N crash loops). What loading it logs waits
    # for the broker check, so no broker is still one line.
    with held_back() as emit:
        model = initial_model(settings)
    check_broker(settings)  # no broker: one line and a non-zero exit within --connect-timeout-s
    emit()
    if settings.serving.workers > 1:
        del model  # each worker loads its own
        return serve_workers(settings)
    return serve_one(settings, model=model)


def serve_one(settings: Settings, on_listening: Optional[Callable[["Scorer", int], None]] = None,
              model: Optional["ServingModel"] = None) -> int:
    """One scorer process (serving ``model``, or the one the settings name); ``on_listening(scorer,
    port)`` once its endpoint listens."""
    from consumers.backlog import BacklogWatcher
    from consumers.model_watcher import ModelWatcher
    from triage.lifecycle.registry import registry_from
    from triage.runtime.http import OpsServer

    scorer = build_scorer(settings, model)
    install_stop_handlers(scorer.stop_event)
    ops = OpsServer(settings.operations.metrics_host, settings.operations.metrics_port, scorer.metrics.registry, scorer.readiness,
                    scorer.readiness_reasons).start()
    log.info(
        "serving model %s (%d features, classes %s) from %s via %s; metrics on %s:%d",
        scorer.model.version, scorer.model.feature_count, ",".join(scorer.model.classes[:10]),
        settings.topics.samples_topic, backend_name(settings), settings.operations.metrics_host, ops.port,
    )
    if on_listening is not None:
        on_listening(scorer, ops.port)
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
        log.critical("stopped because a helper thread failed for good: %s: %s", type(scorer.fatal).__name__, scorer.fatal)
        return 1
    log.info("scorer stopped cleanly")
    return 0


def serve_workers(settings: Settings) -> int:
    """``--workers N``: N scorer processes (one consumer group) under this one, which serves
    their merged /metrics, /healthz and a /readyz that is ready when every worker is."""
    from prometheus_client import CollectorRegistry

    from triage.metrics import WorkerMetrics
    from triage.runtime.aggregate import MetricsMerger, WorkersCollector, WorkersReadiness
    from triage.runtime.http import OpsServer
    from triage.runtime.workers import GaveUp, WorkerPool

    serving = settings.serving
    if settings.connection.create_topics:
        ensure_topics(settings, settings.topics.all())
    stop = threading.Event()
    install_stop_handlers(stop)
    merger = MetricsMerger()
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, serving.workers)
    pool = WorkerPool(serving.workers, functools.partial(worker_main, settings.flat()),
                      max_restarts=serving.worker_max_restarts, window_s=serving.worker_restart_window_s,
                      stop=stop, on_death=merger.retire,
                      on_restart=lambda slot: metrics.restarts.labels(worker=str(slot)).inc())
    metrics.running.set_function(lambda: float(pool.running()))
    registry.register(WorkersCollector(pool.ports, merger))
    readiness = WorkersReadiness(pool.ports)
    ops = OpsServer(settings.operations.metrics_host, settings.operations.metrics_port, registry,
                    readiness.checks, readiness.reasons).start()
    log.info("serving with %d worker processes; merged metrics on %s:%d", serving.workers,
             settings.operations.metrics_host, ops.port)
    try:
        pool.run()
    except GaveUp as exc:
        log.critical("stopped every worker: %s", exc)
        return 1
    finally:
        ops.stop()
    codes = pool.exit_codes()
    if any(code != 0 for code in codes):
        log.error("workers stopped with exit codes %s", codes)
        return 1
    log.info("every worker stopped cleanly")
    return 0


def worker_settings(flat: dict[str, Any], slot: int) -> Settings:
    """The settings of worker ``slot``: one scorer, its endpoint private to the parent, and its
    own static group member id (``<id>-<slot>``: static members of a group must differ)."""
    changes: dict[str, Any] = dict(metrics_host="127.0.0.1", metrics_port=0, workers=1)
    if flat.get("group_instance_id"):
        changes["group_instance_id"] = f"{flat['group_instance_id']}-{slot}"
    return Settings(**flat).replace(**changes)


def worker_main(flat: dict[str, Any], slot: int, conn: "Connection") -> None:
    """One worker of ``serve_workers`` (in a spawned process): a scorer whose endpoint listens
    on 127.0.0.1 at a free port, which it tells the parent; it stops when the parent goes."""
    import os
    import sys

    from triage.commands.base import run_guarded
    from triage.runtime.logs import configure_logging, secrets_of
    from triage.runtime.workers import watch_parent

    os.setpgrp()  # a terminal's Ctrl-C reaches the parent only; it relays a single SIGTERM
    settings = worker_settings(flat, slot)
    configure_logging(settings.operations.log_level, client_logs=settings.connection.client_logs,
                      secrets=secrets_of(settings),
                      tag=f"worker {slot}")

    def listening(scorer: "Scorer", port: int) -> None:
        conn.send(("port", port))
        watch_parent(conn, scorer.stop_event)

    sys.exit(run_guarded(f"triage serve (worker {slot})", lambda: serve_one(settings, listening)))
