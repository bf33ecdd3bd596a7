"""Dense teacher: any HF encoder (or a saved raykd / sentence-transformers folder) as a
bi-encoder, `score(q, p) = scale * sim(E(q), E(p))` exactly as `raykd.students.BiEncoder` scores.

Besides pair scores it exposes `encode_queries` / `encode_passages` (float32 embeddings), which
in-batch stages (PROD stage 1) and dense mining use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

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
        path = resolve_model(model)
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
        return self._encode(texts, "passage")

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
