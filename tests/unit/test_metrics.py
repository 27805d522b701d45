from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Histogram

from triage.metrics import observe_many


def test_observe_many_matches_per_value_observe() -> None:
    values = np.array([0.0, 0.05, 0.1, 0.33, 0.5, 0.99, 1.0, 7.0, np.nan])
    a, b = CollectorRegistry(), CollectorRegistry()
    ha = Histogram("h", "h", buckets=(0.05, 0.5, 1.0), registry=a)
    hb = Histogram("h", "h", buckets=(0.05, 0.5, 1.0), registry=b)
    observe_many(ha, values)
    for v in values[~np.isnan(values)]:
        hb.observe(float(v))
    samples = lambda r: sorted((s.name, tuple(sorted(s.labels.items())), round(s.value, 9)) for m in r.collect() for s in m.samples if not s.name.endswith("_created"))  # noqa: E731
    assert samples(a) == samples(b)
