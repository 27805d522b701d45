"""Shared pieces of the schema-driven fuzz suite (tests/fuzz).

Generated batches come from tests/contract_strategies.py (``record_bytes``), with random keys
(None included) and random headers (some named like triage's own DLQ headers). Records are
written and read with kafka-python directly, so the tests know every input's partition and
offset and see the headers of every output; the processes under test use the client the
``kafka_client`` fixture picked. Committed offsets are read with a group-less OffsetFetch
(a KafkaConsumer with the group id that never subscribes, so it never joins the group).
Every wait is bounded by tests.helpers.DEADLINE_S (waits: tests.helpers.wait_until).

The embedded broker (Tansu) reports a partition's end offset as the base offset of its last
record batch + 1, not its last offset + 1, so end offsets are never trusted here: inputs are
compared with the offsets the broker acknowledged for them (``Feeder.ends``), and outputs
are read past the reported end until the reader has nothing more.
"""

from __future__ import annotations

import functools
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from tests.contract_strategies import record_bytes
from tests.fixtures import DEADLINE_S
from tests.profiles import fuzz_examples
from triage.contracts import decode_label, decode_model_event, decode_review, decode_sample
from triage.contracts.dlq import error_class
from triage.errors import InputError, RegistryError
from triage.settings import Settings

FC = 64  # feature count of the digits models
MAX_BYTES = 100_000  # max_message_bytes of every process under test (and of the strategies)

# Whole batches per test (25 under the ci profile, 1,000 under long: tests/profiles.py); each
# example is ~30-60 records through a real process.
FUZZ = settings(
    max_examples=fuzz_examples(),
    deadline=None,
    database=None,  # nothing written into the working tree
    # No shrinking: every step is a broker round trip. Failures name the offending record.
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
                           HealthCheck.function_scoped_fixture],
)

# --- generated batches -------------------------------------------------------------------------

_HEADER_NAMES = (st.sampled_from(["triage.error.stage", "triage.source.offset", "triage.source.partition",
                                  "triage.error.class", "triage.source.topic", "content-type", ""])
                 | st.text(st.characters(blacklist_categories=("Cs",)), max_size=16))
HEADERS = st.lists(st.tuples(_HEADER_NAMES, st.binary(max_size=32)), max_size=4)
KEYS = st.none() | st.binary(max_size=24) | st.text(max_size=12).map(lambda t: t.encode("utf-8", "surrogatepass"))


@dataclass(repr=False)
class In:
    """One input record; partition and offset are set once the broker acknowledged it."""

    key: Optional[bytes]
    value: Optional[bytes]
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    partition: int = -1
    offset: int = -1

    @property
    def pos(self) -> tuple[int, int]:
        return self.partition, self.offset

    def __repr__(self) -> str:  # short: hypothesis prints whole batches of these
        return f"In({self.key!r:.40}, {show(self.value, 120)}, {len(self.headers)} headers)"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))


def records(kind: str, min_size: int = 30, max_size: int = 50) -> st.SearchStrategy[list[In]]:
    """A batch of generated ``kind`` records (valid and malformed) with random keys and headers."""
    one = st.tuples(KEYS, record_bytes(kind, FC, MAX_BYTES), HEADERS).map(lambda t: In(*t))
    return st.lists(one, min_size=min_size, max_size=max_size)


def interleave(batch: list[In], extra: list[In], positions: list[int]) -> list[In]:
    """``batch`` with each of ``extra`` inserted at a drawn position."""
    out = list(batch)
    for rec, at in zip(extra, positions):
        out.insert(at % (len(out) + 1), rec)
    return out


def show(value: Optional[bytes], n: int = 160) -> str:
    return "None" if value is None else repr(value[:n]) + (f"... ({len(value)} bytes)" if len(value) > n else "")


# --- contract verdicts (the oracle) --------------------------------------------------------------


def verdict(kind: str, value: Optional[bytes]) -> Union[Any, InputError]:
    """The decoded Struct, or the InputError the contract layer raises for ``value``."""
    try:
        if kind == "sample":
            return decode_sample(value, FC, MAX_BYTES)
        if kind == "label":
            return decode_label(value, MAX_BYTES)
        if kind == "review":
            return decode_review(value, MAX_BYTES)
        return decode_model_event(value, MAX_BYTES)
    except InputError as exc:
        return exc


def event_verdict(registry: Any, value: Optional[bytes]) -> str:
    """What a model watcher must do with an event: ``ok`` (sync), or refuse as ``bad_event``
    (not a model event) or ``path`` (its path is not the bundle of its version)."""
    event = verdict("model_event", value)
    if isinstance(event, InputError):
        return "bad_event"
    try:
        return "ok" if registry.resolve(event.path) == registry.model_path(event.version).resolve() else "path"
    except RegistryError:
        return "path"


# --- raw Kafka access ----------------------------------------------------------------------------


