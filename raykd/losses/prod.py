"""PROD (Lin et al., WWW 2023): CE + T^2 KL(teacher || student) + T^2 KL(frozen || student).

One function serves both forms of METHODS.md 3(c): the per-query list form (L_II, 1+k
candidates per query, positive in the list) and the global in-batch form (L_I, the student
matrix [B, B*(1+k)] from :func:`raykd.losses.in_batch_scores`, positives at each query's own
column). The CE term uses the raw student scores (temperature 1); KD and Reg use ``T`` on both
sides and are multiplied by ``T^2``.
"""

from __future__ import annotations

from torch import Tensor

from raykd.errors import LossInputError
from raykd.losses.base import DistillationLoss
from raykd.losses.common import (
    MULTI_POSITIVE_MODES,
    LossBatch,
    check_bool,
    check_choice,
    check_number,
    check_temperature,
    masked_log_softmax,
    positive_nll,
    prepare_inputs,
    reduce_rows,
    row_kl,
)

NAME = "prod"


def _prod_parts(
    batch: LossBatch,
    temperature: float,
    lambda_ce: float,
    lambda_kd: float,
    lambda_reg: float,
    multi_positive: str,
) -> dict[str, Tensor]:
    assert batch.teacher is not None
    valid, w = batch.valid_mask, batch.instance_weight
    t2 = temperature**2
    logq_t = masked_log_softmax(batch.student, valid, temperature)
    ce = reduce_rows(
        positive_nll(masked_log_softmax(batch.student, valid, 1.0), batch.pos_mask, multi_positive),
        w,
    )
    kd = t2 * reduce_rows(
        row_kl(masked_log_softmax(batch.teacher, valid, temperature), logq_t, valid), w
    )
    total = lambda_ce * ce + lambda_kd * kd
    parts = {"ce": ce, "kd": kd}
    if lambda_reg > 0:
        if batch.reference is None:
            raise LossInputError(
                f"{NAME}: lambda_reg={lambda_reg:g} > 0 needs reference scores (the frozen "
                f"student's); pass reference= or set lambda_reg=0"
            )
        reg = t2 * reduce_rows(
            row_kl(masked_log_softmax(batch.reference, valid, temperature), logq_t, valid), w
        )
        parts["reg"] = reg
        total = total + lambda_reg * reg
    parts["total"] = total
    return parts


def _check_params(
    temperature: float, lambda_ce: float, lambda_kd: float, lambda_reg: float, multi_positive: str
) -> None:
    check_temperature(NAME, "temperature", temperature)
    check_number(NAME, "lambda_ce", lambda_ce, low=0.0)
    check_number(NAME, "lambda_kd", lambda_kd, low=0.0)
    check_number(NAME, "lambda_reg", lambda_reg, low=0.0)
    check_choice(NAME, "multi_positive", multi_positive, MULTI_POSITIVE_MODES)
    if lambda_ce == 0 and lambda_kd == 0 and lambda_reg == 0:
        raise LossInputError(f"{NAME}: lambda_ce, lambda_kd and lambda_reg are all 0")


def prod_loss_parts(
    student: Tensor,
    teacher: Tensor,
    pos_mask: Tensor,
    valid_mask: Tensor | None = None,
    reference: Tensor | None = None,
    *,
    temperature: float = 4.0,
    lambda_ce: float = 0.1,
    lambda_kd: float = 0.9,
    lambda_reg: float = 1.0,
    multi_positive: str = "mean",
    instance_weight: Tensor | None = None,
) -> dict[str, Tensor]:
    """PROD components ``{"ce", "kd", "reg" (when lambda_reg > 0), "total"}``.

    ``kd`` and ``reg`` already include the ``T^2`` factor; ``total = lambda_ce ce +
    lambda_kd kd + lambda_reg reg``. ``lambda_reg > 0`` without ``reference`` is an error.
    """
    _check_params(temperature, lambda_ce, lambda_kd, lambda_reg, multi_positive)
    batch = prepare_inputs(
        student,
        teacher,
        pos_mask,
        valid_mask,
        reference,
        instance_weight,
        loss=NAME,
        require_positive=lambda_ce > 0,
        require_reference=lambda_reg > 0,
    )
    return _prod_parts(batch, temperature, lambda_ce, lambda_kd, lambda_reg, multi_positive)


def prod_loss(
    student: Tensor,
    teacher: Tensor,
    pos_mask: Tensor,
    valid_mask: Tensor | None = None,
    reference: Tensor | None = None,
    **params: object,
) -> Tensor:
    """PROD total loss (see :func:`prod_loss_parts`)."""
    return prod_loss_parts(student, teacher, pos_mask, valid_mask, reference, **params)["total"]  # type: ignore[arg-type]


class PRODLoss(DistillationLoss):
    """PROD's stage objective. ``in_batch=True`` is L_I (set ``lambda_reg=0`` there, as in the
    paper), the default list form with ``lambda_reg > 0`` is L_II.

    ``needs_reference`` is ``lambda_reg > 0``. ``last_stats``: ``ce``, ``kd``, ``reg``, ``total``.
    """

    name = NAME
    needs_teacher = True
    needs_reference = True
    in_batch = False

    def __init__(
        self,
        temperature: float = 4.0,
        lambda_ce: float = 0.1,
        lambda_kd: float = 0.9,
        lambda_reg: float = 1.0,
        in_batch: bool = False,
        multi_positive: str = "mean",
        validate: bool = True,
    ) -> None:
        super().__init__(validate=validate)
        _check_params(temperature, lambda_ce, lambda_kd, lambda_reg, multi_positive)
        self.temperature = float(temperature)
        self.lambda_ce = float(lambda_ce)
        self.lambda_kd = float(lambda_kd)
        self.lambda_reg = float(lambda_reg)
        self.multi_positive = multi_positive
        self.in_batch = check_bool(NAME, "in_batch", in_batch)
        self.needs_reference = self.lambda_reg > 0

    def _requires_positive(self) -> bool:
        return self.lambda_ce > 0

    def compute(self, batch: LossBatch, progress: float | None) -> Tensor:
        assert batch.teacher is not None
        if self.lambda_kd > 0:
            self._check_collapse(batch.teacher, batch.valid_mask, self.temperature)
        parts = _prod_parts(
            batch,
            self.temperature,
            self.lambda_ce,
            self.lambda_kd,
            self.lambda_reg,
            self.multi_positive,
        )
        self.last_stats = {k: v.detach() for k, v in parts.items()}
        return parts["total"]

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature:g}, lambda_ce={self.lambda_ce:g}, "
            f"lambda_kd={self.lambda_kd:g}, lambda_reg={self.lambda_reg:g}, "
            f"in_batch={self.in_batch}"
        )
