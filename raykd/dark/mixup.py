"""Discrete mix-up: move part of a positive into a hard negative (ADAM's reinforced negative).

Both strategies work on whole words and return the new word list plus what was taken from
where (for the provenance record). Randomness comes only from the generator passed in.

- ``span``: a contiguous span of ``round(rho * n)`` of the negative's ``n`` words is replaced by
  a contiguous span of the same length sampled from the positive (shorter when the positive
  has fewer words). The result has the negative's length in words.
- ``interleave``: all of the negative's sentences are kept in order and a contiguous run of the
  positive's sentences is spread evenly between them, so that about ``rho`` of the result's
  sentences come from the positive (at least one; at most all of the positive's).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from raykd.dark.words import fraction_count, sentences_of

MIX_STRATEGIES = ("span", "interleave")


def span_mixup(
    negative: Sequence[str], positive: Sequence[str], rho: float, rng: np.random.Generator
) -> tuple[list[str], dict]:
    """Replace a contiguous span of the negative by a same-length span of the positive."""
    n, p = len(negative), len(positive)
    if n == 0 or p == 0:
        raise ValueError("span mix-up needs non-empty negative and positive")
    length = min(max(1, fraction_count(rho, n)), n, p)
    start = int(rng.integers(0, n - length + 1))
    source = int(rng.integers(0, p - length + 1))
    words = [*negative[:start], *positive[source : source + length], *negative[start + length :]]
    info = {"neg_span": [start, start + length], "pos_span": [source, source + length]}
    return words, info


def interleave_mixup(
    negative: Sequence[str], positive: Sequence[str], rho: float, rng: np.random.Generator
) -> tuple[list[str], dict]:
    """Spread a run of the positive's sentences evenly among the negative's sentences."""
    neg_sents, pos_sents = sentences_of(negative), sentences_of(positive)
    if not neg_sents or not pos_sents:
        raise ValueError("interleave mix-up needs non-empty negative and positive")
    s = len(neg_sents)
    # m / (s + m) ~= rho  <=>  m ~= rho * s / (1 - rho)
    m = min(max(1, fraction_count(rho / (1.0 - rho), s)), len(pos_sents))
    first = int(rng.integers(0, len(pos_sents) - m + 1))
    chosen = pos_sents[first : first + m]
    total = s + m
    phase = float(rng.random())
    # Slots j * total / m (+ phase) are at least one apart, so the floors are distinct.
    slots = [min(total - 1, math.floor((j + phase) * total / m)) for j in range(m)]
    pos_slots = set(slots)
    words: list[str] = []
    neg_iter, pos_iter = iter(neg_sents), iter(chosen)
    for slot in range(total):
        words.extend(next(pos_iter) if slot in pos_slots else next(neg_iter))
    info = {
        "pos_sentences": [first, first + m],
        "sentences": total,
        "pos_slots": sorted(pos_slots),
    }
    return words, info


def mixup(
    negative: Sequence[str],
    positive: Sequence[str],
    rho: float,
    strategy: str,
    rng: np.random.Generator,
) -> tuple[list[str], dict]:
    if strategy == "span":
        return span_mixup(negative, positive, rho, rng)
    if strategy == "interleave":
        return interleave_mixup(negative, positive, rho, rng)
    raise ValueError(f"mix_strategy must be one of {MIX_STRATEGIES}, got {strategy!r}")