class Feeder:
    """Produce records with headers and learn where each landed."""

    def __init__(self, s: Settings) -> None:
        # No retries, and a long request timeout: a retried produce that the broker had in fact
        # written duplicates the input at an offset the test never learns (seen under the long
        # profile on an overloaded machine: a "dead letter for an unknown position"). A timeout now
        # fails the send loudly instead.
        self._p = KafkaProducer(bootstrap_servers=s.connection.bootstrap_servers, max_request_size=4 << 20,
                                acks="all", retries=0, request_timeout_ms=180_000, delivery_timeout_ms=200_000)
        self.ends: dict[str, dict[int, int]] = {}  # topic -> partition -> offset after the last record sent

    def send(self, topic: str, batch: list[In]) -> list[In]:
        futures = []
        for rec in batch:
            if rec.key is None and rec.value is None:
                rec.key = b""  # kafka-python refuses a record with neither key nor value
            futures.append(self._p.send(topic, key=rec.key, value=rec.value, headers=list(rec.headers)))
        self._p.flush(60)
        for rec, fut in zip(batch, futures):
            md = fut.get(timeout=60)
            rec.partition, rec.offset = md.partition, md.offset
            ends = self.ends.setdefault(topic, {})
            ends[md.partition] = max(ends.get(md.partition, 0), md.offset + 1)
        return batch

    def close(self) -> None:
        self._p.close(timeout=10)


@dataclass
class Out:
    topic: str
    partition: int
    offset: int
    key: Optional[bytes]
    value: Optional[bytes]
    headers: list[tuple[str, bytes]]

    def header(self, name: str) -> str:
        """The one value of header ``name`` (asserting it is there exactly once)."""
        found = [v for k, v in self.headers if k == name]
        assert len(found) == 1, f"header {name!r} appears {len(found)} times in {self.headers!r}"
        return found[0].decode("utf-8", "replace")

    def doc(self) -> dict[str, Any]:
        assert self.value is not None
        doc = json.loads(self.value)
        assert isinstance(doc, dict)
        return doc


def _partitions(c: KafkaConsumer, topic: str) -> list[TopicPartition]:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        parts = c.partitions_for_topic(topic)
        if parts:
            return [TopicPartition(topic, p) for p in sorted(parts)]
        time.sleep(0.1)
    raise AssertionError(f"no metadata for topic {topic}")


class Tail:
    """A group-less reader of ``topics`` from the beginning; ``read()`` returns every record
    that is new since the last call, up to the end offsets at the time of the call."""

    def __init__(self, s: Settings, topics: list[str]) -> None:
        self._c = KafkaConsumer(bootstrap_servers=s.connection.bootstrap_servers, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=4 << 20, fetch_max_bytes=16 << 20)
        self._tps = [tp for t in topics for tp in _partitions(self._c, t)]
        self._c.assign(self._tps)
        self._c.seek_to_beginning(*self._tps)

    def read(self) -> list[Out]:
        """Call it once the records to read are acknowledged (e.g. once the process that wrote
        them committed its input): reads to the reported end, then until two polls in a row
        return nothing (the broker's end offset may lag its last record batch)."""
        end = self._c.end_offsets(self._tps)
        out: list[Out] = []
        deadline = time.monotonic() + DEADLINE_S
        quiet = 0
        while quiet < 2 or any(self._c.position(tp) < end[tp] for tp in self._tps):
            assert time.monotonic() < deadline, "timed out reading outputs up to their end offsets"
            polled = self._c.poll(timeout_ms=250)
            quiet = 0 if polled else quiet + 1
            for tp, recs in polled.items():
                for r in recs:
                    out.append(Out(tp.topic, tp.partition, r.offset, r.key, r.value,
                                   [(k, v or b"") for k, v in (r.headers or [])]))
        return out

    def close(self) -> None:
        self._c.close()


class Offsets:
    """Committed offsets of a consumer group and end offsets of topics."""

    def __init__(self, s: Settings, group_id: str) -> None:
        self._c = KafkaConsumer(bootstrap_servers=s.connection.bootstrap_servers, group_id=group_id,
                                enable_auto_commit=False)

    def committed(self, topic: str) -> dict[int, int]:
        """partition -> committed offset (0 when nothing is committed), every partition."""
        return {tp.partition: self._c.committed(tp) or 0 for tp in _partitions(self._c, topic)}

    def caught_up(self, topic: str, feeder: Feeder) -> bool:
        """Has the group committed exactly past every record ``feeder`` sent to ``topic``?"""
        done, ends = self.committed(topic), feeder.ends.get(topic, {})
        return all(done[p] == ends.get(p, 0) for p in done)

    def close(self) -> None:
        self._c.close(autocommit=False)


# --- metrics (waits: tests.helpers.wait_until) -------------------------------------------------------------------------


def value(counter: Any, **labels: str) -> float:
    """The current value of a prometheus counter/gauge (child)."""
    return float((counter.labels(**labels) if labels else counter)._value.get())


def counts(counter: Any, label: str, values: list[str]) -> Counter[str]:
    return Counter({v: value(counter, **{label: v}) for v in values})


def promote_next(reg: Any) -> str:
    """Register a new registry version (the current bundle's bytes and manifest, with its
    canary rows) and make it CURRENT; returns its name."""
    current = reg.current() or ""
    manifest = {k: v for k, v in reg.manifest(current).items() if k not in ("version", "sha256", "path", "status")}
    version: str = reg.add_bundle(reg.model_path(current).read_bytes(), manifest, reg.canary(current))
    reg.promote(version)
    return version


