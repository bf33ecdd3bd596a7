"""Encode a streamed corpus with a Ray Data actor pool (depends on nothing else in `index/`)."""

from __future__ import annotations

import logging

import numpy as np
import ray

from raykd.data.records import passage_text
from raykd.fingerprint import text_hash
from raykd.runtime import fit_actor_pool

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
        compute=ray.data.ActorPoolStrategy(
            size=fit_actor_pool(concurrency, 0 if num_gpus else 1, "corpus encoding")),
        num_gpus=num_gpus,
        num_cpus=0 if num_gpus else 1,
    )
