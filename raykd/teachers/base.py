"""The Teacher interface: score (query, passage) pairs; a fingerprint names the scores it gives."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from raykd.fingerprint import stable_hash, weights_sha256

__all__ = ["Teacher", "model_reference", "stable_hash", "weights_sha256"]


def model_reference(name: str, resolved: str | os.PathLike) -> dict:
    """How a teacher's fingerprint names its model: the name as given plus a weights hash.

    `resolved` is the local folder (or hub id) the model was loaded from. A local folder is
    hashed; a hub id is hashed through its local snapshot when one is cached, else recorded by
    id only (`weights_sha256: None`).
    """
    folder = Path(resolved)
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(os.fspath(resolved), local_files_only=True))
        except Exception:  # not cached or not a hub id: the name is all we know
            return {"model": str(name), "weights_sha256": None}
    return {"model": str(name), "weights_sha256": weights_sha256(folder)}


class Teacher(ABC):
    """A relevance model that scores pairs.

    `score(queries, passages)` takes two aligned lists and returns float32 scores, one per pair.
    `fingerprint` identifies everything that changes the scores (kind, model id or path plus a
    hash of its weights, max lengths, normalisation...) and is the score-cache key together with
    (qid, pid or text hash). `forward_calls` counts model invocations, so tests and benchmarks can
    see that cached pairs cost nothing.
    """

    kind: str = "teacher"

    def __init__(self) -> None:
        self.forward_calls = 0

    @abstractmethod
    def describe(self) -> dict:
        """JSON-serialisable description of everything that determines the scores."""

    @property
    def fingerprint(self) -> str:
        return f"{self.kind}-{stable_hash(self.describe())}"

    @abstractmethod
    def _score(self, queries: list[str], passages: list[str]) -> np.ndarray:
        """Score aligned pairs; implementations batch internally."""

    def score(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        """float32 scores of aligned (query, passage) pairs."""
        queries, passages = list(queries), list(passages)
        if len(queries) != len(passages):
            raise ValueError(f"{len(queries)} queries but {len(passages)} passages")
        if not queries:
            return np.zeros(0, dtype=np.float32)
        scores = np.asarray(self._score(queries, passages), dtype=np.float32)
        if scores.shape != (len(queries),):
            raise RuntimeError(f"{self.kind} teacher returned shape {scores.shape} for "
                               f"{len(queries)} pairs")
        if not np.isfinite(scores).all():
            bad = int(np.flatnonzero(~np.isfinite(scores))[0])
            raise RuntimeError(f"{self.kind} teacher gave a non-finite score for pair {bad}: "
                               f"query={queries[bad][:80]!r}")
        return scores

    def score_groups(self, groups: Sequence[dict]) -> list[np.ndarray]:
        """Scores of each candidate group's list (`qid`, `query`, `pids`, `texts` per group).

        Text teachers flatten the groups into pairs; `precomputed` aligns by (qid, pid) and
        `ensemble` normalises each member's scores per query, so both override this.
        """
        flat_q = [g["query"] for g in groups for _ in g["texts"]]
        flat_p = [t for g in groups for t in g["texts"]]
        flat = self.score(flat_q, flat_p)
        out, start = [], 0
        for g in groups:
            out.append(flat[start:start + len(g["texts"])])
            start += len(g["texts"])
        return out
