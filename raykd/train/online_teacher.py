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

    def __init__(self, spec: TeacherSpec, device: torch.device, extra: dict | None = None):
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


class CollectiveOnlineTeacher:
    """CollectiveKD's teacher (METHODS.md 4(c)): a frozen late-interaction model whose queries
    are extended by their PRF expansions, scoring the per-process in-batch matrix [B, B * m]:
    t(q, d) = sum_i max_j sim(q_i, d_j) + sum_e w_e max_j sim(c_e, d_j).

    `extra["expansions"]`: the `raykd.teachers.prf.Expansions` file of the training queries.
    """

    per_process = True

    def __init__(self, spec: TeacherSpec, device: torch.device, extra: dict | None = None):
        from raykd.students.late_interaction import LateInteractionEncoder
        from raykd.teachers.collective import encoder_options
        from raykd.teachers.prf import Expansions

        path = (extra or {}).get("expansions")
        if not path:
            raise ConfigError("teacher.kind", "a collective teacher needs its PRF expansions "
                                              "file (built by the stage driver)")
        self.expansions = Expansions.load(path)
        self.model = LateInteractionEncoder.from_pretrained(resolve_model(spec.model),
                                                            **encoder_options(spec))
        self.model.to(device).eval().requires_grad_(False)
        self.device = device

    @torch.no_grad()
    def in_batch_scores(self, batch: CandidateBatch, rank: int, world: int) -> torch.Tensor:
        from raykd.students.late_interaction import maxsim_matrix
        from raykd.train.student_scores import pad_passage_tokens

        q_in = self.model.tokenize_queries(batch.queries)
        p_in = self.model.tokenize_passages(batch.passages)
        (q, q_mask), (p, p_mask) = self.model({k: v.to(self.device) for k, v in q_in.items()},
                                              {k: v.to(self.device) for k, v in p_in.items()})
        p, p_mask = pad_passage_tokens(p.float(), p_mask, batch)
        similarity = self.model.options.similarity
        scores = maxsim_matrix(q.float(), q_mask, p, p_mask, similarity)
        centroids, weights = self.expansions.lookup(batch.qids)
        # The expansion embeddings act as extra query tokens whose "mask" is their weight.
        scores = scores + maxsim_matrix(torch.from_numpy(centroids).to(self.device),
                                        torch.from_numpy(weights).to(self.device), p, p_mask,
                                        similarity)
        return scores


ONLINE_TEACHERS = {"bi_encoder": DenseOnlineTeacher, "collective": CollectiveOnlineTeacher}


def build_online_teacher(spec: TeacherSpec, device: torch.device, extra: dict | None = None):
    """The in-step teacher for an in-batch loss; only kinds that can embed are allowed.
    `extra`: the worker config's extra inputs (a collective teacher's expansions file)."""
    if spec.kind not in ONLINE_TEACHERS:
        raise ConfigError("teacher.kind", f"an in-batch loss needs an online teacher, one of "
                                          f"{sorted(ONLINE_TEACHERS)}; got {spec.kind!r}")
    return ONLINE_TEACHERS[spec.kind](spec, device, extra)
