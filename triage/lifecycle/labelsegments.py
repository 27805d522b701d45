"""The label store on object storage: ``<prefix>/data/labels/<n>.jsonl``, one immutable segment
per append.

A segment holds the lines one append of ``labelstore.LabelStore`` would write (same row format,
same checksums), and the store reads as the segments' lines in segment order: row numbers and
``upto`` mean what they mean for ``labels.jsonl``, so manifests stay valid either way. A segment
is created with ``If-None-Match: *`` under the next free number, so two appenders never
overwrite each other (the loser takes the next number). A segment never changes once
written, but ``labels rebuild --replace`` deletes them all and numbers its own from 1 again:
each is fetched once per process and ETag, so a process that read the old store reads the new
one. There is no torn tail to repair. The retrain job keeps no label state on disk.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Iterable, Iterator, Optional

from triage.errors import RegistryError
from triage.lifecycle.labelstore import (
    CORRUPT_LINE, LabelRows, RepairCallback, Row, decode_line, encode_rows, report_repair,
)
from triage.lifecycle.objectstore import ObjectStore

log = logging.getLogger("triage.labelstore")
PREFIX = "data/labels/"
REBUILDING = "data/labels.rebuilding"  # outside PREFIX: a marker, not a segment
_DIGITS = 10


def segment_key(n: int) -> str:
    return f"{PREFIX}{n:0{_DIGITS}d}.jsonl"


class SegmentLabelStore(LabelRows):
    def __init__(self, store: ObjectStore, *, on_repair: Optional[RepairCallback] = None) -> None:
        self.store = store
        self.on_repair = on_repair
        self.path = f"{store.location}/{PREFIX}"  # for messages, like LabelStore.path
        self.repairs: Counter[str] = Counter()
        self._lines: dict[tuple[str, str], list[bytes]] = {}  # (segment key, ETag) -> its lines
        self._corrupt: set[int] = set()

    def segments(self) -> list[str]:
        return [key for key, _ in self._listed()]

    def _listed(self) -> list[tuple[str, str]]:
        listed = sorted((k, tag) for k, tag in self.store.listing(PREFIX) if k.endswith(".jsonl"))
        names = set(listed)
        if any(seen not in names for seen in self._lines):  # replaced: forget what no listing names
            self._lines = {seen: lines for seen, lines in self._lines.items() if seen in names}
            self._corrupt.clear()
        return listed

    def _segment_lines(self, key: str, etag: str) -> list[bytes]:
        lines = self._lines.get((key, etag))
        if lines is None:
            got = self.store.get(key)
            if got is None:
                raise RegistryError(f"label segment {key} disappeared while being read")
            lines = got[0].splitlines(keepends=True)
            self._lines[(key, etag)] = lines  # as listed: a GET of other bytes is re-read next time
        return lines

    def append(self, rows: Iterable[Row]) -> int:
        data = encode_rows(rows)
        if not data:
            return 0
        payload = b"".join(data)
        for _ in range(100):
            existing = self.segments()
            n = int(existing[-1][len(PREFIX):-len(".jsonl")]) + 1 if existing else 1
            if self.store.create(segment_key(n), payload):
                return len(data)
        raise RegistryError(f"{self.path}: could not take a segment number (too many concurrent appenders)")

    def rebuilding(self) -> bool:
        return self.store.get(REBUILDING) is not None

    def mark_rebuilding(self, on: bool) -> None:
        if on:
            self.store.put(REBUILDING, b"")
        else:
            self.store.delete(REBUILDING)

    def clear(self) -> None:
        """Delete every segment (the store is rebuilt from the labels topic right after)."""
        for key in self.segments():
            self.store.delete(key)
        self._lines.clear()
        self._view = None

    def count(self) -> int:
        return sum(len(self._segment_lines(k, tag)) for k, tag in self._listed())

    def rows(self, upto: Optional[int] = None) -> Iterator[tuple[int, Row]]:
        n = 0
        for key, tag in self._listed():
            for line in self._segment_lines(key, tag):
                if upto is not None and n >= upto:
                    return
                row = decode_line(line if line.endswith(b"\n") else line + b"\n")
                if row is None:
                    self._corrupt_line(n, key, len(line))
                else:
                    yield n, row
                n += 1

    def _corrupt_line(self, n: int, key: str, nbytes: int) -> None:
        if n in self._corrupt:
            return
        self._corrupt.add(n)
        log.warning("%s%s: row %d is corrupt (%d bytes: bad checksum or not a label row); skipped, later rows "
                    "keep their numbers", self.path, key[len(PREFIX):], n, nbytes)
        report_repair(self.repairs, self.on_repair, CORRUPT_LINE, nbytes)
