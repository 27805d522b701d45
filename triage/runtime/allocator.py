"""glibc's malloc kept from handing a batch loop's memory back to the kernel after every batch.

A scorer batch allocates a few MB of large temporaries (the joined feature text, the parsed
matrix, numpy's intermediates) and frees them all when the batch ends. glibc serves blocks over
its mmap threshold with mmap and returns them with munmap, and trims the heap's free top above
its trim threshold: the next batch faults the same pages back in. Measured on a 1000-record
batch (bench/process_batch.py's workload): ~790 minor page faults per batch and 8.0 us per
record, against 0 faults and 6.0 us with the thresholds below. The cost is that freed memory
stays in the process (RSS holds the largest batch's working set), as with jemalloc or tcmalloc.
"""

from __future__ import annotations

import ctypes
import logging
from functools import lru_cache
from typing import Optional

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest (HEAP_MAX / 2 on 64-bit): blocks below it come from the heap
TRIM_THRESHOLD = 64 * 1024 * 1024  # free heap kept before any is given back (a batch churns a few MB)


def keep_freed_memory() -> bool:
    """Set the thresholds (glibc only; elsewhere a no-op). True when they are in force."""
    libc = _glibc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not ok:
        log.debug("mallopt refused the batch thresholds; keeping glibc's defaults")
    return ok


@lru_cache(maxsize=1)
def _glibc() -> Optional[ctypes.CDLL]:
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols: libc's among them (find_library would run ldconfig)
        libc.gnu_get_libc_version  # glibc only: musl and macOS have no mallopt thresholds like these
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc
