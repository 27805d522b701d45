"""Metric names the alert rules and the dashboard query, and the Label Studio bridge's metric
contract. (What a /metrics page exports: ``tests.helpers.exported``.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

import yaml

from tests.helpers import SUFFIXES

METRIC = re.compile(r"\btriage_[a-zA-Z0-9_]*[a-zA-Z0-9]")


def rule_exprs(rules_path: Path) -> list[str]:
    doc = yaml.safe_load(rules_path.read_text())
    return [r["expr"] for g in doc["groups"] for r in g["rules"]]


def dashboard_exprs(dashboard_path: Path) -> list[str]:
    """Every ``expr`` in the dashboard: panel targets and annotation queries."""
    return list(_find_exprs(json.loads(dashboard_path.read_text())))


def _find_exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from _find_exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _find_exprs(item)


def referenced(exprs: list[str]) -> set[str]:
    return {m.group(0) for e in exprs for m in METRIC.finditer(e)}


# The contract of `triage label-studio` (the Label Studio bridge): family name -> type and label
# names. The dashboard is built against these; once the bridge is merged, the metric tests
# check that a running bridge declares every one of them (its /metrics page), until then they
# stand in for its exports.
LABEL_STUDIO_BRIDGE_METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "triage_labelstudio_tasks_created": ("counter", ()),
    "triage_labelstudio_tasks_existing": ("counter", ()),
    "triage_labelstudio_labels_published": ("counter", ("source", "kind")),  # webhook|reconcile, label|undo
    "triage_labelstudio_open_tasks": ("gauge", ()),
    "triage_labelstudio_reconcile_lag_seconds": ("gauge", ()),
    "triage_labelstudio_errors": ("counter", ("operation",)),
    "triage_labelstudio_invalid": ("counter", ("reason",)),
    "triage_records_consumed": ("counter", ("loop",)),  # loop="label-studio"
    "triage_internal_errors": ("counter", ("loop",)),
    "triage_ready": ("gauge", ()),
}


def contract_names(contract: dict[str, tuple[str, tuple[str, ...]]]) -> set[str]:
    """Series names the contract's families produce (counter x -> x_total, ...)."""
    return {name + suffix for name, (kind, _) in contract.items() for suffix in SUFFIXES[kind]}
