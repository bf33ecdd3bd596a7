"""CollectiveKD (Kim et al., NAACL 2022): KL with a teacher-only temperature and the labelled
positive's teacher score raised to its row maximum before the softmax (METHODS.md 4c)."""

from __future__ import annotations

import torch
from torch import Tensor

from raykd.losses.base import DistillationLoss
from raykd.losses.common import (
    NEG_FILL,
    LossBatch,
    check_bool,
    check_temperature,
    masked_log_softmax,
    prepare_inputs,
    reduce_rows,
    row_kl,
)

NAME = "collective"


def overwrite_positive_with_row_max(
    teacher: Tensor, pos_mask: Tensor, valid_mask: Tensor
) -> Tensor:
    """Teacher scores with every labelled positive set to its row's maximum valid score."""
    row_max = teacher.masked_fill(~valid_mask, NEG_FILL).max(dim=-1, keepdim=True).values
    return torch.where(pos_mask, row_max.expand_as(teacher), teacher)


def _collective_target(batch: LossBatch, overwrite_positive: bool) -> Tensor:
    assert batch.teacher is not None
    if not overwrite_positive:
        return batch.teacher
    return overwrite_positive_with_row_max(batch.teacher, batch.pos_mask, batch.valid_mask)


def _collective(
    batch: LossBatch,
    teacher_temperature: float,
    student_temperature: float,
    overwrite_positive: bool,
) -> Tensor:
    teacher = _collective_target(batch, overwrite_positive)
    logp = masked_log_softmax(teacher, batch.valid_mask, teacher_temperature)
    logq = masked_log_softmax(batch.student, batch.valid_mask, student_temperature)
    return reduce_rows(row_kl(logp, logq, batch.valid_mask), batch.instance_weight)


def collective_loss(
    student: Tensor,
    teacher: Tensor,
    pos_mask: Tensor,
    valid_mask: Tensor | None = None,
    *,
    teacher_temperature: float = 0.25,
    student_temperature: float = 1.0,
    overwrite_positive: bool = True,
    instance_weight: Tensor | None = None,
) -> Tensor:
    """``mean_b KL(softmax(T'_b / tau) || softmax(S_b))`` with ``T'`` the row-max-overwritten
    teacher. Only the teacher is tempered (``student_temperature`` stays 1 in the method)."""
    check_temperature(NAME, "teacher_temperature", teacher_temperature)
    check_temperature(NAME, "student_temperature", student_temperature)
    batch = prepare_inputs(
        student,
        teacher,
        pos_mask,
        valid_mask,
        instance_weight=instance_weight,
        loss=NAME,
        require_positive=overwrite_positive,
    )
    return _collective(batch, teacher_temperature, student_temperature, overwrite_positive)


class CollectiveKDLoss(DistillationLoss):
    """CollectiveKD's in-batch KL (``in_batch=False`` for a per-query list variant)."""

    name = NAME
    needs_teacher = True
    needs_reference = False
    in_batch = True
    requires_positive = True

    def __init__(
        self,
        teacher_temperature: float = 0.25,
        student_temperature: float = 1.0,
        overwrite_positive: bool = True,
        in_batch: bool = True,
        validate: bool = True,
    ) -> None:
        super().__init__(validate=validate)
        self.teacher_temperature = check_temperature(
            NAME, "teacher_temperature", teacher_temperature
        )
        self.student_temperature = check_temperature(
            NAME, "student_temperature", student_temperature
        )
        self.overwrite_positive = check_bool(NAME, "overwrite_positive", overwrite_positive)
        self.in_batch = check_bool(NAME, "in_batch", in_batch)

    def _requires_positive(self) -> bool:
        return self.overwrite_positive

    def compute(self, batch: LossBatch, progress: float | None) -> Tensor:
        target = _collective_target(batch, self.overwrite_positive)
        self._check_collapse(target, batch.valid_mask, self.teacher_temperature)
        return _collective(
            batch, self.teacher_temperature, self.student_temperature, self.overwrite_positive
        )

    def extra_repr(self) -> str:
        return (
            f"teacher_temperature={self.teacher_temperature:g}, "
            f"overwrite_positive={self.overwrite_positive}, in_batch={self.in_batch}"
        )
