#!/usr/bin/env python
"""Differential fuzzing: the OLD decoders and handlers (a worktree of an older commit) against
the NEW contract layer, on records generated from the contract schemas.

    git -C /work/main worktree add /tmp/old-triage eabfef3
    .venv/bin/python scripts/fuzz_old_vs_new.py [--old /tmp/old-triage] [--n 3000] [--seed 20240601]

The parent process (this checkout) generates ``--n`` records per kind (sample, label, review,
model_event) with ``tests.contract_strategies.cases`` under a fixed hypothesis seed and asks
the new contract layer for each verdict. A worker subprocess, with the old worktree first on
``sys.path`` and nothing of this checkout importable, runs every record through the old code:

    sample       triage.codec.decode_sample / decode_samples, handlers.process_batch
                 (bundled example model, threshold policy)
    label        triage.codec.decode_label, the old retrain join rules, a one-row old
                 LabelStore written and read back; the old audit consumer's handle
    review       the old retrain join index (Trainer._read_review), the old audit consumer's
                 handle, the old annotator console's fetch (fake consumer)
    model_event  the old ModelWatcher._validate (json.loads + registry path check)
    labelstore   the old LabelStore with a torn last line (an append cut short by a crash)

and reports what the old code mishandled: raised something other than an InputError (which,
in the old processes, killed the loop or thread: the scorer crash-looped on the record, the
watcher thread died silently), accepted what the new contract rejects, or refused what it
accepts; a worker that dies or hangs on a record is reported as ``died``. The summary is one
row per (kind, failure class) with the count and the shortest example.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import pickle
import re
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Optional

FC = 64
MAX_BYTES = 100_000
CLASSES = [str(c) for c in range(10)]
KINDS = ("sample", "label", "review", "model_event")
WORKER_STALL_S = 120.0


# =================================================================================================
# worker: runs with the OLD worktree first on sys.path; imports nothing from this checkout
# =================================================================================================


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:160]}"


def worker(old: str, records_path: str, start: int, out_path: str, registry_root: str) -> None:
    sys.path.insert(0, old)
    import logging

    logging.disable(logging.CRITICAL)
    import triage

    assert Path(triage.__file__).resolve().is_relative_to(Path(old).resolve()), triage.__file__
    import numpy as np  # noqa: F401  (loaded before the old modules, like the old processes)

    from consumers.annotator import Console
    from consumers.audit import AuditConsumer
    from consumers.model_watcher import ModelWatcher
    from consumers.trainer import Trainer
    from triage import codec, handlers
    from triage.examples import example_paths
    from triage.errors import InputError, LabelError, TriageError
    from triage.lifecycle.labelstore import EDGE_CASE, UNDO, LabelStore
    from triage.policies import make_policy
    from triage.records import RecordBatch
    from triage.lifecycle.registry import Registry
    from triage.lifecycle.loading import serving_model_from_file
    from triage.settings import Settings

    model_path, ref = example_paths()
    settings = Settings(model=model_path, reference=ref, max_message_bytes=MAX_BYTES, samples_topic="samples",
                        review_topic="review", labels_topic="labels", predictions_topic="predictions",
                        dlq_topic="dlq")
    model = serving_model_from_file(settings.serving, settings.policy)
    policy = make_policy(settings, model)
    registry = Registry(Path(registry_root))
    audit = AuditConsumer(settings)
    store_dir = Path(tempfile.mkdtemp(prefix="old-labelstore-"))
    # one training row and one held-out row, so that arrays() of a store with one more row is defined
    from triage.lifecycle.labelstore import is_eval_id

    train_id = next(f"anchor-{n}" for n in range(100) if not is_eval_id(f"anchor-{n}", 5))
    eval_id = next(f"anchor-{n}" for n in range(100) if is_eval_id(f"anchor-{n}", 5))
    anchors = [{"id": i, "label": "1", "features": [0.5] * FC} for i in (train_id, eval_id)]

    class FakeConsumer:
        def __init__(self) -> None:
            self.batch = RecordBatch()

        def poll_batch(self, max_records: int, timeout_ms: int) -> RecordBatch:
            batch, self.batch = self.batch, RecordBatch()
            return batch

        def commit(self, offsets: Any) -> None:
            pass

    def one(topic: str, value: Optional[bytes]) -> RecordBatch:
        batch = RecordBatch()
        batch.append(topic, 0, 0, 1_700_000_000_000, b"k", value)
        return batch

    def run(name: str, fn: Any, out: dict[str, Any]) -> Any:
        try:
            return fn()
        except InputError as exc:
            out[name] = ["refused", exc.stage, exc.message[:200]]
        except RecursionError as exc:
            out[name] = ["crash", "RecursionError", _short(exc)]
        except Exception as exc:  # noqa: BLE001 - that is what we are looking for
            out[name] = ["crash", type(exc).__name__, _short(exc)]
        return None

    def audit_kind(topic: str, value: Optional[bytes], out: dict[str, Any]) -> None:
        before = {k: audit.metrics.records.labels(kind=k)._value.get() for k in ("audit", "label", "other")}

        def go() -> None:
            audit.handle(one(topic, value))
            after = {k: audit.metrics.records.labels(kind=k)._value.get() for k in before}
            out["audit.handle"] = ["ok", next((k for k in before if after[k] > before[k]), "?")]

        run("audit.handle", go, out)

    def sample(value: Optional[bytes]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if run("codec.decode_sample", lambda: codec.decode_sample(value, FC, MAX_BYTES), out) is not None:
            out["codec.decode_sample"] = ["ok"]

        def batch_decode() -> None:
            samples, _, errors = codec.decode_samples([value], FC, MAX_BYTES)
            out["codec.decode_samples"] = ["ok"] if samples else ["refused", errors[0][1].stage]

        run("codec.decode_samples", batch_decode, out)

        def score() -> None:
            result = handlers.process_batch(one("samples", value), model, policy, settings)
            primary = [o for o in result.outputs if o.source == 0 and o.reason != "audit"]
            if len(primary) != 1:
                out["handlers.process_batch"] = ["crash", "LostRecord", f"{len(primary)} primary outputs"]
                return
            o = primary[0]
            if o.topic == "dlq":
                out["handlers.process_batch"] = ["refused", dict(o.headers or [])["triage.error.stage"].decode()]
            else:
                outputs = [[o2.topic, base64.b64encode(o2.value or b"").decode()] for o2 in result.outputs]
                out["handlers.process_batch"] = ["ok", o.topic, outputs]

        run("handlers.process_batch", score, out)
        return out

    def label(value: Optional[bytes]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        decoded = run("codec.decode_label", lambda: codec.decode_label(value, MAX_BYTES), out)
        if decoded is not None:
            out["codec.decode_label"] = ["ok"]

            def ingest() -> None:  # the old Trainer.ingest join rules, then a one-row store round trip
                features = decoded.features
                if features is None and decoded.label == UNDO:
                    features = []
                elif features is None:
                    raise LabelError("no review record (no features in the label)")
                if decoded.label != UNDO and len(features) != FC:
                    raise LabelError(f"`features` has {len(features)} values")
                if decoded.label not in (EDGE_CASE, UNDO) and decoded.label not in CLASSES:
                    raise LabelError(f"unknown class {decoded.label!r}")
                path = store_dir / "labels.jsonl"
                if path.exists():
                    path.unlink()
                store = LabelStore(store_dir)
                store.append([*anchors, {"id": decoded.id, "label": decoded.label, "features": features,
                                         "annotator": decoded.annotator, "partition": 0, "offset": 0}])
                store.latest()
                store.arrays(None, 5)
                out["ingest+labelstore"] = ["ok"]

            run("ingest+labelstore", ingest, out)
        audit_kind("labels", value, out)
        return out

    def review(value: Optional[bytes]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        trainer = object.__new__(Trainer)
        trainer._review = {}

        def index() -> None:
            trainer._read_review(one("review", value))
            out["trainer._read_review"] = ["ok", "indexed" if trainer._review else "skipped"]

        run("trainer._read_review", index, out)
        audit_kind("review", value, out)
        console = object.__new__(Console)
        console.consumer = FakeConsumer()
        console.consumer.batch = one("review", value)
        console.seen, console.pending, console.high, console.heap, console._tick = set(), {}, {}, [], 0

        def fetch() -> None:
            console.fetch()
            out["console.fetch"] = ["ok", "queued" if console.heap else "skipped"]

        run("console.fetch", fetch, out)
        return out

    def model_event(value: Optional[bytes]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        watcher = object.__new__(ModelWatcher)
        watcher.registry = registry

        def validate() -> None:
            try:
                watcher._validate(value)
            except (ValueError, TriageError) as exc:  # what the old handle_event caught: refused
                out["watcher._validate"] = ["refused", "path" if type(exc).__name__ == "RegistryError" else "bad_event",
                                            _short(exc)]
                return
            out["watcher._validate"] = ["ok"]

        run("watcher._validate", validate, out)
        return out

    handlers_by_kind = {"sample": sample, "label": label, "review": review, "model_event": model_event}
    with open(records_path, "rb") as fh:
        records = pickle.load(fh)
    with open(out_path, "a") as out_fh:
        for i in range(start, len(records)):
            kind, value = records[i]
            result = handlers_by_kind[kind](value)
            out_fh.write(json.dumps({"i": i, "r": result}) + "\n")
            out_fh.flush()
        # the old label store with a torn last line (an append cut short by a crash)
        torn: dict[str, Any] = {}
        path = store_dir / "labels.jsonl"
        if path.exists():
            path.unlink()
        store = LabelStore(store_dir)
        store.append([{"id": "s1", "label": "3", "features": [0.0] * FC},
                      {"id": "s2", "label": "5", "features": [1.0] * FC}])
        line = json.dumps({"id": "s3", "label": "7", "features": [2.0] * FC}, separators=(",", ":"))
        with open(path, "a") as fh:
            fh.write(line[: len(line) // 2])
        if run("labelstore.latest", lambda: store.latest(), torn) is not None:
            torn["labelstore.latest"] = ["ok"]
        if run("labelstore.count", lambda: store.count(), torn) is not None:
            torn["labelstore.count"] = ["ok", store.count()]
        out_fh.write(json.dumps({"i": -1, "r": torn, "torn": path.read_text()[-80:]}) + "\n")
        out_fh.write(json.dumps({"done": True}) + "\n")


# =================================================================================================
# parent: generation, new verdicts, the worker's results, the table
# =================================================================================================


def generate(kind: str, n: int, seed: int, *, pinned: bool = False) -> list[Any]:
    """``n`` cases of ``kind`` (distinct values). ``pinned``: model events whose valid document
    names v1's real bundle (so the path check passes and each mutation is judged alone)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    import tests.contract_strategies as cs
    from tests.contract_strategies import cases

    if pinned:
        documents = cs.documents

        def pinned_documents(cls: type, fc: int) -> Any:
            docs = documents(cls, fc)
            if cls is cs.ModelEvent:
                return docs.map(lambda d: {**d, "version": "v1", "path": "models/v1/model.onnx"})
            return docs

        cs.documents = pinned_documents  # cases() looks it up at draw time

    found: list[Any] = []
    seen: set[Optional[bytes]] = set()

    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.large_base_example, HealthCheck.filter_too_much])
    @hseed(seed)
    @given(cases(kind, FC, MAX_BYTES))
    def collect(case: Any) -> None:
        if case.value not in seen:
            seen.add(case.value)
            found.append(case)

    try:
        collect()
    finally:
        if pinned:
            cs.documents = documents
    return found


