"""ColBERT-PRF query expansion for CollectiveKD's teacher (METHODS.md 4(b)).

For a query and its top `docs` retrieved passages: k-means (`clusters` centroids, initialised at
evenly spaced token positions of each feedback passage) over the passages' token vectors; each
centroid takes the most frequent token id among its `neighbours` nearest tokens in the whole
index and is weighted by that token's IDF x `beta`; the `expansions` heaviest centroids are
kept (unnormalised). `Expansions` holds them per qid in one `.npz` file the trainers read.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raykd.config import PRFSpec
from raykd.storage import atomic_path


def initial_positions(lengths: Sequence[int], clusters: int) -> np.ndarray:
    """Rows (into the concatenated feedback tokens) of the initial centroids: the clusters are
    shared out over the passages as evenly as possible (earlier passages get the remainder),
    and within a passage sit at evenly spaced token positions. Fewer distinct positions than
    `clusters` when the passages are short."""
    lengths = [int(n) for n in lengths]
    live = [i for i, n in enumerate(lengths) if n > 0]
    if not live:
        return np.zeros(0, dtype=np.int64)
    share = [clusters // len(live) + (j < clusters % len(live)) for j in range(len(live))]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    rows = []
    for doc, count in zip(live, share, strict=True):
        if count:
            pos = np.unique(np.round(np.linspace(0, lengths[doc] - 1, count)).astype(np.int64))
            rows.extend(starts[doc] + pos)
    return np.asarray(rows, dtype=np.int64)


def kmeans(points: np.ndarray, init: np.ndarray, iterations: int = 20) -> np.ndarray:
    """Lloyd's k-means (squared L2) from the given initial centroids; deterministic. An empty
    cluster keeps its previous centroid."""
    points = np.asarray(points, np.float64)
    centroids = np.array(init, dtype=np.float64, copy=True)
    assign = None
    sq = (points * points).sum(1)
    for _ in range(iterations):
        dist = sq[:, None] - 2.0 * points @ centroids.T + (centroids * centroids).sum(1)[None]
        new = dist.argmin(1)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        for c in range(len(centroids)):
            members = points[assign == c]
            if len(members):
                centroids[c] = members.mean(0)
    return centroids.astype(np.float32)


def most_frequent(token_ids: Sequence[int]) -> int:
    """The most frequent id (ties: the one seen first, i.e. the nearest); -1 for none."""
    ids = [int(t) for t in token_ids if t >= 0]
    return Counter(ids).most_common(1)[0][0] if ids else -1


def choose_expansions(centroids: np.ndarray, tokens: np.ndarray, idf: np.ndarray,
                      params: PRFSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weight each centroid by IDF(token) x beta and keep the top `expansions` (ties: the
    earlier cluster); padded with zero vectors, zero weights and token -1 to exactly
    `expansions` rows. Returns (centroids [E, dim], weights [E], tokens [E])."""
    count = params.expansions
    weights = np.where(tokens >= 0, idf[np.clip(tokens, 0, len(idf) - 1)] * params.beta, 0.0)
    keep = np.argsort(-weights, kind="stable")[:count]
    dim = centroids.shape[1]
    out_c = np.zeros((count, dim), np.float32)
    out_w = np.zeros(count, np.float32)
    out_t = np.full(count, -1, np.int32)
    out_c[:len(keep)], out_w[:len(keep)], out_t[:len(keep)] = (centroids[keep], weights[keep],
                                                               tokens[keep])
    return out_c, out_w, out_t


@dataclass
class Expansions:
    """Per training query: expansion embeddings [E, dim] (unnormalised), weights and tokens."""

    qids: list[str]
    centroids: np.ndarray  # float32 [Q, E, dim]
    weights: np.ndarray  # float32 [Q, E]
    tokens: np.ndarray  # int32 [Q, E]
    meta: dict | None = None

    def __post_init__(self) -> None:
        self._rows = {q: i for i, q in enumerate(self.qids)}

    def __len__(self) -> int:
        return len(self.qids)

    def lookup(self, qids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(centroids [B, E, dim], weights [B, E]) for a batch; an unknown qid is an error."""
        missing = [q for q in qids if q not in self._rows]
        if missing:
            raise KeyError(f"no PRF expansion for queries {missing[:5]} "
                           f"({len(self.qids)} expanded queries)")
        rows = [self._rows[q] for q in qids]
        return self.centroids[rows], self.weights[rows]

    def save(self, path: str | os.PathLike) -> Path:
        """One `.npz` written atomically."""
        path = Path(path)
        with atomic_path(path, suffix=".npz") as tmp:  # np.savez appends .npz otherwise
            np.savez(tmp, qids=np.asarray(self.qids, dtype=str), centroids=self.centroids,
                     weights=self.weights, tokens=self.tokens,
                     meta=np.asarray(json.dumps(self.meta or {})))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Expansions:
        with np.load(path) as data:
            return cls([str(q) for q in data["qids"]], data["centroids"], data["weights"],
                       data["tokens"], json.loads(str(data["meta"])))


def expand_queries(index, feedback: Mapping[str, Sequence[int]], params: PRFSpec
                   ) -> Expansions:
    """Expansions for queries given their feedback passages (rows of `index`, best first;
    the first `params.docs` are used). `index`: a `raykd.index.late_interaction.TokenIndex`."""
    idf = index.idf()
    qids = list(feedback)
    per_query = []
    for qid in qids:
        rows = [int(r) for r in list(feedback[qid])[:params.docs]]
        if not rows:
            raise ValueError(f"query {qid!r} has no feedback passage")
        docs = [index.doc_vectors(r) for r in rows]
        points = np.concatenate(docs)
        init = initial_positions([len(d) for d in docs], params.clusters)
        per_query.append(kmeans(points, points[init], params.iterations))
    # One faiss call for every centroid of every query.
    flat = np.concatenate(per_query) if per_query else np.zeros((0, index.dim), np.float32)
    neighbours = index.nearest_tokens(flat, params.neighbours) if len(flat) else flat
    centroids, weights, tokens = [], [], []
    at = 0
    for found in per_query:
        near = neighbours[at:at + len(found)]
        at += len(found)
        ids = np.array([most_frequent(index.token_ids[row[row >= 0]]) for row in near],
                       dtype=np.int64)
        c, w, t = choose_expansions(found, ids, idf, params)
        centroids.append(c)
        weights.append(w)
        tokens.append(t)
    dim = index.dim
    return Expansions(
        qids,
        np.stack(centroids) if qids else np.zeros((0, params.expansions, dim), np.float32),
        np.stack(weights) if qids else np.zeros((0, params.expansions), np.float32),
        np.stack(tokens) if qids else np.zeros((0, params.expansions), np.int32),
        {"params": params.model_dump()})
