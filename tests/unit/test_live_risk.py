"""Live re-certification from the audit slice: the pure procedure, its validity over hundreds of
seeds, and the audit consumer's control (refusals, restarts) on a registry directory."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from consumers.audit import AuditConsumer
from triage.contracts import Label, ReviewRequest, ScoreFields, encode
from triage.lifecycle.labelstore import UNDO
from triage.lifecycle.registry import Registry
from triage.metrics import AuditMetrics
from triage.policies.live_risk import (
    Change, LiveRows, VersionRows, ceiling_at, decide, default_min_rows, uncertainty_of,
)
from triage.policies.risk import NEVER, RiskRule, clopper_pearson_upper
from triage.policies.stack import PolicyStack
from triage.records import RecordBatch
from triage.scoring.scores import scores_from_probs
from triage.settings import PolicySettings, Settings

ALPHA, DELTA = 0.05, 0.1
MIN_ROWS = default_min_rows(ALPHA, DELTA)


def _rows(u: np.ndarray, wrong: np.ndarray, ts_ms: np.ndarray | None = None) -> VersionRows:
    rows = VersionRows()
    for i, (ui, wi) in enumerate(zip(u, wrong)):
        rows.u[f"s{i}"], rows.wrong[f"s{i}"] = float(ui), bool(wi)
        rows.ts_ms[f"s{i}"] = 0 if ts_ms is None else int(ts_ms[i])
    return rows


def _decide(rows: VersionRows, base: float = 0.6, history: tuple[Change, ...] = (), **kw: Any):  # type: ignore[no-untyped-def]
    return decide("v1", rows, base=base, history=list(history), alpha=kw.pop("alpha", ALPHA), delta=DELTA,
                  min_rows=kw.pop("min_rows", MIN_ROWS), settle_ms=kw.pop("settle_ms", 1000))


@given(st.lists(st.floats(0.001, 1.0), min_size=2, max_size=6), st.sampled_from(["least-confidence", "margin", "entropy"]))
def test_uncertainty_from_a_review_request_is_the_scorers(weights: list[float], acquisition: str) -> None:
    probs = np.array([weights]) / sum(weights)
    s = scores_from_probs(probs, acquisition)  # type: ignore[arg-type]
    got = uncertainty_of(acquisition, float(s.confidence[0]), float(s.margin[0]), float(s.entropy[0]))  # type: ignore[arg-type]
    assert got == float(s.uncertainty[0])


def test_min_rows_is_where_one_error_still_certifies() -> None:
    assert clopper_pearson_upper(1, MIN_ROWS, DELTA) <= ALPHA < clopper_pearson_upper(1, MIN_ROWS - 1, DELTA)


def test_a_rows_ceiling_is_the_lowest_threshold_a_scorer_may_have_drawn_it_under() -> None:
    history = [Change(0.4, 10_000), Change(NEVER, 20_000), Change(0.5, 30_000)]
    assert ceiling_at(5_000, 0.6, history, 1000) == 0.6
    assert ceiling_at(10_500, 0.6, history, 1000) == 0.4  # within the settle time of the change: the lower
    assert ceiling_at(12_000, 0.6, history, 1000) == 0.4
    assert ceiling_at(20_500, 0.6, history, 1000) == 0.4  # nothing is drawn under NEVER
    assert ceiling_at(30_500, 0.6, history, 1000) == 0.5  # after NEVER, only the new one could draw it
    assert ceiling_at(40_000, 0.6, history, 1000) == 0.5


def test_rows_join_once_per_id_latest_label_wins_and_undo_withdraws() -> None:
    live = LiveRows()
    live.add_label("a", "7")  # before its audit
    live.add_audit("a", "v1", 0.1, "7", 1)
    live.add_audit("a", "v1", 0.1, "7", 2)  # redelivered
    live.add_audit("b", "v1", 0.2, "3", 3)
    live.add_label("b", "3")
    live.add_label("b", "3")  # published twice
    assert len(live.versions["v1"]) == 2 and not any(live.versions["v1"].wrong.values())
    live.add_label("b", "5")  # corrected
    assert live.versions["v1"].wrong == {"a": False, "b": True}
    live.add_label("b", None)  # undo
    assert list(live.versions["v1"].wrong) == ["a"]


def test_a_model_as_good_as_certified_keeps_its_threshold() -> None:
    rng = np.random.default_rng(0)
    u = rng.uniform(0, 0.6, 2000)
    cert = _decide(_rows(u, rng.random(2000) < 0.01))
    assert (cert.action, cert.breach, cert.samples) == ("keep", False, 2000) and cert.upper_bound <= ALPHA


def test_a_drop_breaches_and_tightens_to_what_the_live_rows_certify() -> None:
    rng = np.random.default_rng(1)
    u = rng.uniform(0, 0.6, 2000)
    wrong = rng.random(2000) < np.where(u < 0.3, 0.005, 0.25)  # accuracy fell on the less sure half
    cert = _decide(_rows(u, wrong))
    assert cert.breach and cert.upper_bound > ALPHA and cert.action == "tighten"
    assert 0.2 < cert.target < 0.35
    after = _decide(_rows(u, wrong), history=(Change(cert.target, 1),))  # what a re-run sees: no second move
    assert (after.action, after.breach, after.deployed) == ("keep", False, cert.target)
    assert after.upper_bound <= ALPHA


def test_when_nothing_certifies_auto_accept_stops() -> None:
    rng = np.random.default_rng(2)
    u = rng.uniform(0, 0.6, 300)
    cert = _decide(_rows(u, rng.random(300) < 0.4))
    assert cert.breach and (cert.action, cert.target) == ("tighten", NEVER)


def test_few_rows_with_an_upper_bound_above_alpha_are_not_a_breach_but_a_clear_drop_is() -> None:
    u = np.linspace(0, 0.6, 30)
    one_error = _decide(_rows(u, np.arange(30) == 3))
    assert one_error.upper_bound > ALPHA and not one_error.breach and one_error.action == "keep"
    half_wrong = _decide(_rows(u, np.arange(30) % 2 == 0))  # even the lower bound is above alpha
    assert half_wrong.breach and half_wrong.action == "tighten"


def test_loosening_is_refused_on_fewer_rows_than_required() -> None:
    rng = np.random.default_rng(3)
    u = rng.uniform(0, 0.6, 400)
    rows = _rows(u, np.zeros(400, bool), ts_ms=np.full(400, 1_000))
    history = (Change(0.1, 50_000),)  # tightened after these rows were drawn (at 0.6)
    refused = _decide(rows, history=history, min_rows=1000)
    assert refused.certified > 0.1 and refused.certified_rows < 1000
    assert (refused.action, refused.target) == ("refuse-loosen", 0.1)
    allowed = _decide(rows, history=history)
    assert allowed.action == "loosen" and allowed.target == allowed.certified > 0.1
    assert allowed.certified_rows >= MIN_ROWS


def test_the_certificate_never_reaches_past_the_lowest_ceiling_of_its_rows() -> None:
    rng = np.random.default_rng(4)
    early = rng.uniform(0, 0.6, 1000)
    late = rng.uniform(0, 0.2, 1000)  # drawn after a tighten to 0.2
    rows = _rows(np.r_[early, late], np.zeros(2000, bool), ts_ms=np.r_[np.zeros(1000), np.full(1000, 100_000)])
    cert = _decide(rows, history=(Change(0.2, 50_000),))
    assert cert.certified <= 0.2 and cert.action == "keep"


def _true_risk(lam: float, slope: float) -> float:
    """Error rate among u <= lam when u ~ U(0, 1) and P(wrong | u) = slope * u."""
    return slope * lam / 2 if lam > 0 else 0.0


@pytest.mark.parametrize("tighten_at", [None, 0.5])
def test_live_certificates_hold_over_hundreds_of_seeds(tighten_at: float | None) -> None:
    """P(the live control ends on a threshold whose true risk exceeds alpha) <= delta, within
    3 sd over 300 seeds, for rows drawn under one threshold and across a tighten; a plug-in
    threshold (the empirical risk <= alpha) fails that bound on the same rows."""
    slope, base, seeds, n = 0.2, 0.9, 300, 800
    fails = plugin_fails = 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        ceiling = np.full(n, base) if tighten_at is None else np.r_[np.full(n // 2, base), np.full(n - n // 2, tighten_at)]
        u = rng.uniform(0, 1, n) * ceiling  # a uniform draw of what each epoch accepted
        wrong = rng.random(n) < slope * u
        ts = np.r_[np.zeros(n // 2), np.full(n - n // 2, 10_000)]
        history = () if tighten_at is None else (Change(tighten_at, 5_000),)
        cert = _decide(_rows(u, wrong, ts), base=base, history=history)
        final = cert.target if cert.action == "tighten" else cert.deployed
        fails += _true_risk(final, slope) > ALPHA
        grid = np.sort(u)
        emp = np.cumsum(wrong[np.argsort(u)]) / np.arange(1, n + 1)
        plugin = grid[np.flatnonzero(emp <= ALPHA)[-1]]
        plugin_fails += _true_risk(plugin, slope) > ALPHA
    bound = DELTA + 3 * math.sqrt(DELTA * (1 - DELTA) / seeds)
    print(f"live control: violation rate {fails / seeds:.3f}, plug-in {plugin_fails / seeds:.3f}, bound {bound:.3f}")
    assert fails / seeds <= bound < plugin_fails / seeds


# --- the audit consumer on a registry directory ---------------------------------------------------------


class _Registry(Registry):
    """A registry directory whose v1 manifest certified ``threshold`` (no model bytes needed)."""

    def __init__(self, root: Path, threshold: float) -> None:
        super().__init__(root)
        self.threshold = threshold

    def manifest(self, version: str) -> dict[str, Any]:
        return {"routing": {"risk": {"alpha": ALPHA, "delta": DELTA, "threshold": self.threshold}}}


def _settings(**policy: Any) -> Settings:
    return Settings(review_topic="review", labels_topic="labels", risk_alpha=ALPHA, risk_delta=DELTA,
                    registry_poll_s=1.0, **policy)


def _batch(rng: np.random.Generator, n: int, error: float, *, start: int, ts_ms: int) -> RecordBatch:
    """n audit records of v1 (margin uncertainty uniform below 0.6) and their labels."""
    batch = RecordBatch()
    for i in range(start, start + n):
        u = float(rng.uniform(0, 0.6))
        review = ReviewRequest(f"s{i}", [0.0], "audit", "1", 0.9, ScoreFields(1.0 - u, 0.1, 0.2), 0.1, "v1")
        label = "2" if rng.random() < error else "1"
        batch.append("review", 0, i, ts_ms, None, encode(review))
        batch.append("labels", 0, i, ts_ms, None, encode(Label(f"s{i}", label)))
    return batch


def _consumer(registry: Registry, **policy: Any) -> AuditConsumer:
    return AuditConsumer(_settings(**policy), metrics=AuditMetrics(CollectorRegistry()), registry=registry,
                         clock=lambda: 100.0)


def _replay(consumer: AuditConsumer, *batches: RecordBatch) -> None:
    for batch in batches:
        consumer.handle(batch)
    consumer.after_poll(None)  # caught up


def test_the_consumer_tightens_once_and_a_restart_neither_resets_nor_repeats_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    registry = _Registry(tmp_path, 0.6)
    batches = [_batch(rng, 600, 0.15, start=0, ts_ms=1_000), _batch(rng, 600, 0.15, start=600, ts_ms=2_000)]
    first = _consumer(registry, risk_live_control=True)
    first.handle(batches[0])
    assert registry.live_risk("v1") is None  # replaying: no action before it caught up
    _replay(first, batches[1])
    doc = registry.live_risk("v1")
    assert doc is not None and len(doc["history"]) == 1 and doc["threshold"] < 0.6
    before = first.certificates["v1"]
    assert first.metrics.live_actions.labels(action="tighten")._value.get() == 1

    again = _consumer(registry, risk_live_control=True)  # restart: the same records replayed
    _replay(again, batches[0], batches[0], batches[1])  # a redelivered batch on top
    after = again.certificates["v1"]
    assert registry.live_risk("v1") == doc  # no second change
    assert (after.samples, after.errors, after.deployed) == (before.samples, before.errors, before.deployed)
    assert again.metrics.live_actions.labels(action="tighten")._value.get() == 0
    assert again.metrics.live_threshold.labels(version="v1")._value.get() == doc["threshold"]


def test_without_the_option_the_consumer_exports_but_moves_nothing(tmp_path: Path) -> None:
    registry = _Registry(tmp_path, 0.6)
    consumer = _consumer(registry)
    _replay(consumer, _batch(np.random.default_rng(6), 600, 0.15, start=0, ts_ms=1_000))
    m = consumer.metrics
    assert m.live_upper.labels(version="v1")._value.get() > ALPHA
    assert m.live_samples.labels(version="v1")._value.get() == 600 >= m.live_required._value.get()
    assert registry.live_risk("v1") is None


def test_the_consumer_refuses_to_loosen_on_too_few_rows(tmp_path: Path) -> None:
    registry = _Registry(tmp_path, 0.6)
    registry.write_live_risk("v1", {"alpha": ALPHA, "delta": DELTA, "acquisition": "margin", "threshold": 0.1,
                                    "history": [{"threshold": 0.1, "since_ms": 50_000}]})
    good = _batch(np.random.default_rng(7), 300, 0.0, start=0, ts_ms=1_000)  # drawn at 0.6, before the change
    consumer = _consumer(registry, risk_live_control=True, risk_live_min_rows=1000)
    _replay(consumer, good)
    assert consumer.certificates["v1"].action == "refuse-loosen"
    assert registry.live_risk("v1")["threshold"] == 0.1  # type: ignore[index]
    assert consumer.metrics.live_actions.labels(action="refuse_loosen")._value.get() == 1
    consumer.recertify()  # reported once, not per batch
    assert consumer.metrics.live_actions.labels(action="refuse_loosen")._value.get() == 1
    enough = _consumer(registry, risk_live_control=True)
    _replay(enough, good)
    assert registry.live_risk("v1")["threshold"] > 0.1  # type: ignore[index]


def test_undo_withdraws_a_label_from_the_live_rows(tmp_path: Path) -> None:
    consumer = _consumer(_Registry(tmp_path, 0.6))
    batch = _batch(np.random.default_rng(8), 100, 0.0, start=0, ts_ms=1_000)
    batch.append("labels", 0, 999, 1_000, None, encode(Label("s0", UNDO)))
    _replay(consumer, batch)
    assert consumer.metrics.live_samples.labels(version="v1")._value.get() == 99


def test_the_risk_rule_applies_a_live_threshold_as_a_cap_for_its_version_only() -> None:
    policy = PolicySettings(policy="risk", risk_alpha=ALPHA, risk_delta=DELTA)
    routing = {"risk": {"alpha": ALPHA, "delta": DELTA, "mondrian": False, "threshold": 0.6}, "acquisition": "margin"}
    stack = PolicyStack(policy, RiskRule(policy), routing, version="v1")
    probs = np.array([[0.95, 0.05], [0.75, 0.25], [0.6, 0.4]])  # margin uncertainty 0.1, 0.5, 0.8
    scores = scores_from_probs(probs, "margin")
    assert (stack.decide(scores).reason == 0).tolist() == [True, True, False]
    doc = {"alpha": ALPHA, "delta": DELTA, "acquisition": "margin", "threshold": 0.3}
    stack.set_live_risk("v2", doc)  # another version's: ignored
    assert (stack.decide(scores).reason == 0).tolist() == [True, True, False]
    stack.set_live_risk("v1", doc)
    assert (stack.decide(scores).reason == 0).tolist() == [True, False, False]
    assert stack.snapshot().risk_threshold == 0.3
    stack.set_live_risk("v1", {**doc, "threshold": NEVER})
    assert not (stack.decide(scores).reason == 0).any()
    stack.set_routing(routing, "v2")  # a new version starts from its own certificate
    assert (stack.decide(scores).reason == 0).tolist() == [True, True, False]