def new_verdict(kind: str, value: Optional[bytes], registry: Any) -> tuple[bool, str]:
    """(accepted, why not) under the new contract layer (for a model event: also its path)."""
    from triage.contracts import decode_label, decode_model_event, decode_review, decode_sample
    from triage.errors import InputError, RegistryError

    try:
        if kind == "sample":
            decode_sample(value, FC, MAX_BYTES)
        elif kind == "label":
            decode_label(value, MAX_BYTES)
        elif kind == "review":
            decode_review(value, MAX_BYTES)
        else:
            event = decode_model_event(value, MAX_BYTES)
            try:
                if registry.resolve(event.path) != registry.model_path(event.version).resolve():
                    return False, "path is not the bundle of its version"
            except RegistryError as exc:
                return False, exc.message
    except InputError as exc:
        return False, f"{exc.stage}: {exc.message}"
    return True, ""


def output_problem(topic: str, raw: bytes) -> Optional[str]:
    """Why the new contract refuses an output the old scorer wrote (None if it is fine)."""
    from triage.contracts import decode_prediction, decode_review
    from triage.errors import InputError

    try:
        (decode_review if topic == "review" else decode_prediction)(raw, 10 * MAX_BYTES)
    except InputError as exc:
        return exc.message
    return None


def run_worker(args: argparse.Namespace, records: list[tuple[str, Optional[bytes]]], registry_root: str,
               tmp: Path) -> tuple[dict[int, dict[str, Any]], dict[str, Any], list[tuple[int, str]]]:
    """Run the old code on every record; a worker that dies or stalls on record i is restarted
    after it, and record i is reported as ``died``."""
    records_path, out_path = tmp / "records.pkl", tmp / "results.jsonl"
    with open(records_path, "wb") as fh:
        pickle.dump(records, fh)
    results: dict[int, dict[str, Any]] = {}
    torn: dict[str, Any] = {}
    died: list[tuple[int, str]] = []
    start = 0
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    while True:
        log = open(tmp / "worker.log", "ab")
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", "--old", args.old,
                                 "--records", str(records_path), "--start", str(start), "--out", str(out_path),
                                 "--registry", registry_root],
                                cwd=args.old, env=env, stdout=log, stderr=log)
        last_size, last_change, finished = -1, time.monotonic(), False
        while proc.poll() is None:
            size = out_path.stat().st_size if out_path.exists() else 0
            if size != last_size:
                last_size, last_change = size, time.monotonic()
            elif time.monotonic() - last_change > WORKER_STALL_S:
                proc.kill()
                proc.wait()
                break
            time.sleep(0.2)
        log.close()
        done_upto = start - 1
        if out_path.exists():
            for line in out_path.read_text().splitlines():
                doc = json.loads(line)
                if doc.get("done"):
                    finished = True
                elif doc["i"] == -1:
                    torn = doc
                else:
                    results[doc["i"]] = doc["r"]
                    done_upto = max(done_upto, doc["i"])
        if finished:
            return results, torn, died
        bad = done_upto + 1
        if bad >= len(records):  # died after the last record (in the torn-store step)
            torn = {"labelstore.latest": ["died", f"worker exit code {proc.returncode}", ""]}
            return results, torn, died
        how = "stalled" if proc.returncode in (None, -9) else f"exit code {proc.returncode}"
        died.append((bad, how))
        results[bad] = {"worker": ["died", how, ""]}
        start = bad + 1


