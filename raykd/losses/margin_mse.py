"""Margin-MSE (Hofstätter et al., 2020): match the teacher's positive-negative score margins."""

from __future__ import annotations

import torch
from torch import Tensor

from raykd.errors import LossInputError
from raykd.losses.base import DistillationLoss
from raykd.losses.common import LossBatch, prepare_inputs

NAME = "margin_mse"


def _margin_mse(batch: LossBatch) -> Tensor:
    s, t, pos, valid = batch.student, batch.teacher, batch.pos_mask, batch.valid_mask
    assert t is not None
    # (s_i - s_j) - (t_i - t_j) == d_i - d_j with d = s - t; centring d per row (a shift the
    # loss is invariant to) keeps magnitudes small.
    d = s - t
    neg = valid & ~pos
    d = d - (d * valid).sum(-1, keepdim=True) / valid.sum(-1, keepdim=True)
    # Gather each row's positives into [B, K] (K = most positives in a row; usually 1), so the
    # pair tensor is [B, K, m] rather than [B, m, m].
    k = int(pos.sum(-1).max())
    order = torch.sort(pos.to(torch.int8), dim=-1, descending=True, stable=True)
    idx = order.indices[:, :k]
    has_pos = order.values[:, :k].bool()
    diff = d.gather(1, idx).unsqueeze(-1) - d.unsqueeze(1)  # [B, K, m]
    pair = has_pos.unsqueeze(-1) & neg.unsqueeze(1)
    sq = torch.where(pair, diff.square(), torch.zeros_like(diff))
    per_row_sum = sq.sum(dim=(1, 2))
    per_row_pairs = pair.sum(dim=(1, 2)).to(s.dtype)
    if not bool((per_row_pairs > 0).any()):
        raise LossInputError(f"{NAME}: no (positive, negative) pair in the batch")
    w = batch.instance_weight
    if w is None:
        return per_row_sum.sum() / per_row_pairs.sum()
    denom = (w * per_row_pairs).sum()
    safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    return (w * per_row_sum).sum() / safe


def margin_mse_loss(
    student: Tensor,
    teacher: Tensor,
    pos_mask: Tensor,
    valid_mask: Tensor | None = None,
    instance_weight: Tensor | None = None,
) -> Tensor:
    """Mean over all (query, positive, valid negative) pairs of
    ``((s_pos - s_neg) - (t_pos - t_neg))^2``.

    With one positive per row this is METHODS 1(c). With ``instance_weight`` v the mean is
    weighted per query: ``sum_q v_q SSE_q / sum_q v_q n_pairs_q``. No temperature.
    """
    batch = prepare_inputs(
        student,
        teacher,
        pos_mask,
        valid_mask,
        instance_weight=instance_weight,
        loss=NAME,
        require_positive=True,
    )
    return _margin_mse(batch)


class MarginMSELoss(DistillationLoss):
    """Margin-MSE as a module (no parameters besides ``validate``)."""

    name = NAME
    needs_teacher = True
    needs_reference = False
    in_batch = False
    requires_positive = True

    def __init__(self, validate: bool = True) -> None:
        super().__init__(validate=validate)

    def compute(self, batch: LossBatch, progress: float | None) -> Tensor:
        return _margin_mse(batch)
