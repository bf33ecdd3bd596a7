"""Query folds for cross-fitting: a query's fold is a stable hash of its id, so every job,
worker and machine puts it in the same fold without sharing any state.

A teacher trained on the queries outside fold i (`data.holdout: {folds: n, fold: i}`) has
never seen fold i's labels; a `cross_fit` teacher scores each query with the member trained
without that query's fold, so its scores on training queries say what it knows beyond the
labels instead of restating them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping

FOLD_RULE = "sha256(qid) mod folds"


def fold_of(qid: str, folds: int) -> int:
    """The fold (0 .. folds-1) of a query id; the same on every run and machine."""
    if folds < 1:
        raise ValueError(f"folds must be >= 1, got {folds}")
    digest = hashlib.sha256(str(qid).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % folds


def outside_fold(groups: Iterable[Mapping], folds: int, fold: int) -> Iterator[Mapping]:
    """The groups whose query is not in `fold` of `folds` (the queries a held-out member
    trains on)."""
    for group in groups:
        if fold_of(group["qid"], folds) != fold:
            yield group
