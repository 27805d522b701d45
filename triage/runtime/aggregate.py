"""One /metrics page for several scorer workers: their pages merged, sample by sample.

Why an aggregating parent and not prometheus-client's multiprocess mode: the scorer computes
gauges at scrape time (``triage_ready``, ``triage_blocked_seconds``: ``set_function``, which
multiprocess mode cannot export), observes histograms in bulk (``observe_many``), and keeps one
private registry per process; multiprocess mode would need all of that rewritten, a shared
directory wiped on every start, and dead workers' files marked by hand. Here every worker keeps
its own registry and serves it on 127.0.0.1; the parent scrapes and merges:

- counters, histograms and summaries are summed over the workers. A worker that dies takes its
  counts with it, so the counts last scraped from it are kept (``retire``) and added to every
  later page: totals never go backwards (what the dead worker counted after the last scrape is
  missing from them, not from the stream);
- gauges take the largest value over the workers (lag per partition: each partition is owned
  by one worker; timestamps: the newest), except ``triage_ready``, which takes the smallest
  (ready only when every worker is), and is 0 while a worker is missing.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Mapping, Optional

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

SUMMED = ("counter", "histogram", "summary", "gaugehistogram")
MIN_GAUGES = frozenset({"triage_ready"})

Key = tuple[str, tuple[tuple[str, str], ...]]  # (sample name, sorted labels)


def _key(name: str, labels: Mapping[str, str]) -> Key:
    return name, tuple(sorted(labels.items()))


class MetricsMerger:
    """Merge the metrics pages of workers (by slot); remember what retired workers counted."""

    def __init__(self) -> None:
        self._last: dict[int, dict[Key, float]] = {}  # summed samples of each slot's last page
        self._retired: dict[Key, float] = {}
        self._families: dict[str, tuple[str, str]] = {}  # name -> (type, help), every one seen
        self._lock = threading.Lock()  # retire (supervisor thread) vs merge (HTTP threads)

    def retire(self, slot: int) -> None:
        """The worker in ``slot`` died: keep its last counts in the totals from now on."""
        with self._lock:
            for key, value in self._last.pop(slot, {}).items():
                self._retired[key] = self._retired.get(key, 0.0) + value

    def merge(self, pages: Mapping[int, Optional[str]]) -> list[Metric]:
        """``pages``: slot -> its /metrics text, or None when it could not be scraped."""
        with self._lock:
            return self._merge(pages)

    def _merge(self, pages: Mapping[int, Optional[str]]) -> list[Metric]:
        summed: dict[str, dict[Key, float]] = {}
        gauges: dict[str, dict[Key, float]] = {}
        created: dict[str, dict[Key, float]] = {}
        missing = False
        for slot, text in pages.items():
            if text is None:
                missing = True
                continue
            last: dict[Key, float] = {}
            for family in text_string_to_metric_families(text):
                self._families[family.name] = (family.type, family.documentation)
                for s in family.samples:
                    key = _key(s.name, s.labels)
                    if family.type in SUMMED:
                        if s.name.endswith("_created"):
                            into = created.setdefault(family.name, {})
                            into[key] = min(into.get(key, s.value), s.value)
                            continue
                        last[key] = s.value
                        into = summed.setdefault(family.name, {})
                        into[key] = into.get(key, 0.0) + s.value
                    else:
                        into = gauges.setdefault(family.name, {})
                        pick = min if family.name in MIN_GAUGES else max
                        into[key] = pick(into[key], s.value) if key in into else s.value
            self._last[slot] = last
        for key, value in self._retired.items():
            family = self._family_of(key[0])
            if family is not None:
                into = summed.setdefault(family, {})
                into[key] = into.get(key, 0.0) + value
        if missing:
            for key in gauges.get("triage_ready", {}):
                gauges["triage_ready"][key] = 0.0
        return [self._metric(name, samples) for name, samples in
                _ordered(self._families, summed, gauges, created)]

    def _family_of(self, sample: str) -> Optional[str]:
        for suffix in ("_total", "_bucket", "_sum", "_count", ""):
            name = sample.removesuffix(suffix) if suffix else sample
            if name in self._families:
                return name
        return None

    def _metric(self, name: str, samples: dict[Key, float]) -> Metric:
        kind, doc = self._families[name]
        metric = Metric(name, doc, kind)
        for (sample, labels), value in samples.items():
            metric.add_sample(sample, dict(labels), value)
        return metric


def _ordered(families: Mapping[str, object], *parts: dict[str, dict[Key, float]]) -> Iterable[tuple[str, dict[Key, float]]]:
    for name in families:
        samples: dict[Key, float] = {}
        for part in parts:
            samples.update(part.get(name, {}))
        if samples:
            yield name, samples


# --- the parent's endpoint ------------------------------------------------------------------

SCRAPE_TIMEOUT_S = 5.0
Ports = Callable[[], Mapping[int, Optional[int]]]  # slot -> its worker's port (None: not up)


def fetch(port: Optional[int], path: str) -> Optional[tuple[int, bytes]]:
    """GET ``path`` from a worker's endpoint on 127.0.0.1: (status, body), None if unreachable."""
    if port is None:
        return None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=SCRAPE_TIMEOUT_S) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:  # /readyz answers 503 with its checks
        return exc.code, exc.read()
    except OSError:
        return None


def _fetch_all(ports: Mapping[int, Optional[int]], path: str) -> dict[int, Optional[tuple[int, bytes]]]:
    with ThreadPoolExecutor(max_workers=min(8, max(len(ports), 1))) as pool:
        return dict(zip(ports, pool.map(lambda p: fetch(p, path), ports.values())))


class WorkersCollector(Collector):
    """A collector for the parent's registry: every worker's /metrics, merged at scrape time."""

    def __init__(self, ports: Ports, merger: MetricsMerger) -> None:
        self.ports = ports
        self.merger = merger

    def collect(self) -> Iterator[Metric]:
        pages = {slot: r[1].decode() if r is not None and r[0] == 200 else None
                 for slot, r in _fetch_all(self.ports(), "/metrics").items()}
        yield from self.merger.merge(pages)


class WorkersReadiness:
    """/readyz of the parent: one check per worker, ready only when every worker is."""

    def __init__(self, ports: Ports) -> None:
        self.ports = ports
        self._reasons: dict[str, str] = {}

    def checks(self) -> dict[str, bool]:
        out: dict[str, bool] = {}
        reasons: dict[str, str] = {}
        for slot, r in _fetch_all(self.ports(), "/readyz").items():
            name = f"worker_{slot}"
            if r is None:
                out[name], reasons[name] = False, "not running (starting, or restarting after it died)"
                continue
            try:
                doc = json.loads(r[1])
            except ValueError:
                doc = {}
            out[name] = r[0] == 200 and bool(doc.get("ready"))
            if not out[name]:
                failing = [k for k, ok in doc.get("checks", {}).items() if not ok]
                why = "; ".join(f"{k}: {v}" for k, v in doc.get("reasons", {}).items())
                reasons[name] = "failing: " + ", ".join(failing) + (f" ({why})" if why else "")
        self._reasons = reasons
        return out

    def reasons(self) -> dict[str, str]:
        return dict(self._reasons)
