"""Dense teacher: any HF encoder (or a saved raykd / sentence-transformers folder) as a
bi-encoder, `score(q, p) = scale * sim(E(q), E(p))` exactly as `raykd.students.BiEncoder` scores.

Besides pair scores it exposes `encode_queries` / `encode_passages` (float32 embeddings), which
in-batch stages (PROD stage 1) and dense mining use. With the corpus already encoded in the
shared embedding store (`raykd.index.store`), `use_store` lets it read passage vectors from
there; `StoredPassages` wraps a teacher factory to do that on the scoring actors. The scores
are the same numbers; only the forward passes are saved.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from raykd.teachers.base import Teacher, model_reference
from raykd.teachers.cross_encoder import autocast_for, pick_device


class BiEncoderTeacher(Teacher):
    """A `BiEncoder` used frozen, as a teacher."""

    kind = "bi_encoder"

    def __init__(self, model: str, *, query_max_length: int | None = None,
                 passage_max_length: int | None = None, batch_size: int = 32,
                 pooling: str | None = None, similarity: str | None = None,
                 scale: float | None = None, trust_remote_code: bool = False,
                 device: str | torch.device | None = None):
        """Options left as None keep the folder's own (raykd / sentence-transformers config)."""
        super().__init__()
        from raykd.students.bi_encoder import BiEncoder
        from raykd.students.bundled import resolve_model

        self.model_name = model
        self.model_path = path = resolve_model(model)
        self.store = None
        self.encoder = BiEncoder.from_pretrained(
            path, trust_remote_code=trust_remote_code, pooling=pooling, similarity=similarity,
            scale=scale, query_max_length=query_max_length,
            passage_max_length=passage_max_length)
        self.batch_size = int(batch_size)
        self.device = pick_device(device)
        self.encoder.to(self.device).eval()
        self._reference = model_reference(model, path)

    @property
    def options(self):
        return self.encoder.options

    @property
    def encoder_key(self) -> str:
        """Names the passage vectors this teacher makes (`raykd.index.store.encoder_key`)."""
        from raykd.index.store import encoder_key

        return encoder_key(self.model_path, self.encoder.options)

    def use_store(self, store) -> None:
        """Read passage vectors from an `EmbeddingStore` of this encoder (texts it does not
        hold, such as dark examples, are encoded as usual)."""
        if store.encoder != self.encoder_key:
            raise ValueError(f"the store holds vectors of encoder {store.encoder}, not of this "
                             f"teacher's {self.encoder_key}")
        self.store = store

    def describe(self) -> dict:
        opts = asdict(self.encoder.options)
        opts.pop("extra", None)
        opts["num_layers"] = int(self.encoder.query_encoder.config.num_hidden_layers)
        return {"kind": self.kind, **self._reference, **opts}

    def _encode(self, texts: Sequence[str], side: str) -> np.ndarray:
        texts = list(texts)
        with autocast_for(self.device):
            out = self.encoder.encode(texts, side, batch_size=self.batch_size, device=self.device)
        self.forward_calls += -(-len(texts) // self.batch_size)
        return out

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """float32 query embeddings [n, dim] (normalised when the similarity is cosine)."""
        return self._encode(texts, "query")

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray:
        """float32 passage embeddings [n, dim]."""
        if self.store is None:
            return self._encode(texts, "passage")
        texts = list(texts)
        vectors, found = self.store.lookup(texts)
        if not found.all():
            missing = np.flatnonzero(~found)
            vectors[missing] = self._encode([texts[i] for i in missing], "passage")
        return vectors

    def _score(self, queries: list[str], passages: list[str]) -> np.ndarray:
        # Each distinct text is encoded once: a group repeats its query m times.
        uq = list(dict.fromkeys(queries))
        up = list(dict.fromkeys(passages))
        q_emb = self.encode_queries(uq)
        p_emb = self.encode_passages(up)
        q_row = {t: i for i, t in enumerate(uq)}
        p_row = {t: i for i, t in enumerate(up)}
        q = q_emb[[q_row[t] for t in queries]]
        p = p_emb[[p_row[t] for t in passages]]
        return (self.encoder.options.scale * (q * p).sum(-1)).astype(np.float32)


def bi_encoder_members(teacher) -> Iterator[BiEncoderTeacher]:
    """Every bi-encoder inside `teacher`: itself, or an ensemble's members (recursively)."""
    if isinstance(teacher, BiEncoderTeacher):
        yield teacher
    for member in getattr(teacher, "members", None) or []:
        yield from bi_encoder_members(member)


class StoredPassages:
    """Picklable teacher factory: build the teacher, then let each bi-encoder in it read the
    stored corpus vectors of its encoder under `cache_dir`, where they exist."""

    def __init__(self, make_teacher, cache_dir: str | os.PathLike, corpus_path: str | os.PathLike):
        self.make_teacher = make_teacher
        self.cache_dir = str(cache_dir)
        self.corpus_path = str(corpus_path)

    def __call__(self):
        from raykd.index.store import EmbeddingStore, store_folder

        teacher = self.make_teacher()
        for member in bi_encoder_members(teacher):
            folder = store_folder(self.cache_dir, member.encoder_key, self.corpus_path)
            if EmbeddingStore.exists(folder):
                member.use_store(EmbeddingStore.load(folder))
        return teacher


def encode_teacher_corpus(spec, corpus_path: str | os.PathLike, cache_dir: str | os.PathLike,
                          **encode_options) -> list[Path]:
    """Fill the embedding store for every bi-encoder in the teacher `spec` (a `TeacherSpec`),
    so that scoring reads passage vectors instead of encoding them. Returns the folders."""
    from raykd.index.store import corpus_embeddings

    folders = []
    for member in _bi_encoder_specs(spec):
        options = {"query_max_length": member.query_max_length,
                   "passage_max_length": member.passage_max_length,
                   "pooling": member.pooling, "similarity": member.similarity}
        _, folder = corpus_embeddings(member.model, corpus_path, student_options=options,
                                      cache_dir=cache_dir, **encode_options)
        folders.append(folder)
    return folders


def _bi_encoder_specs(spec) -> Iterator:
    return (part for part in spec.parts() if part.kind == "bi_encoder")
