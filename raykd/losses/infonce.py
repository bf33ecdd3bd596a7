"""InfoNCE / contrastive cross-entropy of the labelled positive(s) over the candidate list."""

from __future__ import annotations

from torch import Tensor

from raykd.losses.base import DistillationLoss
from raykd.losses.common import (
    MULTI_POSITIVE_MODES,
    LossBatch,
    check_bool,
    check_choice,
    check_temperature,
    masked_log_softmax,
    positive_nll,
    prepare_inputs,
    reduce_rows,
)

NAME = "infonce"


def _infonce_rows(batch: LossBatch, temperature: float, multi_positive: str) -> Tensor:
    logq = masked_log_softmax(batch.student, batch.valid_mask, temperature)
    return positive_nll(logq, batch.pos_mask, multi_positive)


def infonce_loss(
    student: Tensor,
    pos_mask: Tensor,
    valid_mask: Tensor | None = None,
    *,
    temperature: float = 1.0,
    multi_positive: str = "mean",
    instance_weight: Tensor | None = None,
) -> Tensor:
    """Mean over queries of ``-log softmax(s / temperature)`` at the positive.

    Several positives in a row: ``multi_positive="mean"`` averages ``-log q_j`` over them;
    ``"logsumexp"`` uses ``-log sum_j q_j`` (mass on the positive set). For the global
    in-batch form pass the matrices built by :func:`raykd.losses.in_batch_scores`.
    """
    check_temperature(NAME, "temperature", temperature)
    check_choice(NAME, "multi_positive", multi_positive, MULTI_POSITIVE_MODES)
    batch = prepare_inputs(
        student,
        None,
        pos_mask,
        valid_mask,
        instance_weight=instance_weight,
        loss=NAME,
        require_teacher=False,
        require_positive=True,
    )
    return reduce_rows(_infonce_rows(batch, temperature, multi_positive), batch.instance_weight)


class InfoNCELoss(DistillationLoss):
    """InfoNCE over the list (or, with ``in_batch=True``, over global in-batch candidates)."""

    name = NAME
    needs_teacher = False
    needs_reference = False
    in_batch = False
    requires_positive = True

    def __init__(
        self,
        temperature: float = 1.0,
        multi_positive: str = "mean",
        in_batch: bool = False,
        validate: bool = True,
    ) -> None:
        super().__init__(validate=validate)
        self.temperature = check_temperature(NAME, "temperature", temperature)
        self.multi_positive = check_choice(
            NAME, "multi_positive", multi_positive, MULTI_POSITIVE_MODES
        )
        self.in_batch = check_bool(NAME, "in_batch", in_batch)

    def compute(self, batch: LossBatch, progress: float | None) -> Tensor:
        rows = _infonce_rows(batch, self.temperature, self.multi_positive)
        return reduce_rows(rows, batch.instance_weight)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:g}, multi_positive={self.multi_positive!r}"
