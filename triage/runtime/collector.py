"""The cyclic garbage collector sized for batch loops.

CPython runs a young-generation collection each time the tracked objects allocated minus
those freed pass 700. A scorer batch of 1000 records keeps ~5 tracked objects per record
alive (the decoded sample, its features list and meta, the output record) until the batch
ends, so the default threshold triggers ~7 collections per batch that find every one of them
alive, promote them, and trigger full collections over the whole heap (onnxruntime, numpy,
the clients): profiled at ~30% of the scorer thread. The batch's objects hold no cycles and
die by reference counting, so a young generation larger than a batch collects the same
garbage at almost no cost.
"""

from __future__ import annotations

import gc

TRACKED_PER_RECORD = 10  # ~5 alive per record in a batch, doubled for headroom


def size_young_generation(batch_size: int) -> int:
    """Raise the young generation's threshold above one batch's live objects; never lower it
    (several loops may share a process). Returns the threshold in force."""
    young, *older = gc.get_threshold()
    wanted = max(young, TRACKED_PER_RECORD * batch_size)
    if wanted != young:
        gc.set_threshold(wanted, *older)
    return wanted
