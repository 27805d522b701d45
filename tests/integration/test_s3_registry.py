"""The registry on a real S3 server (SeaweedFS ``weed mini``, started by the ``s3`` fixture) and the
embedded broker: train, import, promote, rollback, retrain, racing promotes, scorers that hot-swap
and start with no cache, labels rebuilt from the topic, and an S3 outage as the world's fault."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from consumers.label_rebuild import rebuild_label_store
from consumers.trainer import Trainer
from tests.fixtures import produce, read_all
from tests.helpers import REPO, settings_env, wait_until
from tests.s3server import WeedS3
from triage.contracts import encode, encode_label
from triage.errors import WORLD, ObjectStoreUnavailableError, RegistryError, blame
from triage.lifecycle.bundles import train_initial
from triage.lifecycle.labelstore import MARKERS
from triage.lifecycle.registry import PointerConflict, Registry, open_registry
from triage.settings import Settings


def cli(s: Settings, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **settings_env(s), **(env or {})}
    for key in ("TRIAGE_MODEL", "TRIAGE_REFERENCE"):
        full.pop(key, None)
    return subprocess.run([sys.executable, "-m", "triage", *argv], env=full, cwd=REPO, capture_output=True,
                          text=True, timeout=600)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture
def s3_v1(s3: WeedS3, tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]) -> Registry:
    """A fresh s3:// registry whose CURRENT is v1 (300 digits, 80% held out, as the directory template)."""
    X, y = digits
    reg = open_registry(s3.url(), cache_dir=tmp_path / "cache")
    s = Settings(holdout_fraction=0.8)
    train_initial(X[:300], y[:300], reg, retrain=s.retrain, policy=s.policy,
                  outlier_quantile=s.serving.outlier_quantile, progress=lambda m: None)
    return reg


def same_bytes_bundle(reg: Registry, source: str = "v1") -> str:
    manifest = {k: v for k, v in reg.manifest(source).items() if k not in ("version", "sha256", "path", "status")}
    return reg.add_bundle(reg.model_path(source).read_bytes(), manifest, reg.canary(source))


def test_unknown_schemes_are_refused_and_never_become_directories(settings_factory: Callable[..., Settings],
                                                                  tmp_path: Path) -> None:
    s = settings_factory()
    for location, says in (("gs://bucket/reg", "unsupported scheme 'gs'"),
                           ("s3://B/reg", "is not s3://bucket[/prefix]"),
                           ("s3:reg", "is not s3://bucket[/prefix]")):
        r = cli(s, "models", "list", "--registry", location)
        assert r.returncode != 0 and says in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    assert not (REPO / "s3:").exists() and not (REPO / "gs:").exists()
    with pytest.raises(Exception, match="unsupported scheme"):
        Registry(Path("gs://bucket/x"))


