"""The label store: checksummed lines, torn-tail repair, corrupt lines skipped in place."""

from __future__ import annotations

import json
import logging
import math
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.profiles import examples
from triage.errors import InputError
from triage.lifecycle.labelstore import CORRUPT_LINE, EDGE_CASE, TORN_TAIL, UNDO, LabelStore, decode_line, encode_row, is_eval_id


def row(i: int, label: str = "1", sid: Optional[str] = None, features: Optional[list[float]] = None) -> dict[str, Any]:
    return {"id": sid or f"s{i}", "label": label, "features": features if features is not None else [i + 0.5, -i / 3],
            "annotator": "ann", "partition": i % 3, "offset": i}


def legacy_line(r: dict[str, Any]) -> bytes:
    """A line as the store wrote it before checksums."""
    return (json.dumps(r, separators=(",", ":")) + "\n").encode()


def lines_of(store: LabelStore) -> list[bytes]:
    return store.path.read_bytes().splitlines(keepends=True)


def reference_latest(rows: list[Optional[dict[str, Any]]], upto: Optional[int] = None) -> dict[str, dict[str, Any]]:
    """Latest wins / undo removes, over the rows; None stands for a corrupt (skipped) slot."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows[:upto]:
        if r is None:
            continue
        out.pop(r["id"], None)
        if r["label"] != UNDO:
            out[r["id"]] = r
    return out


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, reason: str, nbytes: int) -> None:
        self.calls.append((reason, nbytes))


# --- format ----------------------------------------------------------------------------------
def test_lines_carry_a_crc32_of_the_json(tmp_path: Path) -> None:
    store = LabelStore(tmp_path)
    assert store.append([row(0), row(1)]) == 2
    for line, expected in zip(lines_of(store), [row(0), row(1)]):
        body, crc = line.rstrip(b"\n").split(b"\t")
        assert body == json.dumps(expected, separators=(",", ":")).encode()
        assert crc == b"%08x" % zlib.crc32(body)
    assert encode_row(row(0)) == lines_of(store)[0]  # deterministic




@settings(max_examples=examples(200), deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=20))
def test_floats_round_trip_bit_for_bit(features: list[float]) -> None:
    with tempfile.TemporaryDirectory() as d:
        store = LabelStore(Path(d))
        store.append([row(0, features=features)])
        back = store.latest()["s0"]["features"]
    assert len(back) == len(features)
    for a, b in zip(features, back):
        assert struct.pack("<d", a) == struct.pack("<d", b)


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_non_finite_features_are_refused_before_writing(bad: float) -> None:
    with tempfile.TemporaryDirectory() as d:
        store = LabelStore(Path(d))
        with pytest.raises(InputError):
            store.append([row(0, features=[1.0, bad])])
        assert store.count() == 0


@settings(max_examples=examples(200), deadline=None)
@given(st.text(), st.text(min_size=1), st.one_of(st.none(), st.text()), st.integers(0, 2**31), st.integers(-1, 2**63))
def test_rows_round_trip_with_any_text(sid: str, label: str, annotator: Optional[str], partition: int,
                                       offset: int) -> None:
    r = {"id": sid, "label": label, "features": [1.0], "annotator": annotator, "partition": partition,
         "offset": offset}
    line = encode_row(r)
    assert line.count(b"\n") == 1 and line.count(b"\t") == 1  # one line, one checksum separator
    assert decode_line(line) == r
    with tempfile.TemporaryDirectory() as d:
        store = LabelStore(Path(d))
        store.append([r, row(0)])
        assert list(store.rows()) == [(0, r), (1, row(0))]


def test_append_refuses_rows_it_could_not_read_back(tmp_path: Path) -> None:
    store = LabelStore(tmp_path)
    store.append([row(0)])
    for bad in ({"label": "1", "features": []}, {"id": 3, "label": "1", "features": []},
                {"id": "x", "label": "1"}, {"id": "x", "label": "1", "features": (1.0,)}):
        with pytest.raises(ValueError):
            store.append([row(1), bad])
    assert store.count() == 1  # nothing of a refused batch was written


def test_append_creates_the_directory_and_empty_append_writes_nothing(tmp_path: Path) -> None:
    store = LabelStore(tmp_path / "data")
    assert store.count() == 0 and store.latest() == {} and store.append([]) == 0
    assert not store.path.exists()
    assert store.append(iter([row(0)])) == 1 and store.count() == 1


# --- backward compatibility --------------------------------------------------------------------
def test_old_plain_json_lines_are_still_read(tmp_path: Path) -> None:
    store = LabelStore(tmp_path)
    old = [row(i) for i in range(5)]
    store.path.write_bytes(b"".join(legacy_line(r) for r in old))
    new = [row(2, label="7"), row(9)]
    store.append(new)
    assert lines_of(store)[0] == legacy_line(old[0])  # old lines are left as they are
    assert store.count() == 7 and store.corrupt_lines == [] and not store.repairs
    assert store.latest() == reference_latest(old + new)
    assert store.latest(5) == reference_latest(old)


def test_default_json_separators_are_read_too(tmp_path: Path) -> None:
    store = LabelStore(tmp_path)
    store.path.write_text(json.dumps(row(0)) + "\n")
    assert store.latest() == {"s0": row(0)}


# --- torn tail ---------------------------------------------------------------------------------
def test_every_truncation_point_of_the_last_line_is_repaired_on_open(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    rows = [row(i) for i in range(3)]
    full = b"".join(encode_row(r) for r in rows)
    last = encode_row(rows[-1])
    keep = len(full) - len(last)
    for cut in range(len(last)):  # every proper prefix of the last line, the empty one excluded below
        if cut == 0:
            continue
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / "labels.jsonl").write_bytes(full[:keep + cut])
        calls = Recorder()
        with caplog.at_level(logging.WARNING, logger="triage.labelstore"):
            caplog.clear()
            store = LabelStore(d, on_repair=calls)
        assert store.path.read_bytes() == full[:keep], cut
        assert store.count() == 2 and store.latest() == reference_latest(rows[:2])
        assert calls.calls == [(TORN_TAIL, cut)]
        assert store.repairs == {TORN_TAIL: 1} and store.torn_tail_bytes == cut
        assert str(store.path) in caplog.text and f"{cut} bytes" in caplog.text
    # the complete line needs no repair
    (tmp_path / "labels.jsonl").write_bytes(full)
    store = LabelStore(tmp_path, on_repair=(calls := Recorder()))
    assert store.count() == 3 and calls.calls == [] and not store.repairs


def test_a_file_holding_only_a_torn_line_becomes_empty(tmp_path: Path) -> None:
    (tmp_path / "labels.jsonl").write_bytes(encode_row(row(0))[:17])
    store = LabelStore(tmp_path)
    assert store.path.read_bytes() == b"" and store.count() == 0 and store.latest() == {}


def test_delayed_allocation_zeros_after_a_crash_are_a_torn_tail(tmp_path: Path) -> None:
    (tmp_path / "labels.jsonl").write_bytes(encode_row(row(0)) + b"\0" * 4096)
    store = LabelStore(tmp_path)
    assert store.torn_tail_bytes == 4096 and store.latest() == {"s0": row(0)}


def test_readers_ignore_a_torn_tail_without_touching_the_file(tmp_path: Path) -> None:
    store = LabelStore(tmp_path)  # opened before the crash: the tail may be an append in flight
    store.append([row(0), row(1)])
    torn = store.path.read_bytes() + encode_row(row(2))[:-5]
    store.path.write_bytes(torn)
    assert store.count() == 2 and store.latest() == reference_latest([row(0), row(1)])
    assert store.arrays(None, 5)[0].shape[0] + store.arrays(None, 5)[2].shape[0] == 2
    assert store.path.read_bytes() == torn and not store.repairs


@pytest.mark.parametrize("open_after_crash", [False, True])
def test_append_after_a_torn_tail_keeps_every_complete_row(tmp_path: Path, open_after_crash: bool) -> None:
    before = [row(i) for i in range(3)]
    torn_row = encode_row(row(3, label="4"))
    after = [row(3, label="4"), row(4), row(0, label="9")]  # the torn label is delivered again
    for cut in range(1, len(torn_row)):
        d = tmp_path / f"cut{cut}"
        store = LabelStore(d, on_repair=(calls := Recorder()))
        store.append(before)
        with open(store.path, "ab") as fh:
            fh.write(torn_row[:cut])
        if open_after_crash:
            store = LabelStore(d, on_repair=(calls := Recorder()))
        assert store.append(after) == 3
        assert calls.calls == [(TORN_TAIL, cut)]
        assert all(decode_line(line) is not None for line in lines_of(store))
        assert store.count() == 6 and store.corrupt_lines == []
        assert store.latest() == reference_latest(before + after)


# --- corrupt lines -----------------------------------------------------------------------------
@pytest.mark.parametrize("garbage", [b"not json at all\n", b"\n", b"[1,2,3]\n", b'{"id":"x"}\n',
                                     b'{"id":"s1","label":"2","features":[1.0]}\t00000000\n', b"\xff\xfe\n",
                                     b"[" * 100_000 + b"\n"])
def test_a_corrupt_middle_line_is_skipped_in_place(tmp_path: Path, garbage: bytes,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    rows: list[Optional[dict[str, Any]]] = [row(i) for i in range(6)] + [row(1, label="5")]
    store = LabelStore(tmp_path, on_repair=(calls := Recorder()))
    store.append(rows)  # type: ignore[arg-type]
    lines = lines_of(store)
    lines[3] = garbage
    store.path.write_bytes(b"".join(lines))
    rows[3] = None
    with caplog.at_level(logging.WARNING, logger="triage.labelstore"):
        assert store.count() == 7  # the corrupt line keeps its slot
        for upto in [None, *range(8)]:
            assert store.latest(upto) == reference_latest(rows, upto), upto
        assert [n for n, _ in store.rows()] == [0, 1, 2, 4, 5, 6]  # later rows keep their numbers
        store.arrays(None, 5)
    assert store.corrupt_lines == [3]
    assert calls.calls == [(CORRUPT_LINE, len(garbage))]  # reported once, however often it is read
    assert store.repairs == {CORRUPT_LINE: 1} and store.corrupt_bytes == len(garbage)
    assert len([r for r in caplog.records if "row 3" in r.getMessage()]) == 1
    store.append([row(7)])  # appending keeps the corrupt line where it is
    assert store.count() == 8 and store.latest()["s7"] == row(7) and lines_of(store)[3] == garbage


def test_a_corrupt_last_line_with_its_newline_is_kept_as_a_slot(tmp_path: Path) -> None:
    # It may already be counted by a manifest's labels_upto: truncating it would hand its
    # number to the next appended row.
    store = LabelStore(tmp_path)
    store.append([row(0), row(1)])
    data = bytearray(store.path.read_bytes())
    data[-20] ^= 0x01
    store.path.write_bytes(bytes(data))
    store = LabelStore(tmp_path, on_repair=(calls := Recorder()))
    assert store.path.read_bytes() == bytes(data) and calls.calls == []
    assert store.count() == 2 and store.latest() == {"s0": row(0)} and store.corrupt_lines == [1]
    store.append([row(2)])
    assert store.latest(2) == {"s0": row(0)} and store.latest() == {"s0": row(0), "s2": row(2)}


def test_every_single_bit_flip_is_caught_by_the_checksum(tmp_path: Path) -> None:
    rows = [row(i, features=[0.1 * i, 123.456, -7.0]) for i in range(3)]
    store = LabelStore(tmp_path)
    store.append(rows)
    clean = store.path.read_bytes()
    start = len(encode_row(rows[0]))
    end = start + len(encode_row(rows[1])) - 1  # the newline itself is the line structure
    checked = 0
    for pos in range(start, end):
        for bit in range(8):
            flipped = clean[pos] ^ (1 << bit)
            if flipped == 0x0A:  # a new line break changes the line count, not a row's content
                continue
            data = bytearray(clean)
            data[pos] = flipped
            store.path.write_bytes(bytes(data))
            s = LabelStore(tmp_path)
            assert s.count() == 3 and s.latest() == {"s0": rows[0], "s2": rows[2]}, (pos, bit)
            assert s.corrupt_lines == [1]
            checked += 1
    assert checked > 500


def test_a_flip_that_still_parses_as_json_is_caught(tmp_path: Path) -> None:
    store = LabelStore(tmp_path)
    store.append([row(0, features=[1.5])])
    data = store.path.read_bytes()
    flipped = data.replace(b"[1.5]", b"[3.5]")  # '1' -> '3' is one bit
    assert json.loads(flipped.split(b"\t")[0])["features"] == [3.5]
    store.path.write_bytes(flipped)
    assert store.latest() == {} and store.corrupt_lines == [0]


def test_a_row_glued_onto_a_torn_one_by_an_older_version_is_recovered(tmp_path: Path) -> None:
    # Before repairs, an append after a crash wrote straight after the torn bytes.
    torn = legacy_line(row(1))[:25]
    data = legacy_line(row(0)) + torn + legacy_line(row(1, label="3")) + legacy_line(row(2))
    (tmp_path / "labels.jsonl").write_bytes(data)
    store = LabelStore(tmp_path, on_repair=(calls := Recorder()))
    assert store.count() == 3
    assert store.latest() == {"s0": row(0), "s1": row(1, label="3"), "s2": row(2)}
    assert calls.calls == [(CORRUPT_LINE, 25)] and store.salvaged_rows == 1 and store.corrupt_lines == [1]
    # the same with checksummed lines (an old writer appending after a new torn tail)
    data = encode_row(row(0)) + encode_row(row(1))[:30] + encode_row(row(1, label="3"))
    (tmp_path / "labels.jsonl").write_bytes(data)
    assert LabelStore(tmp_path).latest() == {"s0": row(0), "s1": row(1, label="3")}


def test_a_failing_repair_callback_does_not_break_the_store(tmp_path: Path) -> None:
    def boom(reason: str, nbytes: int) -> None:
        raise RuntimeError("metrics down")

    (tmp_path / "labels.jsonl").write_bytes(encode_row(row(0)) + b"junk\n" + encode_row(row(1))[:9])
    store = LabelStore(tmp_path, on_repair=boom)
    assert store.latest() == {"s0": row(0)} and store.repairs == {TORN_TAIL: 1, CORRUPT_LINE: 1}


# --- semantics ---------------------------------------------------------------------------------
ops = st.lists(st.tuples(st.integers(0, 5), st.sampled_from(["a", "b", "c", EDGE_CASE, UNDO]),
                         st.booleans()), max_size=40)


@settings(max_examples=examples(150), deadline=None)
@given(ops)
def test_latest_wins_undo_and_upto_match_a_reference(seq: list[tuple[int, str, bool]]) -> None:
    """Random labels, undos and corrupt slots: every prefix reads like the reference model."""
    rows = [row(i, label=label, sid=f"id{k}", features=[float(i)]) for i, (k, label, _) in enumerate(seq)]
    expected: list[Optional[dict[str, Any]]] = [None if bad else r for r, (_, _, bad) in zip(rows, seq)]
    with tempfile.TemporaryDirectory() as d:
        store = LabelStore(Path(d))
        store.append(rows)
        lines = lines_of(store) if rows else []
        store.path.write_bytes(b"".join(b"corrupt\n" if bad else line for line, (_, _, bad) in zip(lines, seq)))
        assert store.count() == len(rows)
        for upto in range(len(rows) + 1):
            assert list(store.latest(upto).items()) == list(reference_latest(expected, upto).items())
        assert store.latest(store.count()) == store.latest()
        X, y, Xe, ye = store.arrays(store.count(), 3)
        final = reference_latest(expected)
        kept = {sid: r for sid, r in final.items() if r["label"] != EDGE_CASE}
        assert sorted(y.tolist() + ye.tolist()) == sorted(r["label"] for r in kept.values())
        assert len(X) == len(y) and len(Xe) == len(ye) and X.shape[1:] in ((1,), (0,))
        train_ids = {r["id"] for r in kept.values() if not is_eval_id(r["id"], 3)}
        assert sorted(X[:, 0].tolist() if len(X) else []) == sorted(kept[s]["features"][0] for s in train_ids)


def test_undo_then_relabel(tmp_path: Path) -> None:
    store = LabelStore(tmp_path)
    store.append([row(0), row(1), row(0, label=UNDO, features=[]), row(2)])
    assert list(store.latest()) == ["s1", "s2"]
    store.append([row(0, label="8")])
    assert list(store.latest()) == ["s1", "s2", "s0"] and store.latest()["s0"]["label"] == "8"
    assert list(store.latest(3)) == ["s1"]


def test_count_and_upto_agree_with_a_torn_tail_and_a_corrupt_line(tmp_path: Path) -> None:
    store = LabelStore(tmp_path)
    store.append([row(i) for i in range(4)])
    lines = lines_of(store)
    lines[1] = b"\x00garbage\n"
    store.path.write_bytes(b"".join(lines) + encode_row(row(9))[:-3])
    total = store.count()
    assert total == 4  # newline-terminated lines, corrupt one included, torn tail not
    assert store.latest(total) == store.latest() == {"s0": row(0), "s2": row(2), "s3": row(3)}
    store.append([row(4)])  # repairs the tail; the new row is number 4
    assert store.count() == 5 and [n for n, _ in store.rows()] == [0, 2, 3, 4]
    assert store.latest(total) == {"s0": row(0), "s2": row(2), "s3": row(3)}
