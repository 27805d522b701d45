"""The annotator console on generated review records, driven through ``Console.fetch()``
(no terminal: stdin/stdout are StringIO).

One Console (one consumer-group member) serves the whole test. Each hypothesis example
produces ~30-50 generated review records with valid sentinels interleaved and fetches until
the console's loop has consumed all of them. Property per batch: every record the contract
refuses is dead-lettered exactly once with the contract's stage (decode / validate) and
class, keeping its key and value; valid ones are never dead-lettered; exactly the new
distinct valid ids are queued; the committed offset of each partition stops at its oldest
queued (unanswered) request and is past every invalid one before it. Then every queued
request is shown and answered in priority order as the run loop does (render it, publish
a label, mark it done): each published label decodes under the contract and the group
commits to the end.

A second test pins a bug the fuzzer found: the console wrote a valid review request's
free-text fields (``reason``, ``predicted``, ``model_version``, ``top[].label``) to the
terminal verbatim, control characters included; they are now shown as ``\\xNN``.
"""

from __future__ import annotations

import heapq
import io
import itertools
import json
import uuid
from typing import Any, Callable

from hypothesis import given
from hypothesis import strategies as st

from consumers.annotator import CLEAR, Console
from tests.fuzz.kit import (
    FUZZ, MAX_BYTES, Feeder, In, Offsets, Tail, interleave, records, show, sticky, value, verdict,
)
from tests.helpers import wait_until
from triage.contracts import ReviewRequest, ScoreFields, TopClass, encode
from triage.contracts.dlq import error_class
from triage.errors import InputError
from triage.settings import Settings

CLASSES = [str(c) for c in range(10)]


def test_console_dead_letters_invalid_review_records_and_queues_valid_ones(
    settings_factory: Callable[..., Settings],
) -> None:
    s = settings_factory(max_message_bytes=MAX_BYTES)
    group = f"annotators-{uuid.uuid4().hex[:8]}"
    console = Console(s, CLASSES, "fuzz", group_id=group, stdin=io.StringIO(), stdout=io.StringIO())
    feeder, offsets = Feeder(s), Offsets(s, group)
    dlq, labels = Tail(s, [s.topics.dlq_topic]), Tail(s, [s.topics.labels_topic])
    tag, n = uuid.uuid4().hex[:6], itertools.count()
    consumed = console.loop.metrics.records
    seen_keys: set[tuple[str, int, tuple[str, ...]]] = set()  # what makes a request distinct to the console
    sent = 0
    ran: list[int] = []

    def sentinel() -> In:
        i = next(n)
        rid = f"req-{tag}-{i}"
        return In(rid.encode(), encode(ReviewRequest(rid, [float(i)] * 64, "uncertain", "3", 0.4,
                                                     ScoreFields(0.1, 0.5, None), (i % 7) / 7, "v1", None,
                                                     [TopClass("3", 0.4)])))

    try:
        @FUZZ
        @given(reviews=records("review"), at=st.lists(st.integers(0, 60), min_size=2, max_size=5))
        @sticky
        def run(reviews: list[In], at: list[int]) -> None:
            nonlocal sent
            ran.append(len(reviews))
            batch = feeder.send(s.topics.review_topic, interleave(reviews, [sentinel() for _ in at], at))
            sent += len(batch)
            wait_until(lambda: (console.fetch(), value(consumed, loop="annotator") >= sent)[1],
                       "the console to consume every review record")
            assert value(consumed, loop="annotator") == sent
            assert value(console.loop.metrics.internal_errors, loop="annotator") == 0

            positions = {rec.pos: rec for rec in batch}
            dead: dict[tuple[int, int], Any] = {}
            for o in dlq.read():
                pos = (int(o.header("triage.source.partition")), int(o.header("triage.source.offset")))
                assert o.header("triage.source.topic") == s.topics.review_topic
                assert pos in positions and pos not in dead, f"unexpected or repeated dead letter for {pos}"
                dead[pos] = o
            problems, valid_keys = [], set()
            for pos, rec in positions.items():
                decoded = verdict("review", rec.value)
                if isinstance(decoded, InputError):
                    o = dead.get(pos)
                    if o is None:
                        problems.append(f"{pos}: refused by the contract ({decoded.message}), not dead-lettered: "
                                        f"{show(rec.value)}")
                    elif ((o.header("triage.error.stage"), o.header("triage.error.class"), o.value, o.key)
                          != (decoded.stage, error_class(decoded), rec.value, rec.key)):
                        problems.append(f"{pos}: dead letter {o.headers!r} disagrees with the contract "
                                        f"({decoded.stage}/{error_class(decoded)})")
                elif pos in dead:
                    problems.append(f"{pos}: valid review request dead-lettered: {show(rec.value)}")
                elif "fuzz" not in decoded.labelled_by:  # one this annotator labelled is never shown to them
                    valid_keys.add((decoded.id, decoded.annotators, tuple(sorted(decoded.labelled_by))))
            assert not problems, "\n".join(problems)
            queued = [doc for _, _, doc in console.heap]
            assert {d["_pos"][1:] for d in queued} <= set(positions), "queued a request of another batch"
            assert (sorted((d["id"], d["annotators"], tuple(sorted(d["labelled_by"]))) for d in queued)
                    == sorted(valid_keys - seen_keys)), "queued != new valid requests"
            seen_keys.update(valid_keys)

            # committed: up to the oldest unanswered request of each partition, else to the end
            end = feeder.ends[s.topics.review_topic]
            oldest = {p: min(o for (_, pp, o) in (d["_pos"] for d in queued) if pp == p)
                      for p in {d["_pos"][1] for d in queued}}
            expect = {p: oldest.get(p, end.get(p, 0)) for p in offsets.committed(s.topics.review_topic)}
            wait_until(lambda: offsets.committed(s.topics.review_topic) == expect,
                       f"committed offsets {expect} (queued at {[d['_pos'] for d in queued]})")

            # answer everything, best first, as the run loop does
            answered, last = [], float("inf")
            while console.heap:
                prio, _, doc = console.heap[0]
                assert -prio <= last, "requests not served highest priority first"
                last = -prio
                doc = heapq.heappop(console.heap)[2]
                console.show(doc)  # renders whatever valid request it is
                console.publish(doc, CLASSES[len(answered) % len(CLASSES)])
                console._done(*doc["_pos"])
                answered.append(doc["id"])
            wait_until(lambda: offsets.caught_up(s.topics.review_topic, feeder), "the console to commit to the end")
            out = labels.read()
            assert sorted(json.loads(o.value or b"{}").get("id") for o in out) == sorted(answered)
            for o in out:
                label = verdict("label", o.value)
                assert not isinstance(label, InputError), f"the console published an invalid label: {label.message}"
                assert label.annotator == "fuzz" and o.key == label.id.encode()

        run()
        assert len(ran) >= min(2, FUZZ.max_examples), f"hypothesis ran only {len(ran)} examples"
    finally:
        console.producer.close()
        console.consumer.close()
        for client in (feeder, dlq, labels, offsets):
            client.close()


