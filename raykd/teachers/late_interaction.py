"""Late-interaction (ColBERT-style MaxSim) teacher over `LateInteractionEncoder`."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch

from raykd.teachers.base import Teacher, model_reference
from raykd.teachers.cross_encoder import autocast_for, length_order, pick_device


class LateInteractionTeacher(Teacher):
    """Scores pairs by MaxSim of the query's and the passage's token vectors."""

    kind = "late_interaction"

    def __init__(self, model: str, *, query_max_length: int | None = None,
                 passage_max_length: int | None = None, batch_size: int = 32,
                 projection_dim: int | None = None, similarity: str | None = None,
                 query_augmentation: bool | None = None, mask_punctuation: bool | None = None,
                 trust_remote_code: bool = False, device: str | torch.device | None = None):
        """Options left as None keep the folder's saved ones (or the encoder defaults)."""
        super().__init__()
        from raykd.students.bundled import resolve_model
        from raykd.students.late_interaction import LateInteractionEncoder

        self.model_name = model
        path = resolve_model(model)
        self.encoder = LateInteractionEncoder.from_pretrained(
            path, trust_remote_code=trust_remote_code, projection_dim=projection_dim,
            similarity=similarity, query_max_length=query_max_length,
            passage_max_length=passage_max_length, query_augmentation=query_augmentation,
            mask_punctuation=mask_punctuation)
        self.batch_size = int(batch_size)
        self.device = pick_device(device)
        self.encoder.to(self.device).eval()
        self._reference = model_reference(model, path)

    @property
    def options(self):
        return self.encoder.options

    def describe(self) -> dict:
        return {"kind": self.kind, **self._reference, **asdict(self.encoder.options)}

    @torch.no_grad()
    def _score(self, queries: list[str], passages: list[str]) -> np.ndarray:
        enc = self.encoder
        order = length_order(queries, passages)
        out = np.empty(len(queries), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            q_in = enc.tokenize_queries([queries[i] for i in idx])
            p_in = enc.tokenize_passages([passages[i] for i in idx])
            q_in = {k: v.to(self.device) for k, v in q_in.items()}
            p_in = {k: v.to(self.device) for k, v in p_in.items()}
            with autocast_for(self.device):
                (q, qm), (p, pm) = enc(q_in, p_in)
            # MaxSim in fp32: sums over up to query_max_length terms.
            scores = enc.maxsim(q.float(), qm, p.float(), pm)
            self.forward_calls += 1
            out[idx] = scores.cpu().numpy()
        return out
