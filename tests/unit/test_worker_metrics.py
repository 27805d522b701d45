"""The parent of ``serve --workers N`` merges its workers' pages: counters and histograms summed
(and kept when a worker dies), gauges the largest, ``triage_ready`` the smallest."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from tests.helpers import metric_value
from triage.metrics import ScorerMetrics
from triage.runtime.aggregate import MetricsMerger


def page(records: int, confidences: list[float], lag: dict[str, float], ready: bool) -> str:
    m = ScorerMetrics()
    m.loop.records.labels(loop="scorer").inc(records)
    for c in confidences:
        m.confidence.observe(c)
    for p, v in lag.items():
        m.lag.labels(partition=p).set(v)
    m.ready.set(1 if ready else 0)
    return generate_latest(m.registry).decode()


def rendered(merger: MetricsMerger, pages: dict[int, str | None]) -> str:
    metrics = merger.merge(pages)

    class Fixed(Collector):
        def collect(self):  # type: ignore[no-untyped-def]
            return metrics

    registry = CollectorRegistry()
    registry.register(Fixed())
    return generate_latest(registry).decode()


def test_counters_and_histograms_are_summed_and_gauges_take_the_largest() -> None:
    merger = MetricsMerger()
    text = rendered(merger, {0: page(7, [0.3, 0.9], {"0": 5, "1": 2}, True),
                             1: page(5, [0.95], {"2": 9}, True)})
    assert metric_value(text, "triage_records_consumed_total", loop="scorer") == 12
    assert metric_value(text, "triage_confidence_count") == 3
    assert metric_value(text, "triage_confidence_bucket", le="0.3") == 1
    assert metric_value(text, "triage_confidence_bucket", le="+Inf") == 3
    assert abs(metric_value(text, "triage_confidence_sum") - 2.15) < 1e-9
    assert [metric_value(text, "triage_consumer_lag_records", partition=p) for p in "012"] == [5, 2, 9]
    assert metric_value(text, "triage_ready") == 1


def test_ready_only_when_every_worker_is_and_zero_while_one_is_missing() -> None:
    merger = MetricsMerger()
    assert metric_value(rendered(merger, {0: page(1, [], {}, True), 1: page(1, [], {}, False)}), "triage_ready") == 0
    assert metric_value(rendered(merger, {0: page(1, [], {}, True), 1: None}), "triage_ready") == 0


def test_a_dead_workers_counts_stay_in_the_totals() -> None:
    merger = MetricsMerger()
    rendered(merger, {0: page(100, [0.5] * 4, {}, True), 1: page(40, [0.5], {}, True)})
    merger.retire(1)  # worker 1 died; its replacement starts from zero
    text = rendered(merger, {0: page(110, [0.5] * 4, {}, True), 1: page(3, [], {}, True)})
    assert metric_value(text, "triage_records_consumed_total", loop="scorer") == 110 + 40 + 3
    assert metric_value(text, "triage_confidence_count") == 5
    merger.retire(1)  # and the replacement died too, before it was scraped again
    text = rendered(merger, {0: page(120, [], {}, True), 1: None})
    assert metric_value(text, "triage_records_consumed_total", loop="scorer") == 120 + 40 + 3


def test_workers_flag_parses_anywhere_and_a_bad_count_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    from triage.cli import build_parser, main, settings_from_args

    for argv in (["serve", "--workers", "3", "--model", "m.onnx"], ["serve", "--model", "m.onnx", "--workers", "3"]):
        s = settings_from_args(build_parser().parse_args(argv))
        assert s.serving.workers == 3 and s.serving.worker_max_restarts == 5
    assert main(["serve", "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "--workers / TRIAGE_WORKERS" in err and "greater than or equal to 1" in err
    help_text = build_parser()._subparsers._group_actions[0].choices["serve"].format_help()  # type: ignore[union-attr]
    assert "--workers" in help_text and "--worker-max-restarts" in help_text


def test_each_worker_gets_a_private_endpoint_and_its_own_static_member_id() -> None:
    from triage.commands.serve import worker_settings
    from triage.settings import Settings

    flat = Settings(workers=4, metrics_port=8000, group_instance_id="scorer-0").flat()
    ids = {worker_settings(flat, slot).connection.group_instance_id for slot in range(4)}
    assert ids == {"scorer-0-0", "scorer-0-1", "scorer-0-2", "scorer-0-3"}
    s = worker_settings(flat, 1)
    assert (s.serving.workers, s.operations.metrics_port, s.operations.metrics_host) == (1, 0, "127.0.0.1")
    assert worker_settings(Settings().flat(), 0).connection.group_instance_id is None
