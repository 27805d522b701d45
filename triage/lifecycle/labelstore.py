"""The persisted training labels: ``<registry>/data/labels.jsonl``, append-only.

Labels are keyed by sample id, so all labels of one id sit in one partition in arrival order.
Every raw label stays stored. What trains is, per sample, either the latest label (latest wins:
a correction is a newer label, an ``__undo__`` removes the id until it is labelled again) or,
for the retrain job, the aggregate over the sample's annotators (``labelview.py``: each
annotator's latest label counts once, an undo retracts its annotator's label, samples held for
a relabel are left out).

File format
-----------
One row per line. A row is a JSON object with ``id`` (str), ``label`` (str), ``features``
(list of float), ``annotator`` (str or null), ``partition`` (int) and ``offset`` (int),
encoded by the contract layer (``triage.contracts.encode_label_row``: ``json.dumps(row, separators=(",", ":"))`` (ASCII only, so it never contains a
raw tab or newline; floats are written with ``repr`` and parsed with msgspec's correctly
rounded decoder, so they read back bit for bit). Each line carries a checksum of the JSON
bytes::

    <json>\\t<crc32 of the json bytes, 8 lowercase hex digits>\\n

Lines without the ``\\t<crc>`` suffix are plain JSON, as written before checksums were added;
they are still read (existing registries keep working), but damage to them is caught only
when it breaks the JSON. A line whose checksum does not match, that is not JSON, or that is
not a row object is *corrupt*.

Row numbers and ``upto``
------------------------
A row's number is the number of newline-terminated lines before it, corrupt ones included.
``count()`` is the number of newline-terminated lines, and ``latest(upto)`` / ``arrays(upto)``
read the first ``upto`` of them. Manifests record ``labels_upto`` as such a line count, so a
corrupt line keeps its slot: it is skipped (never fails a retrain), but the rows after it keep
their numbers and every recorded version still names exactly the rows it was trained on.

Repairs
-------
* **Failed append.** An append that fails (disk full mid-write, read-only file system, EIO at
  fsync) is cut back to the size the file had before it and raises ``OSError``: all or
  nothing, so the retry of its labels never leaves a duplicate or torn row behind.
* **Torn tail.** Every append ends with a newline and is acknowledged (Kafka offsets committed)
  only after fsync, so bytes after the last newline are an interrupted, unacknowledged write
  whose labels will be delivered again. They are truncated when the store is opened and before
  every append (under an exclusive ``flock``, which appends hold too), logged at WARNING with the
  file and the bytes dropped, and counted as ``torn_tail``. Readers ignore such a tail and never
  truncate it (it may be an append still in flight in another process).
* **Corrupt line.** A newline-terminated line that does not decode -- in the middle or last --
  is kept in place and skipped, logged once per store and counted once as ``corrupt_line``. It
  is not truncated even when it is the last line, since its slot may already be counted by a
  manifest. Older versions appended after a torn tail without repairing it, gluing the torn
  bytes onto the next row (``<torn bytes>{"id":...}``); the complete row at the end of such a
  line is recovered (its offset was committed, so Kafka would not deliver it again) and only
  the torn prefix is dropped.

A caller can count repairs with ``on_repair(reason, nbytes)``; ``reason`` is ``"torn_tail"`` or
``"corrupt_line"`` and ``nbytes`` the bytes dropped. The store also keeps the totals itself
(``repairs``, ``torn_tail_bytes``, ``corrupt_bytes``, ``corrupt_lines``).
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterable, Iterator, Optional

import numpy as np

from triage.contracts import decode_label_row, encode_label_row
from triage.contracts.label import (  # noqa: F401  (the reserved label values, named where they are read)
    EDGE_CASE, MARKERS, RELABEL_MARK, RESERVED, TIEBREAK_MARK, UNDO,
)
from triage.errors import InputError

try:  # advisory locking between appenders/repairers; not available on every platform
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX
    fcntl = None  # type: ignore[assignment]

TORN_TAIL = "torn_tail"
CORRUPT_LINE = "corrupt_line"

if TYPE_CHECKING:
    from triage.lifecycle.labelview import LabelView

log = logging.getLogger("triage.labelstore")

Row = dict[str, Any]
RepairCallback = Callable[[str, int], None]

_CRC_SUFFIX = 10  # b"\t" + 8 hex digits + b"\n"
_TAB = 0x09
_ROW_START = b'{"id":'
_CHUNK = 1 << 16
_MAX_LOGGED = 20  # corrupt lines logged one by one per store; the rest are summarised


def is_eval_id(sample_id: str, share: int) -> bool:
    """Stable choice of the new labels reserved for evaluation (never trained on)."""
    return zlib.crc32(sample_id.encode()) % share == 0


def encode_row(row: Row) -> bytes:
    """One stored line: ``<json>\\t<crc32 hex>\\n`` (deterministic for a given dict)."""
    body = encode_label_row(row)
    return b"%s\t%08x\n" % (body, zlib.crc32(body))


def encode_rows(rows: Iterable[Row]) -> list[bytes]:
    """The stored lines of ``rows``, checked for what every row needs (ValueError otherwise)."""
    data = []
    for row in rows:
        if type(row.get("id")) is not str or type(row.get("label")) is not str:
            raise ValueError(f"a label row needs a str `id` and `label`: {row!r:.200}")
        if type(row.get("features")) is not list:
            raise ValueError(f"`features` of label row {row['id']!r} must be a list")
        data.append(encode_row(row))
    return data


def decode_line(line: bytes) -> Optional[Row]:
    """The row stored in one newline-terminated line (checksummed or plain), or None if corrupt."""
    if len(line) > _CRC_SUFFIX and line[-_CRC_SUFFIX] == _TAB:
        body = line[:-_CRC_SUFFIX]
        if b"%08x" % zlib.crc32(body) != line[-9:-1]:
            return None
    else:
        body = line[:-1]
        if b"\t" in body:  # a damaged checksum suffix; plain JSON lines never hold a raw tab
            return None
    try:
        return decode_label_row(body)
    except InputError:
        return None


def _salvage(line: bytes) -> Optional[tuple[Row, int]]:
    """A complete row at the end of a corrupt line, and the bytes before it (see module doc)."""
    start = line.rfind(_ROW_START)
    if start <= 0:
        return None
    row = decode_line(line[start:])
    return (row, start) if row is not None else None


def _last_line_end(fd: int, size: int) -> int:
    """Offset just past the last newline of the file (0 if it has none)."""
    end = size
    while end > 0:
        start = max(0, end - _CHUNK)
        chunk = os.pread(fd, end - start, start)
        i = chunk.rfind(b"\n")
        if i >= 0:
            return start + i + 1
        end = start
    return 0


def _lock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _position(row: Row) -> tuple[int, int]:
    p, o = row.get("partition"), row.get("offset")
    return (p, o) if isinstance(p, int) and isinstance(o, int) else (-1, -1)


def report_repair(repairs: "Counter[str]", on_repair: Optional[RepairCallback], reason: str, nbytes: int) -> None:
    """Count a repair and tell the metrics hook (every label store, file or segments)."""
    repairs[reason] += 1
    if on_repair is not None:
        try:
            on_repair(reason, nbytes)
        except Exception:  # a metrics hook must never break the store
            log.exception("label store repair callback failed")


class LabelRows:
    """What retraining reads from a label store, given its ``rows`` (the file here, segments on
    object storage: labelsegments.py)."""

    _view: Optional[tuple[tuple[int, str, Optional[int]], "LabelView"]] = None  # the last view (see ``view``)

    def rows(self, upto: Optional[int] = None) -> Iterator[tuple[int, Row]]:
        raise NotImplementedError

    def count(self) -> int:
        raise NotImplementedError

    def append(self, rows: Iterable[Row]) -> int:
        raise NotImplementedError

    def clear(self) -> None:
        """Set the rows aside (``triage labels rebuild --replace``)."""
        raise NotImplementedError

    def rebuilding(self) -> bool:
        """A rebuild began and did not finish: the rows are not the store (labels_rebuild.py)."""
        raise NotImplementedError

    def mark_rebuilding(self, on: bool) -> None:
        raise NotImplementedError

    def positions(self) -> dict[tuple[int, int], str]:
        """(partition, offset) -> id of every stored row that has a position."""
        return {(r["partition"], r["offset"]): r["id"] for _, r in self.rows()
                if isinstance(r.get("partition"), int) and isinstance(r.get("offset"), int)}

    def latest(self, upto: Optional[int] = None) -> dict[str, Row]:
        """id -> the last label row among the first ``upto`` rows (latest wins; undo removes;
        the retrain job's markers are not labels)."""
        out: dict[str, Row] = {}
        for _, row in self.rows(upto):
            if row["label"] in MARKERS:
                continue
            out.pop(row["id"], None)  # keep arrival order of the final answers
            if row["label"] != UNDO:
                out[row["id"]] = row
        return out

    def view(self, upto: Optional[int], aggregation: str = "weighted", classes: Optional[int] = None) -> "LabelView":
        """The aggregate of the first ``upto`` rows (labelview.py); the last one is cached, since
        a prefix of the store never changes."""
        from triage.lifecycle.labelview import label_view

        upto = self.count() if upto is None else upto
        key = (upto, aggregation, classes)
        cached = self._view
        if cached is None or cached[0] != key:
            cached = (key, label_view(self.rows(upto), upto, aggregation, classes))
            self._view = cached
        return cached[1]

    def forget_view(self) -> None:
        """Drop the cached view (every row's features): the retrain job keeps none between runs."""
        self._view = None

    def arrays(self, upto: Optional[int], eval_share: int, aggregation: Optional[str] = None,
               classes: Optional[int] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(X_train, y_train, X_eval, y_eval) from one label per id, edge cases left out, in
        (partition, offset) order: the order the labels topic holds them, so it does not depend
        on how an ingest's batches interleaved partitions (a rebuilt store trains alike). Rows
        without a position (written before they had one) come first, in store order.

        ``aggregation`` None: the latest label per id (latest wins). Otherwise the aggregate over
        the sample's annotators by that method, held samples left out (``view``)."""
        from triage.lifecycle.labelview import gc_paused

        with gc_paused():
            return self._arrays(upto, eval_share, aggregation, classes)

    def _arrays(self, upto: Optional[int], eval_share: int, aggregation: Optional[str],
                classes: Optional[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        chosen = self.latest(upto) if aggregation is None else self.view(upto, aggregation, classes).training()
        train_X: list[list[float]] = []
        train_y: list[str] = []
        eval_X: list[list[float]] = []
        eval_y: list[str] = []
        for sid, row in sorted(chosen.items(), key=lambda item: _position(item[1])):
            if row["label"] == EDGE_CASE:
                continue
            if is_eval_id(sid, eval_share):
                eval_X.append(row["features"])
                eval_y.append(row["label"])
            else:
                train_X.append(row["features"])
                train_y.append(row["label"])
        # reshape(0, -1) is an error in numpy, so an empty side gets the other side's width
        width = len((train_X or eval_X or [[]])[0])
        return (np.asarray(train_X, dtype=np.float64).reshape(len(train_X), width), np.asarray(train_y, dtype=str),
                np.asarray(eval_X, dtype=np.float64).reshape(len(eval_X), width), np.asarray(eval_y, dtype=str))


class LabelStore(LabelRows):
    """Append-only label rows in ``<data_dir>/labels.jsonl`` (format and repairs: module doc)."""

    def __init__(self, data_dir: Path, *, on_repair: Optional[RepairCallback] = None) -> None:
        self.path = Path(data_dir) / "labels.jsonl"
        self.on_repair = on_repair
        self.repairs: Counter[str] = Counter()  # repair events by reason (torn_tail | corrupt_line)
        self.torn_tail_bytes = 0  # bytes truncated from torn tails
        self.corrupt_bytes = 0  # bytes of corrupt lines skipped (torn prefixes of recovered rows)
        self.salvaged_rows = 0  # rows recovered from the end of a corrupt line
        self._corrupt: dict[int, int] = {}  # row number -> bytes dropped, each reported once
        try:
            self.repair()
        except OSError as exc:  # e.g. a read-only registry: readers still ignore the tail
            log.warning("%s: could not repair the label store: %s", self.path, exc)

    @property
    def corrupt_lines(self) -> list[int]:
        """Row numbers (0-based) of the corrupt lines found so far."""
        return sorted(self._corrupt)

    # --- writing ---------------------------------------------------------------------------
    def repair(self) -> int:
        """Truncate a torn tail (bytes after the last newline); returns the bytes dropped."""
        try:
            with open(self.path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size == 0 or _last_line_end(fh.fileno(), size) == size:
                    return 0  # the common case needs no write access and no lock
        except FileNotFoundError:
            return 0
        fd = os.open(self.path, os.O_RDWR)
        try:
            _lock(fd)  # released by close
            return self._truncate_torn_tail(fd)
        finally:
            os.close(fd)

    def _truncate_torn_tail(self, fd: int) -> int:
        size = os.fstat(fd).st_size
        keep = _last_line_end(fd, size)
        dropped = size - keep
        if dropped:
            os.ftruncate(fd, keep)
            os.fsync(fd)
            log.warning("%s: truncated a torn last line (%d bytes after byte %d) left by an interrupted "
                        "write; its labels were never acknowledged and will be delivered again",
                        self.path, dropped, keep)
            self.torn_tail_bytes += dropped
            self._report(TORN_TAIL, dropped)
        return dropped

    def append(self, rows: Iterable[Row]) -> int:
        """Persist ``rows`` (one write, then fsync) and return how many were written.

        A torn tail is truncated first, so a new row never lands on the end of a torn one."""
        data = encode_rows(rows)
        if not data:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            _lock(fd)  # released by close
            self._truncate_torn_tail(fd)
            start = os.fstat(fd).st_size
            payload = memoryview(b"".join(data))
            try:
                while payload:  # one write(2) in practice; loop in case it is short
                    payload = payload[os.write(fd, payload):]
                os.fsync(fd)
            except OSError:
                self._undo(fd, start)
                raise
        finally:
            os.close(fd)
        if created:
            _fsync_dir(self.path.parent)
        return len(data)

    def rebuilding(self) -> bool:
        return self._marker.exists()

    def mark_rebuilding(self, on: bool) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if on:
            with open(self._marker, "wb") as fh:
                os.fsync(fh.fileno())
        elif self._marker.exists():
            self._marker.unlink()
        _fsync_dir(self.path.parent)

    @property
    def _marker(self) -> Path:
        return self.path.with_name(self.path.name + ".rebuilding")

    def clear(self) -> None:
        """Move labels.jsonl aside as ``labels.jsonl.replaced-<epoch s>`` (kept, never deleted)."""
        self._view = None
        if self.path.exists():
            os.replace(self.path, self.path.with_name(f"{self.path.name}.replaced-{int(time.time())}"))

    def _undo(self, fd: int, start: int) -> None:
        """All or nothing: a failed append (disk full mid-write, EIO at fsync) is cut back to
        where it started, so its retry cannot leave complete duplicate rows behind; if even
        that fails, whatever follows the last newline is a torn tail, repaired later."""
        try:
            os.ftruncate(fd, start)
            os.fsync(fd)
        except OSError as exc:
            log.warning("%s: could not cut a failed append back to byte %d: %s", self.path, start, exc)

    # --- reading ---------------------------------------------------------------------------
    def count(self) -> int:
        """Rows in the store: newline-terminated lines, corrupt ones included (the ``upto`` unit)."""
        try:
            fh = open(self.path, "rb")
        except FileNotFoundError:
            return 0
        with fh:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))

    def rows(self, upto: Optional[int] = None) -> Iterator[tuple[int, Row]]:
        """(row number, row) for the good rows among the first ``upto``; corrupt lines skipped."""
        try:
            fh = open(self.path, "rb")
        except FileNotFoundError:
            return
        with fh:
            yield from self._scan(fh, upto)

    def _scan(self, fh: BinaryIO, upto: Optional[int]) -> Iterator[tuple[int, Row]]:
        new_corrupt: list[tuple[int, int, bool]] = []
        try:
            for n, line in enumerate(fh):
                if upto is not None and n >= upto:
                    break
                if line[-1:] != b"\n":
                    break  # torn tail (or an append in flight): not a row yet
                row = decode_line(line)
                if row is None:
                    salvaged = _salvage(line)
                    if n not in self._corrupt:
                        dropped = salvaged[1] if salvaged else len(line)
                        self._corrupt[n] = dropped
                        new_corrupt.append((n, dropped, salvaged is not None))
                    if salvaged is None:
                        continue
                    row = salvaged[0]
                yield n, row
        finally:
            self._report_corrupt(new_corrupt)

    # --- accounting ------------------------------------------------------------------------
    def _report_corrupt(self, found: list[tuple[int, int, bool]]) -> None:
        for i, (n, dropped, salvaged) in enumerate(found):
            self.corrupt_bytes += dropped
            if salvaged:
                self.salvaged_rows += 1
            if i < _MAX_LOGGED:
                if salvaged:
                    log.warning("%s: row %d: dropped %d torn bytes glued before a complete row (an append after "
                                "an unrepaired torn write); the row is kept", self.path, n, dropped)
                else:
                    log.warning("%s: row %d is corrupt (%d bytes dropped: bad checksum or not a label row); "
                                "skipped, later rows keep their numbers", self.path, n, dropped)
            self._report(CORRUPT_LINE, dropped)
        if len(found) > _MAX_LOGGED:
            log.warning("%s: %d more corrupt rows skipped (%d in all so far)",
                        self.path, len(found) - _MAX_LOGGED, len(self._corrupt))

    def _report(self, reason: str, nbytes: int) -> None:
        report_repair(self.repairs, self.on_repair, reason, nbytes)
