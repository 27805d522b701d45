"""A real Prometheus server (Debian's package) on loopback, configured from
deploy/prometheus/prometheus.yml, scrapes a running scorer; its query API returns triage
metrics and it loads every alert rule."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest
import yaml

from tests.deploy.conftest import PROM_DIR
from tests.deploy.shipped import BY_COMMAND
from tests.fixtures import produce
from tests.helpers import ScorerProcess, TriageProcess, http_get, metric_value, wait_until
from tests.integration.streams import mixed_stream
from triage.runtime.broker import free_port
from triage.settings import Settings


class Prometheus:
    def __init__(self, binary: str, workdir: Path, scorer_port: int, extra_jobs: Optional[dict[str, int]] = None) -> None:
        config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
        # The shipped config, with loopback targets and a fast cadence for the test.
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(PROM_DIR / f) for f in config["rule_files"]]
        config["scrape_configs"] = [
            {"job_name": "triage-scorer", "static_configs": [{"targets": [f"127.0.0.1:{scorer_port}"]}]},
        ] + [{"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
             for job, port in (extra_jobs or {}).items()]
        shipped_jobs = {j["job_name"] for j in yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())["scrape_configs"]}
        assert {j["job_name"] for j in config["scrape_configs"]} <= shipped_jobs  # the shipped job names
        path = workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.log_path = workdir / "prometheus.log"
        self.proc = subprocess.Popen(
            [binary, f"--config.file={path}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT, cwd=workdir,
        )

    def dead(self) -> Optional[str]:
        return None if self.proc.poll() is None else self.log_path.read_text(errors="replace")

    def api(self, path: str, **params: str) -> Any:
        code, body = http_get(f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}")
        assert code == 200, body
        doc = json.loads(body)
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.api("query", query=expr)["result"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def prometheus_factory(prometheus_bin: str, tmp_path: Path) -> Iterator[Callable[..., Prometheus]]:
    started: list[Prometheus] = []

    def start(scorer_port: int, extra_jobs: Optional[dict[str, int]] = None) -> Prometheus:
        p = Prometheus(prometheus_bin, tmp_path, scorer_port, extra_jobs)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def test_prometheus_scrapes_a_running_scorer(
    settings_factory: Callable[..., Settings], scorer_process: Callable[..., ScorerProcess],
    example_model: tuple[Path, Path], prometheus_factory: Callable[[int], Prometheus],
) -> None:
    model, ref = example_model
    s = settings_factory(model=model, reference=ref, batch_size=64)
    records, valid, outliers = mixed_stream(ref, 120, 5)
    produce(s, s.topics.samples_topic, records)
    scorer = scorer_process(s)
    # everything consumed: predictions + review cover every valid sample
    scored = len(valid) + len(outliers)

    def all_scored() -> Optional[str]:
        text = scorer.metrics()
        total = sum(metric_value(text, "triage_samples_total", route=r) for r in ("predictions", "review"))
        return text if total >= scored else None

    wait_until(all_scored, "the scorer to score the stream", alive=scorer.dead)
    prom = prometheus_factory(scorer.metrics_port)
    wait_until(lambda: "ok" if http_get(f"http://127.0.0.1:{prom.port}/-/ready")[0] == 200 else None,
               "prometheus to be ready", alive=prom.dead)

    def series(expr: str) -> Callable[[], Optional[list[dict[str, Any]]]]:
        return lambda: prom.query(expr) or None

    up = wait_until(series('up{job="triage-scorer"} == 1'), "the scorer target to be up", alive=prom.dead)
    assert up[0]["metric"]["instance"] == f"127.0.0.1:{scorer.metrics_port}"
    routed = wait_until(series('sum(triage_samples_total{route=~"predictions|review"})'), "triage_samples_total", alive=prom.dead)
    assert float(routed[0]["value"][1]) == scored
    by_reason = {r["metric"]["reason"] for r in prom.query('triage_samples_total{route="review"}')}
    assert "outlier" in by_reason
    assert float(prom.query("sum(triage_dlq_records_total)")[0]["value"][1]) > 0
    assert prom.query("triage_confidence_count")[0]["value"][1] == str(scored)
    assert prom.query("triage_model_info")[0]["metric"]["version"]
    ready = wait_until(series("triage_ready == 1"), "triage_ready to be scraped as 1", alive=prom.dead)
    assert ready

    # the server loaded every rule from deploy/prometheus/alerts.yml and evaluates them
    rules = prom.api("rules")["groups"]
    loaded = {r["name"] for g in rules for r in g["rules"]}
    shipped = {r.get("alert") or r["record"] for g in yaml.safe_load((PROM_DIR / "alerts.yml").read_text())["groups"] for r in g["rules"]}
    assert loaded == shipped
    assert all(r.get("health") in ("ok", "unknown") for g in rules for r in g["rules"])


def test_prometheus_scrapes_the_audit_consumer_under_its_shipped_job(
    settings_factory: Callable[..., Settings], prometheus_factory: Callable[..., Prometheus], tmp_path: Path,
) -> None:
    """The accepted-accuracy alerts need the audit consumer scraped: its job is up and its
    triage_risk_alpha (the alerts' target) arrives with job="triage-audit"."""
    s = settings_factory()
    audit = TriageProcess(s, ["audit"], tmp_path, "audit")
    try:
        audit.metrics()
        job = BY_COMMAND["audit"].job
        prom = prometheus_factory(free_port(), {job: audit.metrics_port})  # no scorer: only audit matters here
        wait_until(lambda: "ok" if http_get(f"http://127.0.0.1:{prom.port}/-/ready")[0] == 200 else None,
                   "prometheus to be ready", alive=prom.dead)
        up = wait_until(lambda: prom.query(f'up{{job="{job}"}} == 1') or None, "the audit target to be up", alive=prom.dead)
        assert up[0]["metric"]["instance"] == f"127.0.0.1:{audit.metrics_port}"
        alpha = wait_until(lambda: prom.query(f'triage_risk_alpha{{job="{job}"}}') or None, "triage_risk_alpha", alive=prom.dead)
        assert float(alpha[0]["value"][1]) == s.policy.risk_alpha
    finally:
        audit.stop()
