"""Masking a positive (ADAM's noisy positive): whole words replaced by a mask token or deleted.

``round(rho * n)`` of the ``n`` words (at least one) are chosen, either uniformly (``random``) or
words that overlap the query first (``query_overlap_first``: case-folded, punctuation removed),
then uniformly among the others. When deleting, at least one word is kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from raykd.dark.words import fraction_count, normalize_word, words_of

MASK_STRATEGIES = ("random", "query_overlap_first")


def query_terms(query: str) -> set[str]:
    return {t for t in (normalize_word(w) for w in words_of(query)) if t}


def mask_positions(
    words: Sequence[str],
    rho: float,
    rng: np.random.Generator,
    strategy: str = "random",
    query: str = "",
    keep_one: bool = False,
) -> list[int]:
    """The sorted word positions to mask."""
    if strategy not in MASK_STRATEGIES:
        raise ValueError(f"mask_strategy must be one of {MASK_STRATEGIES}, got {strategy!r}")
    n = len(words)
    if n == 0:
        return []
    m = min(max(1, fraction_count(rho, n)), n - 1 if keep_one else n)
    if m <= 0:
        return []
    if strategy == "random":
        return sorted(int(i) for i in rng.choice(n, size=m, replace=False))
    terms = query_terms(query)
    overlap = [i for i, w in enumerate(words) if normalize_word(w) in terms]
    if len(overlap) >= m:
        return sorted(int(i) for i in rng.choice(overlap, size=m, replace=False))
    taken = set(overlap)
    others = [i for i in range(n) if i not in taken]
    extra = rng.choice(others, size=m - len(overlap), replace=False) if m > len(overlap) else []
    return sorted([*overlap, *(int(i) for i in extra)])


def mask_words(
    words: Sequence[str],
    rho: float,
    rng: np.random.Generator,
    mask_token: str | None = "[MASK]",
    strategy: str = "random",
    query: str = "",
) -> tuple[list[str], dict]:
    """Mask (or, with ``mask_token=None``, delete) a fraction ``rho`` of the words."""
    positions = mask_positions(words, rho, rng, strategy, query, keep_one=mask_token is None)
    chosen = set(positions)
    if mask_token is None:
        out = [w for i, w in enumerate(words) if i not in chosen]
    else:
        out = [mask_token if i in chosen else w for i, w in enumerate(words)]
    return out, {"positions": positions}
