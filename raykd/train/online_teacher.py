"""Teachers scored inside the training step, for losses over global in-batch candidates.

A per-query list can be scored offline (the Ray Data scoring stage and its cache); an in-batch
matrix pairs every query with every passage of the global batch, so the teacher runs next to
the student, without gradients, on each worker.
"""

from __future__ import annotations

import torch

from raykd.config import TeacherSpec
from raykd.errors import ConfigError
from raykd.students import BiEncoder, resolve_model
from raykd.train.batching import CandidateBatch, Scorer


class DenseOnlineTeacher:
    """A bi-encoder teacher producing the [B, world * B * m] in-batch score matrix."""

    def __init__(self, spec: TeacherSpec, device: torch.device):
        options = {"query_max_length": spec.query_max_length,
                   "passage_max_length": spec.passage_max_length, "scale": spec.scale}
        options.update({k: getattr(spec, k) for k in ("pooling", "similarity")
                        if getattr(spec, k) is not None})
        self.model = BiEncoder.from_pretrained(resolve_model(spec.model), **options).to(device)
        self.model.eval().requires_grad_(False)
        self.device = device

    @torch.no_grad()
    def in_batch_scores(self, batch: CandidateBatch, rank: int, world: int) -> torch.Tensor:
        q = self.model.tokenize(batch.queries, "query")
        p = self.model.tokenize(batch.passages, "passage")
        q_emb, p_emb = self.model({k: v.to(self.device) for k, v in q.items()},
                                  {k: v.to(self.device) for k, v in p.items()})
        return Scorer(self.model, True, rank, world).scores(q_emb, p_emb, batch, gather_grad=False)


ONLINE_TEACHERS = {"bi_encoder": DenseOnlineTeacher}


def build_online_teacher(spec: TeacherSpec, device: torch.device):
    """The in-step teacher for an in-batch loss; only kinds that can embed are allowed."""
    if spec.kind not in ONLINE_TEACHERS:
        raise ConfigError("teacher.kind", f"an in-batch loss needs an online teacher, one of "
                                          f"{sorted(ONLINE_TEACHERS)}; got {spec.kind!r}")
    return ONLINE_TEACHERS[spec.kind](spec, device)