def field_of(path: Optional[str]) -> str:
    return re.sub(r"\[\d+\]", "[]", path) if path else "record"


_NUMBERS = re.compile(rb"\[(?:-?[0-9][0-9.eE+-]*,){6,}-?[0-9][0-9.eE+-]*\]")
_RUN = re.compile(rb"(.)\1{11,}", re.S)
_NEST = re.compile(rb'((?:\{"a":)|\[)\1{5,}')
_CLOSE = re.compile(rb"([}\]])\1{5,}")


def _numbers(m: "re.Match[bytes]") -> bytes:
    """A long number array as its length, keeping the tokens no float32 can hold."""
    tokens = m.group(0)[1:-1].split(b",")
    odd = []
    for i, t in enumerate(tokens):
        try:
            big = abs(float(t)) > 3.4028234663852886e38 or len(t) > 24
        except (ValueError, OverflowError):
            big = True
        if big:
            odd.append(b"%s at [%d]" % (t if len(t) <= 24 else t[:8] + b"...(%d digits)" % len(t), i))
    return b"[<%d numbers%s>]" % (len(tokens), (b": " + b", ".join(odd[:2])) if odd else b"")


def show(value: Optional[bytes], n: int = 110) -> str:
    """The bytes of a record, readable: long number arrays, runs of one byte and deep nesting
    are abbreviated (the byte counts say how long they were)."""
    if value is None:
        return "None (tombstone)"
    text = _NUMBERS.sub(_numbers, value)
    text = _NEST.sub(lambda m: m.group(1) + b"<x%d>" % (len(m.group(0)) // len(m.group(1))), text)
    text = _CLOSE.sub(lambda m: m.group(1) + b"<x%d>" % len(m.group(0)), text)
    text = _RUN.sub(lambda m: m.group(1) + b"<x%d>" % len(m.group(0)), text)
    out = repr(text[:n]) + ("..." if len(text) > n else "")
    return out + (f" ({len(value)} B)" if text != value else "")


SHAPE = "wrong shape (type, missing field)"


def reason(why: str, case: Any) -> tuple[str, str]:
    """(class, field) of why the new contract refuses a record."""
    where = field_of(case.path)
    if case.mutation in ("duplicate_key", "escaped_duplicate_key", "inner_duplicate"):
        return {"duplicate_key": "duplicate key", "escaped_duplicate_key": "escaped duplicate key",
                "inner_duplicate": "duplicate key in a nested object"}[case.mutation], where
    m = re.search(r"`([^`]+)`", why)
    field = re.sub(r"\[\d+\]", "[]", m.group(1)) if m and "Expected `" not in why else where
    rules = [
        ("does not fit float32", "float32 overflow"), ("Number out of range", "number out of range"),
        ("control character", "control character"), ("lone surrogate", "lone surrogate"),
        ("longer than", "string too long"), ("non-empty", "empty string"),
        ("levels deep", "meta nested deeper than 8"), ("bytes encoded", "meta over 64 KiB"),
        ("is not an ISO-8601", "ts not an ISO time in 1970..9999"), ("`ts`", "ts out of range"),
        ("oversized", "record over max_bytes"), ("nested too deeply", "nested too deeply"),
        ("duplicate key", "duplicate key"), ("path", "path is not the version's bundle"),
        ("missing required field", SHAPE), ("Expected `", SHAPE), ("does not match", SHAPE),
    ]
    for needle, name in rules:
        if needle in why:
            return name, field
    if why.startswith("decode:"):
        return "not JSON / not UTF-8 / truncated", "record"
    return re.sub(r"\d+", "N", why)[:60], field


def classify(kind: str, case: Any, accepted: bool, why: str, r: dict[str, Any]) -> list[tuple[str, str]]:
    """(failure class, detail) pairs for one record: what the old code did wrong."""
    out: list[tuple[str, str]] = []
    for component, outcome in r.items():
        if outcome[0] == "crash":
            out.append((f"crash: {component} raised {outcome[1]}", outcome[2]))
        elif outcome[0] == "died":
            out.append((f"died: worker {outcome[1]}", ""))
    if any(o[0] in ("crash", "died") for o in r.values()):
        return out
    took: list[str] = []  # old components that took in what the new contract refuses
    if kind == "sample":
        pb = r.get("handlers.process_batch", ["?"])
        if pb[0] == "ok":
            took.append("scored")
            for topic, raw in pb[2]:
                problem = output_problem(topic, base64.b64decode(raw))
                if problem and accepted:  # (a refused input's outputs are counted above)
                    out.append((f"wrote a {topic} record the new contract refuses", problem))
        elif pb[0] == "refused" and accepted and pb[1] != "score":
            out.append((f"refused ({pb[1]}) a sample the new contract accepts", ""))
        if (r.get("codec.decode_sample", ["?"])[0] == "ok") != (r.get("codec.decode_samples", ["?"])[0] == "ok"):
            out.append(("decode_sample and decode_samples disagree", ""))
    elif kind == "label":
        dec = r.get("codec.decode_label", ["?"])
        if dec[0] == "refused" and accepted:
            out.append(("refused a label the new contract accepts", ""))
        if r.get("ingest+labelstore", ["?"])[0] == "ok":
            took.append("folded")
        elif dec[0] == "ok":
            took.append("decoded")
        if r.get("audit.handle", ["?", ""])[1] == "label":
            took.append("audit")
    elif kind == "review":
        for component, what, name in (("trainer._read_review", "indexed", "retrain index"),
                                      ("console.fetch", "queued", "console"), ("audit.handle", "audit", "audit")):
            if r.get(component, ["?", ""])[1] == what:
                took.append(name)
    else:
        v = r.get("watcher._validate", ["?"])
        if v[0] == "ok":
            took.append("synced")
        elif v[0] == "refused" and accepted:
            out.append(("refused an event the new contract accepts", v[2]))
    if took and not accepted:
        cls, field = reason(why, case)
        out.append((f"accepted what the new contract rejects: {cls}", f"{'+'.join(took)}|{field}|{why}"))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", default="/tmp/old-triage", help="worktree of the old commit")
    p.add_argument("--n", type=int, default=3000, help="generated records per kind")
    p.add_argument("--seed", type=int, default=20240601)
    p.add_argument("--detail", action="store_true", help="also list the mutations behind each class")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--records", help=argparse.SUPPRESS)
    p.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--registry", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.old, args.records, args.start, args.out, args.registry)
        return 0

    if os.environ.get("PYTHONHASHSEED") != "0":  # set iteration order feeds the strategies: fix it
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})
    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo))
    warnings.simplefilter("ignore")
    if not (Path(args.old) / "triage" / "codec.py").exists():
        print(f"{args.old} is not a worktree of the old code (no triage/codec.py); create it with\n"
              f"  git -C {repo} worktree add {args.old} eabfef3", file=sys.stderr)
        return 2
    from triage.lifecycle.registry import Registry

    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="fuzz-old-vs-new-"))
    registry_root = tmp / "registry"
    (registry_root / "models" / "v1").mkdir(parents=True)
    registry = Registry(registry_root)
    cases: list[tuple[str, Any]] = []
    for kind in KINDS:
        found = generate(kind, args.n, args.seed)
        if kind == "model_event":  # half of them name v1's real bundle, so the path check passes
            more = generate(kind, args.n - args.n // 2, args.seed, pinned=True)
            values = {c.value for c in found[: args.n // 2]}
            found = found[: args.n // 2] + [c for c in more if c.value not in values]
        cases += [(kind, c) for c in found]
        print(f"generated {len(found)} distinct {kind} records", file=sys.stderr)
    verdicts = [new_verdict(kind, c.value, registry) for kind, c in cases]
    results, torn, died = run_worker(args, [(kind, c.value) for kind, c in cases], str(registry_root), tmp)

    rows: dict[tuple[str, str], list[tuple[int, str, str]]] = defaultdict(list)  # -> (index, mutation, detail)
    for i, ((kind, case), (accepted, why)) in enumerate(zip(cases, verdicts)):
        for cls, detail in classify(kind, case, accepted, why, results.get(i, {})):
            rows[(kind, cls)].append((i, f"{case.mutation}@{field_of(case.path)}", detail))
    for component, outcome in torn.get("r", torn).items():
        if outcome[0] in ("crash", "died"):
            cls = f"torn last line: {component} raised {outcome[1]}"
            rows[("labelstore", cls)].append((-1, "torn_tail", outcome[2]))

    totals = Counter(kind for kind, _ in cases)
    affected = {kind: len({i for (k, _), items in rows.items() if k == kind for i, _, _ in items}) for kind in totals}
    print(f"\nold = {args.old} (git {_rev(args.old)}), new = {repo} (git {_rev(str(repo))}); seed {args.seed}; "
          f"{sum(totals.values())} records in {time.monotonic() - started:.0f}s")
    print("records the old code mishandled: " + ", ".join(f"{k} {affected[k]}/{totals[k]}" for k in KINDS))
    header = ("kind", "failure class (old code)", "count", "where (old component / field)",
              "minimal example (input bytes)")
    table = []
    for (kind, cls), items in sorted(rows.items(), key=lambda kv: (_order(kv[0][0]), _rank(kv[0][1]), -len(kv[1]))):
        if items[0][0] == -1:
            example = f"labels.jsonl ending {torn.get('torn', '')[-24:]!r} (no newline)"
            where = "LabelStore.latest"
        else:
            i = min((it[0] for it in items), key=lambda j: (len(show(cases[j][1].value, 10**9)), j))
            example = show(cases[i][1].value)
            if cls.startswith("accepted"):
                parts = [d.split("|", 2) for _, _, d in items]
                comps = sorted({c for p in parts for c in p[0].split("+")})
                fields = [f for f, _ in Counter(p[1] for p in parts).most_common(3)]
                more = len({p[1] for p in parts}) - len(fields)
                where = f"{'+'.join(comps)}: {', '.join(fields)}" + (f" +{more}" if more > 0 else "")
            else:
                fields = [f for f, _ in Counter(m.split("@", 1)[1] for _, m, _ in items).most_common(2)]
                where = cls.split(": ", 1)[1].split(" raised")[0] if ":" in cls else ""
                where += f" ({', '.join(fields)})" if fields and fields != ["record"] else ""
        table.append((kind, cls.replace("accepted what the new contract rejects: ", "accepted, new rejects: "),
                      str(len(items)), where, example))
    widths = [min(max(len(r[c]) for r in [header, *table]), 60) for c in range(4)]
    print("  ".join(h.ljust(w) for h, w in zip(header[:4], widths)) + "  " + header[4])
    print("-" * 200)
    for r in table:
        print("  ".join(v.ljust(w) for v, w in zip(r[:4], widths)) + "  " + r[4])
    if args.detail:
        print("\nby mutation (kind | class | mutation@field: count | a new-contract reason or crash message):")
        for (kind, cls), items in sorted(rows.items(), key=lambda kv: (_order(kv[0][0]), _rank(kv[0][1]))):
            by = Counter(m for _, m, _ in items)
            print(f"{kind} | {cls}")
            for m, n in by.most_common():
                detail = next(d for _, mm, d in items if mm == m).split("|")[-1]
                print(f"    {m}: {n}  {detail[:150]}")
    if died:
        print(f"\nworker deaths: {died}")
    return 0


def _order(kind: str) -> int:
    return (*KINDS, "labelstore").index(kind)


def _rank(cls: str) -> int:
    return 0 if cls.startswith("died") else 1 if cls.startswith(("crash", "torn")) else 2


def _rev(path: str) -> str:
    try:
        return subprocess.run(["git", "-C", path, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


if __name__ == "__main__":
    sys.exit(main())
