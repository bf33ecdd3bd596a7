"""Ensemble teacher: member scores normalised per query, then combined with weights.

For each candidate group (one query's list) and each member i with scores x_i:

* `zscore`: (x - mean(x)) / std(x), population std;
* `minmax`: (x - min(x)) / (max(x) - min(x));
* `none`:   x unchanged (Hofstatter's T2 "mean ensemble" of raw logits is `none` with equal
            weights, METHODS.md 1(b)/(g));
* `rrf`:    1 / (rrf_k + rank), rank 1-based by descending score within the list, ties broken
            by list order (stable).

A constant list normalises to zeros under `zscore` and `minmax`. The result is
sum_i w_i * norm_i(x_i), with weights defaulting to 1 / number of members. Normalising per
query needs whole lists, so `score_groups` is the natural call; `score` on loose pairs treats
the pairs that share a query text as one list.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from raykd.errors import ConfigError
from raykd.teachers.base import Teacher


def zscore(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    std = x.std()
    if x.size == 0 or std == 0 or not np.isfinite(std):
        return np.zeros_like(x)
    return (x - x.mean()) / std


def minmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return x
    span = x.max() - x.min()
    if span == 0:
        return np.zeros_like(x)
    return (x - x.min()) / span


def identity(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks by descending score; equal scores keep their list order."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(-x, kind="stable")
    out = np.empty(len(x), dtype=np.float64)
    out[order] = np.arange(1, len(x) + 1)
    return out


def rrf(x: np.ndarray, k: int = 60) -> np.ndarray:
    return 1.0 / (k + ranks(x))


NORMALIZERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "zscore": zscore,
    "minmax": minmax,
    "none": identity,
}
NORMALIZATIONS = (*NORMALIZERS, "rrf")


def combine(member_scores: Sequence[np.ndarray], weights: Sequence[float],
            normalization: str = "zscore", rrf_k: int = 60) -> np.ndarray:
    """One query's combined scores from its members' score lists (the maths, no models)."""
    if normalization == "rrf":
        def norm(x):
            return rrf(x, rrf_k)
    else:
        norm = NORMALIZERS[normalization]
    total = np.zeros(len(member_scores[0]), dtype=np.float64)
    for w, scores in zip(weights, member_scores, strict=True):
        total += w * norm(scores)
    return total.astype(np.float32)


class EnsembleTeacher(Teacher):
    """Weighted combination of member teachers after per-query normalisation."""

    kind = "ensemble"

    def __init__(self, members: Sequence[Teacher], weights: Sequence[float] | None = None,
                 normalization: str = "zscore", rrf_k: int = 60):
        super().__init__()
        if not members:
            raise ConfigError("teacher.members", "an ensemble needs at least one member")
        if normalization not in NORMALIZATIONS:
            raise ConfigError("teacher.normalization",
                              f"{normalization!r} is not one of {NORMALIZATIONS}")
        if weights is None:
            weights = [1.0 / len(members)] * len(members)
        if len(weights) != len(members):
            raise ConfigError("teacher.weights",
                              f"{len(weights)} weights for {len(members)} members")
        if not all(np.isfinite(w) for w in weights):
            raise ConfigError("teacher.weights", f"weights must be finite, got {list(weights)}")
        if rrf_k < 1:
            raise ConfigError("teacher.rrf_k", f"must be >= 1, got {rrf_k}")
        self.members = list(members)
        self.weights = [float(w) for w in weights]
        self.normalization = normalization
        self.rrf_k = int(rrf_k)

    def describe(self) -> dict:
        out = {
            "kind": self.kind,
            "members": [m.fingerprint for m in self.members],
            "weights": self.weights,
            "normalization": self.normalization,
        }
        if self.normalization == "rrf":
            out["rrf_k"] = self.rrf_k
        return out

    def score_groups(self, groups: Sequence[dict]) -> list[np.ndarray]:
        groups = list(groups)
        per_member = [member.score_groups(groups) for member in self.members]
        self.forward_calls += 1
        out = []
        for g, group in enumerate(groups):
            lists = [np.asarray(scores[g], dtype=np.float64) for scores in per_member]
            for member, scores in zip(self.members, lists, strict=True):
                if scores.shape != (len(group["texts"]),):
                    raise RuntimeError(f"ensemble member {member.fingerprint} returned "
                                       f"{scores.shape} scores for a group of "
                                       f"{len(group['texts'])} (qid {group.get('qid')!r})")
            out.append(combine(lists, self.weights, self.normalization, self.rrf_k))
        return out

    def _score(self, queries: list[str], passages: list[str]) -> np.ndarray:
        # Pairs sharing a query text form one list, in their given order.
        positions: dict[str, list[int]] = {}
        for i, q in enumerate(queries):
            positions.setdefault(q, []).append(i)
        groups = [{"qid": None, "query": q, "pids": None, "texts": [passages[i] for i in idx]}
                  for q, idx in positions.items()]
        out = np.empty(len(queries), dtype=np.float32)
        for (_, idx), scores in zip(positions.items(), self.score_groups(groups), strict=True):
            out[idx] = scores
        return out