# --- the scorer's one-outcome property -----------------------------------------------------------


def check_scorer_outputs(s: Settings, inputs: list[In], out: list[Out], *, version: str,
                         internal: Optional[dict[tuple[int, int], str]] = None) -> dict[str, int]:
    """Every input ended in exactly one primary outcome among ``out`` (the records written
    while ``inputs`` were handled): a DLQ record (matched by its source partition/offset
    headers) or a prediction / review request (matched by sample id; audit copies excluded).

    The DLQ stage agrees with the contract: the decoder's own stage and exception class for
    records it refuses, ``score`` for ones it accepts; ``internal`` maps positions that must
    be dead-lettered with stage ``internal`` to the exception class. Returns outcome counts."""
    t = s.topics
    internal = internal or {}
    by_pos = {rec.pos: rec for rec in inputs}
    dead: dict[tuple[int, int], Out] = {}
    for o in out:
        if o.topic != t.dlq_topic:
            continue
        assert o.header("triage.source.topic") == t.samples_topic, o.headers
        pos = (int(o.header("triage.source.partition")), int(o.header("triage.source.offset")))
        assert pos in by_pos, f"a dead letter for {pos}, which is no input of this batch: {o.headers!r}"
        assert pos not in dead, f"input {pos} was dead-lettered twice: {show(by_pos[pos].value)}"
        dead[pos] = o
    expected: Counter[str] = Counter()
    problems: list[str] = []
    for pos, rec in by_pos.items():
        decoded = verdict("sample", rec.value)
        if pos in dead:
            o = dead[pos]
            stage, cls = o.header("triage.error.stage"), o.header("triage.error.class")
            dropped = [v for k, v in o.headers if k == "triage.dlq.payload_dropped"]
            if dropped:  # the broker refused the whole dead letter: written again without key and value
                if (o.key, o.value) != (None, b"") or f"value {len(rec.value or b'')} bytes".encode() not in dropped[0]:
                    problems.append(f"{pos}: payload-dropped dead letter {o.key!r}/{show(o.value)}: {dropped!r}")
            elif o.value != rec.value or o.key != rec.key:
                problems.append(f"{pos}: the dead letter does not keep the original key/value: {show(rec.value)}")
            if pos in internal:
                if (stage, cls) != ("internal", internal[pos]):
                    problems.append(f"{pos}: expected stage internal/{internal[pos]}, got {stage}/{cls}")
            elif isinstance(decoded, InputError):
                if (stage, cls) != (decoded.stage, error_class(decoded)):
                    problems.append(f"{pos}: contract says {decoded.stage}/{error_class(decoded)} "
                                    f"({decoded.message}), scorer dead-lettered {stage}/{cls}: {show(rec.value)}")
            elif stage != "score":
                problems.append(f"{pos}: the contract accepts it, but it was dead-lettered at {stage}/{cls} "
                                f"({o.header('triage.error.message')}): {show(rec.value)}")
        elif pos in internal:
            problems.append(f"{pos}: should have been dead-lettered (stage internal), was not: {show(rec.value)}")
        elif isinstance(decoded, InputError):
            problems.append(f"{pos}: the contract refuses it ({decoded.stage}: {decoded.message}) but there is no "
                            f"dead letter for it: {show(rec.value)}")
        else:
            expected[decoded.id] += 1
    primary: Counter[str] = Counter()
    audited: list[str] = []
    routes: Counter[str] = Counter()
    for o in out:
        if o.topic == t.dlq_topic:
            routes["dlq"] += 1
            continue
        doc = o.doc()
        if o.key != doc["id"].encode() or doc["model_version"] != version:
            problems.append(f"output {o.topic}@{o.partition}/{o.offset}: key {o.key!r}, id {doc['id']!r}, "
                            f"model_version {doc['model_version']!r} (serving {version})")
        if o.topic == t.review_topic and doc["reason"] == "audit":
            audited.append(doc["id"])
            continue
        primary[doc["id"]] += 1
        routes["predictions" if o.topic == t.predictions_topic else "review"] += 1
    if primary != expected:
        missing, extra = expected - primary, primary - expected
        problems.append(f"primary outputs by id differ from the accepted inputs: missing {dict(missing)!r:.500}, "
                        f"unexpected {dict(extra)!r:.500}")
    for sid in audited:
        if sid not in primary:
            problems.append(f"audit copy of {sid!r} without its prediction")
    assert not problems, "\n".join(problems)
    return dict(routes)


def sticky(fn: Callable[..., None]) -> Callable[..., None]:
    """For stateful inner tests (one process across examples): once an example failed, every
    later call (hypothesis replays the failing example to report it) raises that first
    failure again instead of running against state the failure left behind."""
    first: list[BaseException] = []

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        if first:
            raise first[0]
        try:
            fn(*args, **kwargs)
        except BaseException as exc:
            first.append(exc)
            raise

    return wrapper
