"""Native thread pools sized for a scorer: BLAS threads (numpy) capped once per process."""

from __future__ import annotations

from threadpoolctl import threadpool_limits

_applied: list[object] = []  # keeps the limiter alive for the process lifetime


def limit_blas_threads(threads: int) -> None:
    """Cap BLAS (OpenBLAS/MKL) threads; 0 leaves the library default.

    Multi-threaded BLAS on a (1000 x 64) @ (64 x 64) product spends more time waking and
    spinning threads than computing, and measured 15x slower on a busy 2-core machine.
    """
    if threads > 0:
        _applied.append(threadpool_limits(limits=threads, user_api="blas"))
