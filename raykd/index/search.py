"""Search a stored corpus encoding: its faiss index in the driver, or in an actor on this node
so that the driver holds neither the vectors nor the index."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

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


class StoreSearcher:
    """Ray actor: the faiss index of a stored corpus encoding plus the query encoder, so neither
    the corpus vectors nor the index live in the driver (the index is N x dim floats here)."""

    def __init__(self, folder: str, model_path: str, student_options: dict | None = None,
                 index_kind: IndexKind = "flat", batch_size: int = 64,
                 nprobe: int | None = None):
        from raykd.students import BiEncoder

        self.index = EmbeddingStore.load(folder, mmap=True).index(index_kind, nprobe=nprobe)
        self.model = BiEncoder.from_pretrained(model_path, **(student_options or {}))
        self.batch_size = batch_size

    def search(self, texts: list[str], k: int) -> list[list[str]]:
        vectors = self.model.encode_queries(texts, batch_size=self.batch_size)
        return self.index.search(vectors, k)[1]


def on_this_node():
    """A scheduling strategy that keeps a task or actor on the driver's node (it reads local
    files such as the embedding store)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


@contextmanager
def store_searcher(folder, model_path: str, *, student_options: dict | None = None,
                   index_kind: IndexKind = "flat", nprobe: int | None = None,
                   batch_size: int = 64, num_gpus: float = 0.0
                   ) -> Iterator[Callable[[list[str], int], list[list[str]]]]:
    """``search(query_texts, k) -> top-k pids per query``, answered by a `StoreSearcher` actor
    on this node that lives as long as the context (one index build for any number of query
    chunks)."""
    actor = ray.remote(StoreSearcher).options(
        num_cpus=0 if num_gpus else 1, num_gpus=num_gpus,
        scheduling_strategy=on_this_node()).remote(
        str(folder), str(model_path), student_options, index_kind, batch_size, nprobe)
    try:
        yield lambda texts, k: ray.get(actor.search.remote(list(texts), k))
    finally:
        ray.kill(actor)
