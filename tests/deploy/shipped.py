"""The processes the shipped stack runs and Prometheus scrapes: the single list the compose,
Kubernetes, Prometheus and metric tests agree on. A metric an alert or a panel queries must be
exported by one of these (tests/deploy/test_metrics_exported.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shipped:
    service: str      # docker-compose service
    command: str      # `triage <command>` it runs
    job: str          # Prometheus job_name in deploy/prometheus/prometheus.yml
    port: int         # its /metrics port (TRIAGE_METRICS_PORT) in compose and Kubernetes
    k8s: str          # Kubernetes workload name (Deployment, StatefulSet or CronJob) in deploy/k8s/base/


SHIPPED: tuple[Shipped, ...] = (
    Shipped("scorer", "serve", "triage-scorer", 8000, "triage-scorer"),
    Shipped("retrain", "retrain", "triage-retrain", 8001, "triage-retrain"),
    Shipped("label-studio-bridge", "label-studio", "triage-label-studio", 8002, "triage-label-studio-bridge"),
    Shipped("audit", "audit", "triage-audit", 8003, "triage-audit"),
    Shipped("monitor", "monitor", "triage-monitor", 8004, "triage-monitor"),
)
BY_COMMAND = {s.command: s for s in SHIPPED}

# The bridge's webhook listener (POST /webhook), which Label Studio calls.
BRIDGE_WEBHOOK_PORT = 8091
