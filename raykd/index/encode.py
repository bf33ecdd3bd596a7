"""Encode a streamed corpus with a Ray Data actor pool and index it as it arrives."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

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
        embeddings = self.model.encode_passages(texts, batch_size=self.batch_size)
        return {"pid": np.asarray(batch["pid"]), "embedding": embeddings}


def encode_corpus(corpus: ray.data.Dataset, model_path: str, *, concurrency: int = 2,
                  num_gpus: float = 0.0, batch_size: int = 64,
                  student_options: dict | None = None) -> ray.data.Dataset:
    """A dataset of `pid`, `embedding` rows, encoded by `concurrency` actors."""
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


# Files that change how a folder's weights become embeddings (pooling, normalisation, lengths).
POOLING_CONFIGS = ("raykd_student.json", "modules.json", "1_Pooling/config.json",
                   "sentence_bert_config.json")


def _embedding_key(model_path: str, corpus_path: str, student_options: dict | None) -> str:
    from raykd.fingerprint import file_sha256, stable_hash, weights_sha256

    model = Path(model_path)
    corpus = Path(corpus_path)
    corpus_files = sorted(corpus.rglob("corpus*")) if corpus.is_dir() else [corpus]
    # A local folder is known by its weights (a copy elsewhere hits the same entry).
    return stable_hash({
        "model": None if model.is_dir() else str(model_path),
        "weights": weights_sha256(model) if model.is_dir() else None,
        "configs": {name: (model / name).read_text() for name in POOLING_CONFIGS
                    if (model / name).is_file()},
        "options": student_options or {},
        "corpus": [file_sha256(f) for f in corpus_files if f.is_file()],
    })


def corpus_index(model_path: str, corpus_path: str, *, student_options: dict | None = None,
                 concurrency: int = 2, num_gpus: float = 0.0, batch_size: int = 64,
                 index_kind: IndexKind = "flat", cache_dir: str | None = None,
                 dim: int | None = None) -> DenseIndex:
    """The faiss index of a corpus under a student, encoded on Ray Data.

    With `cache_dir`, the embeddings are kept under a key of (weights sha256, options, corpus
    sha256): evaluating the same student twice (dev, then test) or mining with the zero-shot
    model the evaluation also uses encodes the corpus once.
    """
    from raykd.data.ray_datasets import corpus_dataset
    from raykd.students import BiEncoder

    if dim is None:
        dim = BiEncoder.from_pretrained(model_path, **(student_options or {})).dim
    cached = None
    if cache_dir:
        cached = Path(cache_dir) / _embedding_key(model_path, corpus_path, student_options)
        if (cached / "embeddings.npy").exists():
            index = DenseIndex(dim, kind=index_kind)
            pids = json.loads((cached / "pids.json").read_text())
            vectors = np.load(cached / "embeddings.npy", mmap_mode="r")
            for start in range(0, len(pids), 8192):
                index.add(pids[start:start + 8192], np.asarray(vectors[start:start + 8192]))
            log.info("corpus embeddings from cache %s (%d passages)", cached, len(pids))
            return index
    embeddings = encode_corpus(corpus_dataset(corpus_path), model_path, concurrency=concurrency,
                               num_gpus=num_gpus, batch_size=batch_size,
                               student_options=student_options)
    index = DenseIndex(dim, kind=index_kind)
    parts: list[np.ndarray] = []
    for batch in embeddings.iter_batches(batch_size=4096, batch_format="numpy"):
        vectors = np.asarray(batch["embedding"], dtype=np.float32)
        index.add(batch["pid"].tolist(), vectors)
        if cached is not None:
            parts.append(vectors)
    if cached is not None:
        cached.mkdir(parents=True, exist_ok=True)
        tmp = cached / "embeddings.tmp.npy"
        np.save(tmp, np.concatenate(parts) if parts else np.zeros((0, dim), np.float32))
        (cached / "pids.json").write_text(json.dumps(index.ids))
        os.replace(tmp, cached / "embeddings.npy")
    log.info("indexed %d passages (%s)", len(index), index_kind)
    return index
