"""Search a stored corpus encoding: its faiss index in the driver, or in an actor so that the
driver holds neither the vectors nor the index (on this node for a node-local store, on any
node for a store every node sees; `SearcherPlacement`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import ray

from raykd.index.faiss_index import DenseIndex, IndexKind
from raykd.index.store import EmbeddingStore, corpus_embeddings

log = logging.getLogger(__name__)


def corpus_index(model_path: str, corpus_path: str, *, student_options: dict | None = None,
                 concurrency: int = 2, num_gpus: float = 0.0, batch_size: int = 64,
                 index_kind: IndexKind = "flat", cache_dir: str | None = None) -> DenseIndex:
    """The faiss index of a corpus under a bi-encoder, encoded on Ray Data.

    With `cache_dir`, the vectors live in the shared `raykd.index.store` entry of this encoder:
    evaluating the same student twice (dev, then test), mining with the zero-shot model the
    evaluation also uses, or scoring with it as a teacher encodes the corpus once.
    """
    store, _ = corpus_embeddings(model_path, corpus_path, student_options=student_options,
                                 cache_dir=cache_dir, concurrency=concurrency,
                                 num_gpus=num_gpus, batch_size=batch_size)
    index = store.index(index_kind)
    log.debug("indexed %d passages (%s)", len(index), index_kind)
    return index


@dataclass(frozen=True)
class SearcherPlacement:
    """Where a `StoreSearcher` runs: `cpus` logical CPUs reserved and as many faiss threads;
    `pinned` keeps it on the driver's node (the store is on that node's disk), else Ray places
    it on any node with the resources free (the store is on storage every node mounts)."""

    cpus: int = 1
    pinned: bool = True

    def __post_init__(self):
        if self.cpus < 1:
            raise ValueError(f"SearcherPlacement.cpus must be >= 1, got {self.cpus}")

    def options(self, num_gpus: float = 0.0) -> dict:
        """The actor's Ray options."""
        placed = {"scheduling_strategy": on_this_node()} if self.pinned else {}
        return {"num_cpus": self.cpus, "num_gpus": num_gpus, **placed}


class StoreSearcher:
    """Ray actor: the faiss index of a stored corpus encoding plus the query encoder, so neither
    the corpus vectors nor the index live in the driver (the index is N x dim floats here)."""

    def __init__(self, folder: str, model_path: str, student_options: dict | None = None,
                 index_kind: IndexKind = "flat", batch_size: int = 64,
                 nprobe: int | None = None, threads: int | None = None):
        import faiss

        from raykd.students import BiEncoder

        if threads:
            faiss.omp_set_num_threads(threads)
        self.index = EmbeddingStore.load(folder, mmap=True).index(index_kind, nprobe=nprobe)
        self.model = BiEncoder.from_pretrained(model_path, **(student_options or {}))
        self.batch_size = batch_size

    def search(self, texts: list[str], k: int):
        """(scores [n, k'], top-k pids per query) for query texts."""
        vectors = self.model.encode_queries(texts, batch_size=self.batch_size)
        return self.index.search(vectors, k)


def on_this_node():
    """A scheduling strategy that keeps a task or actor on the driver's node (it reads local
    files such as the embedding store)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


@contextmanager
def store_searcher(folder, model_path: str, *, student_options: dict | None = None,
                   index_kind: IndexKind = "flat", nprobe: int | None = None,
                   batch_size: int = 64, num_gpus: float = 0.0,
                   placement: SearcherPlacement | None = None) -> Iterator[Callable]:
    """``search(query_texts, k) -> (scores, top-k pids per query)``, answered by a
    `StoreSearcher` actor placed by `placement` (default: 1 CPU on this node) that lives as
    long as the context (one index build for any number of query chunks)."""
    placement = placement or SearcherPlacement()
    actor = ray.remote(StoreSearcher).options(**placement.options(num_gpus)).remote(
        str(folder), str(model_path), student_options, index_kind, batch_size, nprobe,
        placement.cpus)
    try:
        yield lambda texts, k: ray.get(actor.search.remote(list(texts), k))
    finally:
        ray.kill(actor)
