"""Encode a streamed corpus with a Ray Data actor pool and index it as it arrives."""

from __future__ import annotations

import logging

import numpy as np
import ray

from raykd.data.records import passage_text
from raykd.index.faiss_index import DenseIndex, IndexKind

log = logging.getLogger(__name__)


class PassageEncoder:
    """Ray Data actor: loads a student once, turns `title`/`text` batches into embeddings."""

    def __init__(self, model_path: str, batch_size: int = 64, student_options: dict | None = None):
        import torch

        from raykd.students import BiEncoder

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = BiEncoder.from_pretrained(model_path, **(student_options or {})).to(self.device)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [passage_text(str(t), str(x)) for t, x in zip(batch["title"], batch["text"], strict=False)]
        from raykd.index.store import text_hash

        embeddings = self.model.encode_passages(texts, batch_size=self.batch_size)
        hashes = np.fromiter((text_hash(t) for t in texts), np.uint64, len(texts))
        return {"pid": np.asarray(batch["pid"]), "embedding": embeddings, "hash": hashes}


def encode_corpus(corpus: ray.data.Dataset, model_path: str, *, concurrency: int = 2,
                  num_gpus: float = 0.0, batch_size: int = 64,
                  student_options: dict | None = None) -> ray.data.Dataset:
    """A dataset of `pid`, `embedding`, `hash` (`text_hash` of the passage text) rows, encoded
    by `concurrency` actors."""
    return corpus.map_batches(
        PassageEncoder,
        fn_constructor_kwargs={"model_path": str(model_path), "batch_size": batch_size,
                               "student_options": student_options},
        batch_size=batch_size * 4,
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_gpus=num_gpus,
        num_cpus=0 if num_gpus else 1,
    )


def build_dense_index(embeddings: ray.data.Dataset, dim: int, kind: IndexKind = "flat",
                      **index_options) -> DenseIndex:
    """Stream encoded batches into a faiss index; the driver never holds the passage texts."""
    index = DenseIndex(dim, kind=kind, **index_options)
    for batch in embeddings.iter_batches(batch_size=4096, batch_format="numpy"):
        index.add(batch["pid"].tolist(), np.asarray(batch["embedding"], dtype=np.float32))
    log.info("indexed %d passages (%s)", len(index), kind)
    return index


def corpus_index(model_path: str, corpus_path: str, *, student_options: dict | None = None,
                 concurrency: int = 2, num_gpus: float = 0.0, batch_size: int = 64,
                 index_kind: IndexKind = "flat", cache_dir: str | None = None) -> DenseIndex:
    """The faiss index of a corpus under a bi-encoder, encoded on Ray Data.

    With `cache_dir`, the vectors live in the shared `raykd.index.store` entry of this encoder:
    evaluating the same student twice (dev, then test), mining with the zero-shot model the
    evaluation also uses, or scoring with it as a teacher encodes the corpus once.
    """
    from raykd.index.store import corpus_embeddings

    store, _ = corpus_embeddings(model_path, corpus_path, student_options=student_options,
                                 cache_dir=cache_dir, concurrency=concurrency,
                                 num_gpus=num_gpus, batch_size=batch_size)
    index = store.index(index_kind)
    log.info("indexed %d passages (%s)", len(index), index_kind)
    return index


class StoreSearcher:
    """Ray actor: the faiss index of a stored corpus encoding plus the query encoder, so neither
    the corpus vectors nor the index live in the driver (the index is N x dim floats here)."""

    def __init__(self, folder: str, model_path: str, student_options: dict | None = None,
                 index_kind: IndexKind = "flat", batch_size: int = 64):
        from raykd.index.store import EmbeddingStore
        from raykd.students import BiEncoder

        self.index = EmbeddingStore.load(folder, mmap=True).index(index_kind)
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


def search_store(folder, model_path: str, queries: list[str], k: int, *,
                 student_options: dict | None = None, index_kind: IndexKind = "flat",
                 batch_size: int = 64, num_gpus: float = 0.0, chunk: int = 1024
                 ) -> list[list[str]]:
    """Top-`k` pids per query text, searched by a `StoreSearcher` actor on this node (queries
    sent `chunk` at a time); the actor is gone when this returns."""
    actor = ray.remote(StoreSearcher).options(
        num_cpus=0 if num_gpus else 1, num_gpus=num_gpus,
        scheduling_strategy=on_this_node()).remote(
        str(folder), str(model_path), student_options, index_kind, batch_size)
    try:
        out: list[list[str]] = []
        for start in range(0, len(queries), chunk):
            out.extend(ray.get(actor.search.remote(queries[start:start + chunk], k)))
        return out
    finally:
        ray.kill(actor)