# Valid under the review-request contract (those fields are plain strings), yet they carry
# terminal control sequences: set the window title (OSC ... BEL), clear the screen, move the
# cursor up, carriage return, start blinking.
HOSTILE = (b'{"id":"req-esc","features":[0.0,1.0],"reason":"\\u001b]0;pwned\\u0007\\u001b[2J",'
           b'"predicted":"\\u001b[1A\\r3","confidence":0.5,"scores":{"margin":0.1,"entropy":0.2,"outlier":null},'
           b'"priority":0.5,"model_version":"v1\\u001b[5m","top":[{"label":"\\u001b[8m7","p":0.5}]}')


def test_console_never_writes_control_characters_of_a_review_request(settings_factory: Callable[..., Settings]) -> None:
    s = settings_factory(max_message_bytes=MAX_BYTES)
    assert not isinstance(verdict("review", HOSTILE), InputError), "the contract accepts it"
    screen = io.StringIO()
    console = Console(s, CLASSES, "fuzz", group_id=f"annotators-{uuid.uuid4().hex[:8]}", stdin=io.StringIO(),
                      stdout=screen)
    feeder = Feeder(s)
    try:
        feeder.send(s.topics.review_topic, [In(b"req-esc", HOSTILE)])
        wait_until(lambda: (console.fetch(), bool(console.heap))[1], "the console to queue the request")
        console.show(heapq.heappop(console.heap)[2])
    finally:
        console.producer.close()
        console.consumer.close()
        feeder.close()
    text = screen.getvalue().replace(CLEAR, "", 1).replace("\r\n", "\n")
    foreign = sorted({f"U+{ord(c):04X}" for c in text if c != "\n" and (ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F)})
    assert not foreign, f"control characters from the record reached the terminal: {foreign}: {text[:200]!r}"
