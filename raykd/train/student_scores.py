"""The two student kinds inside the training loop: loading, and scores in the loss's layout.

A bi-encoder scores with `raykd.train.batching.Scorer` (in-batch: against the global batch,
all-gathered). A late-interaction student scores by MaxSim, and its in-batch matrix is per
process, as in CollectiveKD (METHODS.md 4(b): in-batch negatives per process, no all-gather).
"""

from __future__ import annotations

import torch

from raykd.errors import ConfigError
from raykd.students import BiEncoder
from raykd.students.late_interaction import LateInteractionEncoder, maxsim, maxsim_matrix
from raykd.train.batching import CandidateBatch, Scorer, in_batch_positives

STUDENT_KINDS = {"bi_encoder": BiEncoder, "late_interaction": LateInteractionEncoder}


def load_student(kind: str, path: str, options: dict):
    """The student of `kind` from a folder (a fresh encoder or a saved student)."""
    if kind not in STUDENT_KINDS:
        raise ConfigError("student.kind", f"{kind!r} is not one of {sorted(STUDENT_KINDS)}")
    return STUDENT_KINDS[kind].from_pretrained(path, **options)


def pad_passage_tokens(p_tokens: torch.Tensor, p_mask: torch.Tensor, batch: CandidateBatch
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat passage tokens [P, Lp, d] and mask [P, Lp] in the padded [B * m] layout; padding
    rows are zeros with an all-False mask."""
    size, m = batch.shape
    flat = batch.passage_index.flatten().to(p_tokens.device)
    valid = torch.nonzero(flat >= 0).flatten()
    tokens = p_tokens.new_zeros((size * m, *p_tokens.shape[1:]))
    mask = p_mask.new_zeros((size * m, p_mask.shape[1]))
    tokens = tokens.index_copy(0, valid, p_tokens[flat[valid]])
    mask = mask.index_copy(0, valid, p_mask[flat[valid]])
    return tokens, mask


class LateInteractionScorer:
    """MaxSim scores: per-query lists [B, m], or the per-process in-batch matrix [B, B * m]."""

    per_process = True

    def __init__(self, student: LateInteractionEncoder, in_batch: bool, rank: int, world: int):
        self.student, self.in_batch, self.rank, self.world = student, in_batch, rank, world

    def scores(self, q_emb, p_emb, batch: CandidateBatch, gather_grad: bool = True
               ) -> torch.Tensor:
        """`q_emb`, `p_emb`: the (tokens, mask) pairs of the student's forward."""
        (q, q_mask), (p, p_mask) = q_emb, p_emb
        p, p_mask = pad_passage_tokens(p, p_mask, batch)
        similarity = self.student.options.similarity
        q, p = q.float(), p.float()  # MaxSim sums many terms: fp32 under mixed precision
        if self.in_batch:
            return maxsim_matrix(q, q_mask, p, p_mask, similarity)
        size, m = batch.shape
        return maxsim(q[:, None], q_mask[:, None], p.view(size, m, *p.shape[1:]),
                      p_mask.view(size, m, -1), similarity)

    def masks(self, batch: CandidateBatch, device) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.in_batch:
            return batch.pos_mask.to(device), batch.valid_mask.to(device)
        pos = in_batch_positives(batch, 0, 1)
        valid = batch.valid_mask.flatten().unsqueeze(0).expand(batch.shape[0], -1)
        return pos.to(device), valid.to(device)


def make_scorer(student, in_batch: bool, rank: int, world: int):
    """The scorer for a student (None for none, e.g. no frozen reference)."""
    if student is None:
        return None
    if isinstance(student, LateInteractionEncoder):
        return LateInteractionScorer(student, in_batch, rank, world)
    return Scorer(student, in_batch, rank, world)


def check_layout(scorer, online_teacher, world: int) -> None:
    """Student and online teacher must agree on the in-batch pool: global (all-gathered) or
    per process. With one worker both are the same."""
    if online_teacher is None or world == 1:
        return
    student_local = getattr(scorer, "per_process", False)
    teacher_local = getattr(online_teacher, "per_process", False)
    if student_local != teacher_local:
        raise ConfigError("teacher.kind", (
            f"with {world} workers the student scores in-batch negatives "
            f"{'per process' if student_local else 'over the global batch'} but the online "
            f"teacher {'per process' if teacher_local else 'over the global batch'}; use a "
            f"late-interaction student with a collective teacher, or one worker"))
