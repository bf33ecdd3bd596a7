"""Negative sampling policies over a ranked candidate list, seeded per query.

A ranking is a list of pids, best first; a candidate's rank is its 0-based position in the
retrieved list *before* positives are removed, so a window means retrieval ranks. Labelled
positives (and any pid judged relevant at all) are never negatives.

- ``hardest``: the best-ranked non-positives, in rank order (PROD's ``descend``).
- ``random``: a uniform sample of the non-positives in the top ``depth``, in sampled order
  (PROD's ``random``: shuffle the top-100, take the first n).
- ``window``: a uniform sample of the non-positives whose rank lies in ``[start, end)``.

Each query draws from its own generator, seeded by (seed, sha256(qid)), so a query gets the
same negatives whatever the order, sharding or subset of queries it is processed with.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from raykd.errors import ConfigError

Sampling = Literal["random", "hardest", "window"]
SAMPLINGS = ("random", "hardest", "window")


def query_rng(seed: int, qid: str) -> np.random.Generator:
    """A generator that depends only on the seed and the query id."""
    digest = hashlib.sha256(str(qid).encode("utf-8")).digest()
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *np.frombuffer(digest[:16], np.uint32)])


def interleave_rankings(rankings: Sequence[Sequence[str]], depth: int | None = None) -> list[str]:
    """Round-robin merge of several rankings (rank 0 of each, then rank 1...), first occurrence
    kept, cut at `depth`."""
    out: list[str] = []
    seen: set[str] = set()
    longest = max((len(r) for r in rankings), default=0)
    for rank in range(longest):
        for ranking in rankings:
            if rank < len(ranking) and ranking[rank] not in seen:
                seen.add(ranking[rank])
                out.append(ranking[rank])
    return out if depth is None else out[:depth]


@dataclass(frozen=True)
class NegativeSampler:
    """Pick `num_negatives` negatives per query from its ranking with a policy."""

    num_negatives: int = 7
    sampling: Sampling = "random"
    depth: int = 100
    window: tuple[int, int] = (0, 100)
    seed: int = 13

    def __post_init__(self):
        if self.sampling not in SAMPLINGS:
            raise ConfigError("data.sampling", f"{self.sampling!r} is not one of {SAMPLINGS}")
        if self.num_negatives < 0:
            raise ConfigError("data.num_negatives", f"must be >= 0, got {self.num_negatives}")
        if self.depth < 1:
            raise ConfigError("data.depth", f"must be >= 1, got {self.depth}")
        start, end = self.window
        if start < 0 or end <= start:
            raise ConfigError("data.window",
                              f"must be (start, end) with 0 <= start < end, got {self.window}")
        object.__setattr__(self, "window", (int(start), int(end)))

    @classmethod
    def from_spec(cls, spec) -> NegativeSampler:
        """From a `raykd.config.DataSpec`."""
        return cls(num_negatives=spec.num_negatives, sampling=spec.sampling, depth=spec.depth,
                   window=tuple(spec.window), seed=spec.seed)

    def pool(self, ranking: Sequence[str], exclude: Collection[str]) -> list[tuple[int, str]]:
        """(rank, pid) of the eligible negatives in the top `depth`, in rank order."""
        lo, hi = (self.window if self.sampling == "window" else (0, self.depth))
        hi = min(hi, self.depth)
        return [(rank, pid) for rank, pid in enumerate(ranking[:hi])
                if rank >= lo and pid not in exclude]

    def sample(self, qid: str, ranking: Sequence[str], exclude: Collection[str]
               ) -> list[tuple[int, str]]:
        """The chosen (rank, pid) negatives of one query; fewer when the pool is short."""
        pool = self.pool(_dedupe(ranking), exclude)
        n = min(self.num_negatives, len(pool))
        if self.sampling == "hardest":
            return pool[:n]
        if n == 0:
            return []
        picks = query_rng(self.seed, qid).permutation(len(pool))[:n]
        return [pool[i] for i in picks]


def _dedupe(ranking: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for pid in ranking:
        if pid not in seen:
            seen.add(pid)
            out.append(pid)
    return out