def test_train_import_promote_rollback_through_the_cli(s3: WeedS3, settings_factory: Callable[..., Settings],
                                                       tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = digits
    s = settings_factory()
    url = s3.url("cli")
    data = tmp_path / "digits.npz"
    np.savez(data, X=X[:300], y=y[:300])
    ok(cli(s, "train", "--data", str(data), "--registry", url, "--holdout-fraction", "0.5"))
    assert not (REPO / "s3:").exists()
    reg = open_registry(url, cache_dir=tmp_path / "c")
    assert reg.current() == "v1" and reg.history() == ["v1"]
    # the bytes really are in the bucket: a fresh cache verifies and loads them
    assert reg.verify("v1")["sha256"] == reg.manifest("v1")["sha256"]

    model = tmp_path / "v1.onnx"
    model.write_bytes(reg.model_path("v1").read_bytes())
    ref = tmp_path / "ref.npz"
    np.savez(ref, X=X[300:600], y=y[300:600])
    out = ok(cli(s, "models", "import", "--registry", url, "--model", str(model), "--reference", str(ref), "--promote"))
    assert "imported" in out and reg.current() == "v2" and reg.history() == ["v1", "v2"]
    assert reg.manifest("v1")["status"] == "previous" and reg.manifest("v2")["status"] == "current"
    ok(cli(s, "models", "promote", "v1", "--registry", url))
    assert reg.current() == "v1" and reg.history() == ["v2", "v1"]
    ok(cli(s, "models", "rollback", "--registry", url))
    assert reg.current() == "v2" and reg.history() == ["v2"]
    assert reg.manifest("v1")["status"] == "rejected"
    listing = ok(cli(s, "models", "list", "--registry", url))
    assert "* " in listing and "v2" in listing and "rejected" in listing
    # every promote and rollback was announced on the models topic
    events = [json.loads(r["value"]) for r in read_all(s, [s.topics.models_topic], expect=3)]
    assert sorted((e["action"], e["version"]) for e in events) == [("promote", "v1"), ("promote", "v2"), ("rollback", "v2")]


def test_two_racing_promotes_leave_one_winner_and_a_consistent_history(
        s3_v1: Registry, settings_factory: Callable[..., Settings]) -> None:
    s = settings_factory()
    v2, v3 = same_bytes_bundle(s3_v1), same_bytes_bundle(s3_v1)
    racers = [subprocess.Popen([sys.executable, "-m", "triage", "models", "promote", v, "--expect", "v1",
                                "--registry", s3_v1.location], env={**os.environ, **settings_env(s)},
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for v in (v2, v3)]
    results = [(p.wait(300), p.stderr.read() if p.stderr else "") for p in racers]
    winners = [v for v, (code, _) in zip((v2, v3), results) if code == 0]
    assert len(winners) == 1, results
    loser_err = next(err for code, err in results if code != 0)
    assert "lost a race" in loser_err or "CURRENT moved" in loser_err, loser_err
    winner = winners[0]
    loser = v3 if winner == v2 else v2
    assert s3_v1.current() == winner and s3_v1.history() == ["v1", winner]
    assert s3_v1.manifest(winner)["status"] == "current" and s3_v1.manifest("v1")["status"] == "previous"
    assert s3_v1.manifest(loser)["status"] == "candidate"


def test_in_flight_promotes_race_on_the_conditional_write(s3_v1: Registry, tmp_path: Path) -> None:
    """Without --expect: both read CURRENT before either writes (a barrier between the read and
    the conditional write); exactly one write lands."""
    v2, v3 = same_bytes_bundle(s3_v1), same_bytes_bundle(s3_v1)
    regs = [open_registry(s3_v1.location, cache_dir=tmp_path / f"c{i}") for i in range(2)]
    barrier = threading.Barrier(2)
    outcomes: dict[str, Any] = {}
    for reg in regs:
        read = reg._pointer

        def pointer(read: Any = read, first: list[bool] = [True]) -> Any:  # noqa: B006 - one flag per registry
            got = read()
            if first.pop() if first else False:  # only the promote's own read waits for the other
                barrier.wait(60)
            return got

        reg._pointer = pointer  # type: ignore[method-assign]

    def promote(reg: Registry, version: str) -> None:
        try:
            outcomes[version] = reg.promote(version)["version"]
        except PointerConflict as exc:
            outcomes[version] = exc

    threads = [threading.Thread(target=promote, args=(r, v)) for r, v in zip(regs, (v2, v3))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    won = [v for v, o in outcomes.items() if o == v]
    assert len(won) == 1 and sum(isinstance(o, PointerConflict) for o in outcomes.values()) == 1, outcomes
    assert s3_v1.current() == won[0] and s3_v1.history() == ["v1", won[0]]


class _AnswerLost:
    """The real S3 client, except that a conditional PUT is sent twice, as botocore retries one
    whose answer was lost (a read timeout, a 5xx from a proxy) after it landed: the caller sees
    the retry's answer, the server's 412."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def put_object(self, **kwargs: Any) -> Any:
        if "IfMatch" in kwargs or "IfNoneMatch" in kwargs:
            self.real.put_object(**kwargs)
        return self.real.put_object(**kwargs)


def test_a_conditional_write_retried_after_it_landed_is_its_own_success(s3_v1: Registry, tmp_path: Path) -> None:
    """It was read as another writer's win: the label store wrote the rows again under the next
    segment, and a promote that had moved CURRENT said nothing changed."""
    reg = open_registry(s3_v1.location, cache_dir=tmp_path / "cache")
    reg.store._s3 = _AnswerLost(reg.store._s3)  # type: ignore[attr-defined]
    store = reg.label_store()
    rows = [{"id": f"s{i}", "label": "3", "features": [0.0] * 64, "annotator": "a", "partition": 0, "offset": i}
            for i in range(3)]
    assert store.append(rows) == 3
    fresh = open_registry(s3_v1.location, cache_dir=tmp_path / "fresh").label_store()
    assert fresh.count() == 3 and [r["offset"] for _, r in fresh.rows()] == [0, 1, 2]
    v2 = same_bytes_bundle(s3_v1)
    assert reg.promote(v2)["version"] == v2
    assert s3_v1.current() == v2 and s3_v1.history() == ["v1", v2]
    assert s3_v1.manifest(v2)["status"] == "current" and s3_v1.manifest("v1")["status"] == "previous"


def test_two_writers_of_identical_bytes_each_know_whose_write_landed(s3_v1: Registry, tmp_path: Path) -> None:
    """Comparing bytes could not tell them apart: a second import of the same model took the
    first one's version number, wrote its canary over the first one's, then failed."""
    a = open_registry(s3_v1.location, cache_dir=tmp_path / "a")
    b = open_registry(s3_v1.location, cache_dir=tmp_path / "b")
    assert a.store.create("probe", b"same") and not b.store.create("probe", b"same")  # type: ignore[attr-defined]
    stale = iter(["v2"])  # b picked its number before a's bundle was written
    real_next = b.next_version
    b.next_version = lambda: next(stale, None) or real_next()  # type: ignore[method-assign]
    va = same_bytes_bundle(a)
    vb = same_bytes_bundle(b)
    assert (va, vb) == ("v2", "v3")
    assert s3_v1.verify("v2")["version"] == "v2" and s3_v1.verify("v3")["version"] == "v3"


class _FirstTryLate(_AnswerLost):
    """The first conditional PUT is still in flight when its retry arrives: the retry gets 409
    (ConditionalRequestConflict), and the first lands before the next listing."""

    in_flight: Any = None

    def put_object(self, **kwargs: Any) -> Any:
        if "IfNoneMatch" not in kwargs or hasattr(self, "sent"):
            return self.real.put_object(**kwargs)
        import botocore.exceptions

        self.sent = self.in_flight = kwargs
        raise botocore.exceptions.ClientError(
            {"Error": {"Code": "ConditionalRequestConflict", "Message": "in flight"},
             "ResponseMetadata": {"HTTPStatusCode": 409}}, "PutObject")

    def get_paginator(self, name: str) -> Any:
        if self.in_flight is not None:
            late, self.in_flight = self.in_flight, None
            try:
                self.real.put_object(**late)
            except Exception:  # noqa: BLE001 - the key was written meanwhile: the late try fails its condition
                pass
        return self.real.get_paginator(name)


def test_a_409_is_sent_again_and_a_first_try_that_lands_late_is_this_write(s3_v1: Registry, tmp_path: Path) -> None:
    """It was taken as lost: the rows went again under the next segment, and the late first
    try landed too."""
    reg = open_registry(s3_v1.location, cache_dir=tmp_path / "cache")
    reg.store._s3 = proxy = _FirstTryLate(reg.store._s3)  # type: ignore[attr-defined]
    store = reg.label_store()
    rows = [{"id": f"s{i}", "label": "3", "features": [0.0] * 64, "annotator": "a", "partition": 0, "offset": i}
            for i in range(3)]
    assert store.append(rows) == 3
    assert len(store.segments()) == 1 and store.count() == 3
    assert proxy.in_flight is None  # it did land (or fail its condition) before that listing


def test_a_process_that_read_the_label_store_reads_it_anew_after_a_rebuild_replaced_it(
        s3_v1: Registry, tmp_path: Path) -> None:
    """Segments were cached by key, but a rebuild deletes them and numbers its own from 1 again:
    a running retrain job kept training on the rows it had read."""
    def rows(label: str, n: int) -> list[dict[str, Any]]:
        return [{"id": f"s{i}", "label": label, "features": [0.0] * 64, "annotator": "a", "partition": 0,
                 "offset": i} for i in range(n)]

    job = open_registry(s3_v1.location, cache_dir=tmp_path / "job").label_store()
    job.append(rows("3", 2))
    assert [r["label"] for _, r in job.rows()] == ["3", "3"]
    operator = open_registry(s3_v1.location, cache_dir=tmp_path / "cli").label_store()
    operator.clear()
    operator.append(rows("5", 3))
    assert job.count() == 3 and [r["label"] for _, r in job.rows()] == ["5", "5", "5"]


def test_scorer_with_no_cache_serves_current_and_hot_swaps_without_loss(
        s3_v1: Registry, settings_factory: Callable[..., Settings], scorer_process: Callable[..., Any],
        tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = digits
    v2 = same_bytes_bundle(s3_v1)
    s3_v1.promote(v2)  # CURRENT is v2 before any scorer exists
    s = settings_factory(registry_poll_s=2.0)
    cache = tmp_path / "empty-cache"
    proc = scorer_process(s, "--registry", s3_v1.location, "--registry-cache", str(cache))
    wait_until(lambda: proc.metric("triage_model_info", version=v2) == 1, "the scorer to serve v2", alive=proc.dead)
    assert (cache / "models" / v2 / "model.onnx").exists()
    first = [(f"d{i}".encode(), encode({"id": f"d{i}", "features": X[i].tolist()})) for i in range(0, 300)]
    produce(s, s.topics.samples_topic, first)
    v3 = same_bytes_bundle(s3_v1)
    ok(cli(s, "models", "promote", v3, "--registry", s3_v1.location))
    wait_until(lambda: proc.metric("triage_model_info", version=v3) == 1, "the scorer to swap to v3", alive=proc.dead)
    second = [(f"d{i}".encode(), encode({"id": f"d{i}", "features": X[i].tolist()})) for i in range(300, 600)]
    produce(s, s.topics.samples_topic, second)
    out = read_all(s, s.topics.outputs(), expect=600)
    docs = [json.loads(r["value"]) for r in out if r["topic"] != s.topics.dlq_topic]
    assert {d["id"] for d in docs} == {k.decode() for k, _ in first + second}, "a sample was lost"
    assert all(d["model_version"] == v3 for d in docs if int(d["id"][1:]) >= 300)
    assert proc.metric("triage_model_swaps_total", result="success") == 1


def retrain(s: Settings, reg: Registry) -> Any:
    """One run of a fresh retrain job (a stateless pod: nothing but the registry and the topics)."""
    trainer = Trainer(s, reg, progress=lambda m: None)
    try:
        return trainer.run_once()
    finally:
        trainer.close()


def _labels(X: np.ndarray, y: np.ndarray, ids: range) -> list[tuple[bytes, bytes]]:
    return [(f"l{i}".encode(), encode_label(f"l{i}", str(int(y[i])), annotator="t", features=X[i].tolist()))
            for i in ids]


def test_retrain_on_s3_then_rebuild_the_lost_label_store_and_train_on_the_same_rows(
        s3_v1: Registry, settings_factory: Callable[..., Settings], digits: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = digits
    s = settings_factory(min_new_labels=20)
    labels = _labels(X, y, range(300, 420))
    labels[5:5] = [(b"l300", encode_label("l300", "__undo__", annotator="t"))]  # an undo is rebuilt too
    produce(s, s.topics.labels_topic, labels)
    outcome = retrain(s, s3_v1)
    assert outcome.outcome in ("promoted", "rejected"), outcome
    assert outcome.folded == len(labels)
    store = s3_v1.label_store()
    original = [row for _, row in store.rows()]
    before = store.arrays(None, s.retrain.eval_label_share)
    aggregated = store.arrays(None, s.retrain.eval_label_share, s.quality.aggregation)
    marks = sum(row["label"] in MARKERS for row in original)  # relabel requests the retrain sent
    assert len(original) == len(labels) + marks and store.count() == len(original)
    assert [k for k in s3_v1.store.keys("data/labels/")], "the label store's segments are in the bucket"

    # lose the label data, rebuild from the topic alone
    for key in list(s3_v1.store.keys("data/labels/")):
        s3_v1.store.delete(key)
    assert s3_v1.label_store().count() == 0
    report = rebuild_label_store(s, s3_v1, progress=lambda m: None)
    rebuilt_store = s3_v1.label_store()
    rebuilt = [row for _, row in rebuilt_store.rows()]
    assert report.rows == len(original)
    key = lambda r: (r["partition"], r["offset"])  # noqa: E731
    assert rebuilt == sorted(original, key=key), "the same rows, in (partition, offset) order"
    after = rebuilt_store.arrays(None, s.retrain.eval_label_share)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)  # the next retrain trains on exactly the same rows
    for a, b in zip(aggregated, rebuilt_store.arrays(None, s.retrain.eval_label_share, s.quality.aggregation)):
        np.testing.assert_array_equal(a, b)  # holds included

    # the retrain job does not store them twice, and takes new labels on top
    more = _labels(X, y, range(420, 450))
    produce(s, s.topics.labels_topic, more)
    outcome = retrain(s, s3_v1)
    assert outcome.folded == len(more), outcome
    rows = [row for _, row in s3_v1.label_store().rows()]
    assert sum(row["label"] not in MARKERS for row in rows) == len(labels) + len(more)


def test_retrain_rebuilds_a_missing_store_by_itself(
        s3_v1: Registry, settings_factory: Callable[..., Settings], digits: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = digits
    s = settings_factory(min_new_labels=20)
    labels = _labels(X, y, range(300, 360))
    produce(s, s.topics.labels_topic, labels)
    first = retrain(s, s3_v1)
    assert first.outcome == "promoted", first
    for key in list(s3_v1.store.keys("data/labels/")):
        s3_v1.store.delete(key)
    # a new retrain job (a stateless pod) finds the store empty while CURRENT was trained on labels
    second = retrain(s, s3_v1)
    assert second.outcome == "skipped" and second.folded == 0, second
    assert sum(row["label"] not in MARKERS for _, row in s3_v1.label_store().rows()) == len(labels)


def test_s3_stopped_mid_operation_is_the_worlds_fault(tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]) -> None:
    """A private server, stopped under a registry and a label store, then started again."""
    with WeedS3(tmp_path / "own").running() as server:
        X, y = digits
        reg = open_registry(server.url(), cache_dir=tmp_path / "cache")
        s = Settings(holdout_fraction=0.8)
        train_initial(X[:300], y[:300], reg, retrain=s.retrain, policy=s.policy,
                      outlier_quantile=s.serving.outlier_quantile, progress=lambda m: None)
        store = reg.label_store()
        row = {"id": "a", "label": "1", "features": X[0].tolist(), "annotator": None, "partition": 0, "offset": 0}
        server.stop()
        for attempt in (lambda: reg.current(), lambda: store.append([row]), lambda: reg.promote("v1"),
                        lambda: reg.verify("v1")):
            with pytest.raises(ObjectStoreUnavailableError) as caught:
                attempt()
            assert caught.value.retriable and blame(caught.value) == WORLD  # held and retried, never poison
            assert isinstance(caught.value, RegistryError)
        server.start()
        assert store.append([row]) == 1 and store.count() == 1  # the retry lands once
        assert reg.current() == "v1"


def test_a_watcher_retries_a_version_its_full_cache_disk_could_not_take(
        s3_v1: Registry, tmp_path: Path, settings_factory: Callable[..., Settings]) -> None:
    """ENOSPC writing the scorer's cache (a full emptyDir) is the world's fault: it refused the
    version until the scorer restarted."""
    from consumers.model_watcher import ModelWatcher
    from consumers.scorer import Scorer
    from tests.reliability.world import small_fs
    from triage.lifecycle.loading import serving_model_from_registry

    s = settings_factory(registry=s3_v1.location)
    cache = tmp_path / "scorer-cache"
    cache.mkdir()
    scorer_reg = open_registry(s3_v1.location, cache_dir=cache)
    scorer = Scorer(s, serving_model_from_registry(scorer_reg, "v1", s.serving))
    watcher = ModelWatcher(s, scorer_reg, scorer)
    v2 = same_bytes_bundle(s3_v1)
    s3_v1.promote(v2)
    with small_fs(cache, size="64k") as fs:
        fs.fill()
        assert watcher.sync() is None and scorer.pending_version is None
        assert scorer.metrics.refusals.labels(reason="registry")._value.get() == 1
        fs.free()
        assert watcher.sync() is not None and scorer.pending_version == v2


def test_a_watcher_retries_a_version_it_could_not_fetch_while_s3_was_down(
        tmp_path: Path, settings_factory: Callable[..., Settings], digits: tuple[np.ndarray, np.ndarray]) -> None:
    from consumers.model_watcher import ModelWatcher
    from consumers.scorer import Scorer
    from triage.lifecycle.loading import serving_model_from_registry

    with WeedS3(tmp_path / "own").running() as server:
        X, y = digits
        reg = open_registry(server.url(), cache_dir=tmp_path / "cache")
        base = Settings(holdout_fraction=0.8)
        train_initial(X[:300], y[:300], reg, retrain=base.retrain, policy=base.policy,
                      outlier_quantile=base.serving.outlier_quantile, progress=lambda m: None)
        s = settings_factory(registry=reg.location)
        scorer_reg = open_registry(reg.location, cache_dir=tmp_path / "scorer-cache")  # the scorer's own cache
        scorer = Scorer(s, serving_model_from_registry(scorer_reg, "v1", s.serving))
        watcher = ModelWatcher(s, scorer_reg, scorer)
        v2 = same_bytes_bundle(reg)
        reg.promote(v2)
        original_get = scorer_reg.store.get

        def flaky_get(key: str) -> Any:  # S3 goes away between reading CURRENT and fetching the bytes
            if key.endswith("model.onnx"):
                server.stop()
            return original_get(key)

        scorer_reg.store.get = flaky_get  # type: ignore[method-assign]
        assert watcher.sync() is None and scorer.pending_version is None
        assert scorer.metrics.refusals.labels(reason="registry")._value.get() == 1
        scorer_reg.store.get = original_get  # type: ignore[method-assign]
        server.start()
        # not refused for good: the world's fault is retried (the first reads after a restart may
        # still miss objects the server has not reloaded yet, hence a bounded wait)
        wait_until(lambda: (watcher.sync(), scorer.pending_version)[1] == v2, "the watcher to fetch v2 once S3 is back")

