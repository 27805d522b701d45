"""Which annotators of a pool a review request goes to: rendezvous (highest-random-weight) hashing.

Every console of the pool reads every request (its own consumer group) and shows it only when its
annotator is among the request's assignees. Nothing is coordinated: each console computes the
same answer from the sample id, the pool and the request alone.

The assignees of a request are the ``annotators - len(labelled_by)`` people of the pool not in
``labelled_by`` whose hash of (sample id, name) is highest. A request never reaches anyone in
``labelled_by``, and since each sample ranks the pool the same way every time, one more annotator
(a tiebreak: ``annotators + 1``, ``labelled_by`` = the first ones) reaches exactly one new person,
the next in that sample's ranking. Adding or removing one person from the pool moves only the
requests that person is or becomes an assignee of.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Sequence


def weight(sample_id: str, name: str) -> int:
    """The rank of ``name`` for ``sample_id`` (stable across processes and Python versions)."""
    digest = hashlib.blake2b(f"{sample_id}\x00{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def ranking(sample_id: str, pool: Iterable[str]) -> list[str]:
    """The pool (duplicates dropped) from the highest weight for this sample down."""
    return sorted(dict.fromkeys(pool), key=lambda name: (weight(sample_id, name), name), reverse=True)


def assignees(sample_id: str, pool: Sequence[str], annotators: int, labelled_by: Sequence[str]) -> list[str]:
    """Who of ``pool`` labels this request: as many as it still needs, never one who labelled it."""
    done = set(labelled_by)
    need = max(annotators - len(done), 0)
    return [name for name in ranking(sample_id, pool) if name not in done][:need]


def parse_pool(text: str) -> list[str]:
    """``alice,bob,carol`` -> the names, in order, without blanks or repeats."""
    return list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
