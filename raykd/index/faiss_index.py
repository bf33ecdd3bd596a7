"""Dense indexes on faiss: exact flat inner product, or IVF whose list count grows with the
corpus (`ivf_nlist`); ``auto`` picks flat below `FLAT_BELOW` passages, IVF above. On GPU when
present."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import faiss
import numpy as np

from raykd.errors import ConfigError

IndexKind = Literal["auto", "flat", "ivf"]
INDEX_KINDS = ("auto", "flat", "ivf")
# `auto`: exact search below this many passages (SciFact: 5k). On CPU, batched flat search
# (BLAS) costs about as much as IVF at nprobe 64 near 250k passages (BENCHMARKS.md); below it
# flat is exact and no slower.
FLAT_BELOW = 250_000
DEFAULT_NPROBE = 64  # IVF lists visited per query
MAX_NLIST = 65_536
TRAIN_PER_LIST = 40  # k-means training points per list (faiss warns under 39)


def ivf_nlist(num_vectors: int) -> int:
    """IVF list count for a corpus: about 4 sqrt(N), at most `MAX_NLIST`, and small enough
    that every list has `TRAIN_PER_LIST` training points (at least 1)."""
    rule = int(round(4 * num_vectors ** 0.5))
    return max(1, min(rule, MAX_NLIST, num_vectors // TRAIN_PER_LIST))


def resolve_kind(kind: str, num_vectors: int) -> str:
    """``flat`` or ``ivf``: `kind`, with ``auto`` decided by the corpus size."""
    if kind not in INDEX_KINDS:
        raise ConfigError("index.kind", f"{kind!r} is not one of {INDEX_KINDS}")
    if kind == "auto":
        return "flat" if num_vectors < FLAT_BELOW else "ivf"
    return kind


def training_rows(num_vectors: int, nlist: int, seed: int = 0) -> np.ndarray:
    """Sorted row numbers of the seeded k-means sample (`TRAIN_PER_LIST` x nlist, or all)."""
    size = min(num_vectors, TRAIN_PER_LIST * nlist)
    if size == num_vectors:
        return np.arange(num_vectors)
    return np.sort(np.random.default_rng(seed).choice(num_vectors, size=size, replace=False))


def gpu_available() -> bool:
    """True when this faiss build has GPU support and sees at least one GPU."""
    return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


class DenseIndex:
    """Inner-product search over passage vectors, keyed by passage id (strings).

    Vectors are added in batches (`add`), so a corpus can be indexed as it streams in; IVF
    trains on the first `train_size` vectors it receives, then adds the rest.
    """

    def __init__(self, dim: int, kind: IndexKind = "flat", nlist: int = 1024,
                 nprobe: int = DEFAULT_NPROBE, train_size: int | None = None,
                 use_gpu: bool | None = None):
        if kind not in ("flat", "ivf"):
            raise ConfigError("index.kind", f"{kind!r} is not one of ('flat', 'ivf'); "
                                            f"resolve 'auto' with resolve_kind")
        if nlist < 1 or nprobe < 1:
            raise ConfigError("index.nlist", f"nlist and nprobe must be >= 1 (got {nlist}, {nprobe})")
        self.dim, self.kind, self.nlist, self.nprobe = dim, kind, nlist, nprobe
        self.train_size = train_size or max(40 * nlist, nlist)
        self.use_gpu = gpu_available() if use_gpu is None else use_gpu
        self.ids: list[str] = []
        self._pending: list[np.ndarray] = []
        if kind == "flat":
            self._index = self._maybe_gpu(faiss.IndexFlatIP(dim))
        else:
            self._quantizer = faiss.IndexFlatIP(dim)
            self._index = faiss.IndexIVFFlat(self._quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)

    def _maybe_gpu(self, index):
        if not self.use_gpu:
            return index
        return faiss.index_cpu_to_all_gpus(index)

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, ids: Iterable[str], vectors: np.ndarray) -> None:
        """Add a batch of vectors with their passage ids."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = [str(i) for i in ids]
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(ids) != len(vectors):
            raise ValueError(f"expected {len(ids)} vectors of dim {self.dim}, got {vectors.shape}")
        self.ids.extend(ids)
        if self._index.is_trained:
            self._index.add(vectors)
            return
        self._pending.append(vectors)
        if sum(len(v) for v in self._pending) >= self.train_size:
            self._train_and_flush()

    def train(self, sample: np.ndarray) -> None:
        """Train an IVF index on `sample` (e.g. a seeded sample of the corpus) before `add`."""
        if self.kind != "ivf" or self._index.is_trained:
            raise ValueError("train() is for an untrained IVF index")
        self._train(np.ascontiguousarray(sample, dtype=np.float32))

    def _train(self, sample: np.ndarray) -> None:
        nlist = min(self.nlist, len(sample))
        if nlist != self.nlist:  # a corpus smaller than nlist: shrink the coarse quantizer
            self.nlist = nlist
            self._quantizer = faiss.IndexFlatIP(self.dim)
            self._index = faiss.IndexIVFFlat(self._quantizer, self.dim, nlist,
                                             faiss.METRIC_INNER_PRODUCT)
        self._index.train(sample)
        self._index.nprobe = min(self.nprobe, nlist)
        self._index = self._maybe_gpu(self._index)

    def _train_and_flush(self) -> None:
        sample = np.concatenate(self._pending)
        self._train(sample)
        self._index.add(sample)
        self._pending = []

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """Top-k scores [n, k'] and passage ids per query (k' = min(k, index size))."""
        if self._pending:
            self._train_and_flush()
        if not self.ids:
            raise ValueError("search on an empty index")
        k = min(k, len(self.ids))
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        scores, rows = self._index.search(queries, k)
        ids = [[self.ids[r] for r in row if r >= 0] for row in rows]
        return scores, ids
