"""The Teacher interface: score (query, passage) pairs; a fingerprint names the scores it gives."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def stable_hash(obj) -> str:
    """sha256 of a JSON-serialisable object (sorted keys), 16 hex characters."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
_WEIGHTS_CACHE: dict[tuple, str] = {}
_WEIGHTS_LOCK = threading.Lock()


def weights_sha256(folder: str | os.PathLike) -> str:
    """sha256 over the bytes of every `*.safetensors` / `*.bin` file under a model folder.

    Files are visited in sorted relative-path order and each path is hashed with its bytes, so
    renaming or moving a shard changes the hash. The result is cached per folder and per
    (file, size, mtime) listing: a second teacher over the same folder costs a `stat` per file.
    """
    root = Path(folder).resolve()
    files = sorted({p for pattern in WEIGHT_PATTERNS for p in root.rglob(pattern) if p.is_file()})
    listing = tuple((p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                    for p in files)
    key = (str(root), listing)
    with _WEIGHTS_LOCK:
        if key in _WEIGHTS_CACHE:
            return _WEIGHTS_CACHE[key]
    digest = hashlib.sha256()
    for path, (rel, _, _) in zip(files, listing, strict=True):
        digest.update(rel.encode("utf-8") + b"\0")
        with open(path, "rb") as fobj:
            for chunk in iter(lambda: fobj.read(1 << 22), b""):
                digest.update(chunk)
    value = digest.hexdigest()
    with _WEIGHTS_LOCK:
        _WEIGHTS_CACHE[key] = value
    return value


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
