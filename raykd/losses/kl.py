"""Listwise KL(teacher || student) over each query's candidate list."""

from __future__ import annotations

from dataclasses import replace

from torch import Tensor

from raykd.losses.base import DistillationLoss
from raykd.losses.common import (
    LossBatch,
    check_bool,
    check_number,
    check_temperature,
    lift_positives,
    masked_log_softmax,
    positive_nll,
    prepare_inputs,
    reduce_rows,
    row_kl,
)

NAME = "kl"


def _kl_rows(batch: LossBatch, student_temperature: float, teacher_temperature: float) -> Tensor:
    assert batch.teacher is not None
    logq = masked_log_softmax(batch.student, batch.valid_mask, student_temperature)
    logp = masked_log_softmax(batch.teacher, batch.valid_mask, teacher_temperature)
    return row_kl(logp, logq, batch.valid_mask)


def _kl(
    batch: LossBatch, student_temperature: float, teacher_temperature: float, t2_scaling: bool
) -> Tensor:
    loss = reduce_rows(
        _kl_rows(batch, student_temperature, teacher_temperature), batch.instance_weight
    )
    return loss * student_temperature**2 if t2_scaling else loss


def kl_rows(
    student: Tensor,
    teacher: Tensor,
    valid_mask: Tensor | None = None,
    *,
    student_temperature: float = 1.0,
    teacher_temperature: float = 1.0,
) -> Tensor:
    """Per-query KL(softmax(t/tau_t) || softmax(s/tau_s)) summed over candidates, shape [B]."""
    check_temperature(NAME, "student_temperature", student_temperature)
    check_temperature(NAME, "teacher_temperature", teacher_temperature)
    batch = prepare_inputs(student, teacher, None, valid_mask, loss=NAME)
    return _kl_rows(batch, student_temperature, teacher_temperature)


def kl_loss(
    student: Tensor,
    teacher: Tensor,
    valid_mask: Tensor | None = None,
    *,
    student_temperature: float = 1.0,
    teacher_temperature: float = 1.0,
    t2_scaling: bool = False,
    instance_weight: Tensor | None = None,
) -> Tensor:
    """Listwise KL(teacher || student), ``F.kl_div`` convention, batchmean reduction.

    Sum over candidates, mean over queries; with ``instance_weight`` v the weighted mean
    ``sum_q v_q KL_q / sum_q v_q`` (0, with a gradient, when every weight is 0).
    ``t2_scaling`` multiplies by ``student_temperature**2``, which undoes the 1/T^2 shrink of
    the student's gradient (the classic T^2 when both temperatures are equal).
    """
    check_temperature(NAME, "student_temperature", student_temperature)
    check_temperature(NAME, "teacher_temperature", teacher_temperature)
    batch = prepare_inputs(
        student, teacher, None, valid_mask, instance_weight=instance_weight, loss=NAME
    )
    return _kl(batch, student_temperature, teacher_temperature, t2_scaling)


def _labelled_nll(batch: LossBatch) -> Tensor:
    """InfoNCE at temperature 1, averaged over the rows with a labelled positive (0 when none)."""
    nll = positive_nll(masked_log_softmax(batch.student, batch.valid_mask, 1.0), batch.pos_mask)
    labelled = batch.pos_mask.any(dim=-1).to(nll.dtype)
    weight = labelled if batch.instance_weight is None else labelled * batch.instance_weight
    return reduce_rows(nll, weight)


class KLLoss(DistillationLoss):
    """Listwise KL distillation.

    ``temperature`` sets both sides; ``student_temperature`` / ``teacher_temperature`` override
    one side. ``in_batch`` tells the trainer to feed global in-batch score matrices.
    ``positive_margin`` corrects the teacher by the labels before the softmax: a labelled
    positive scores at least that much above its row's best negative (0: never below one, as
    CollectiveKD's row-max overwrite); rows without a label (pseudo-queries) keep the teacher's.
    ``label_weight`` adds that weight times InfoNCE (temperature 1) on the rows that have a
    labelled positive, averaged over those rows: the labels anchor the labelled queries while
    the teacher alone speaks for the unlabelled ones.
    ``exclude_positives`` takes the KL over each row's negatives only (both softmaxes
    renormalised over them), the non-target term of decoupled KD (Zhao et al., 2022): the labels
    alone place the positive (with ``label_weight``), the teacher only orders the rest, so it
    can never pull a positive down. Rows without a labelled positive keep their whole list.
    ``unlabelled_only`` takes the KL over the rows without a labelled positive alone
    (pseudo-queries), averaged over them: the labelled rows learn from the labels only
    (``label_weight`` > 0), the teacher speaks only where no label does.
    """

    name = NAME
    needs_teacher = True
    needs_reference = False
    in_batch = False

    def __init__(
        self,
        temperature: float = 1.0,
        student_temperature: float | None = None,
        teacher_temperature: float | None = None,
        t2_scaling: bool = False,
        in_batch: bool = False,
        positive_margin: float | None = None,
        label_weight: float = 0.0,
        exclude_positives: bool = False,
        unlabelled_only: bool = False,
        validate: bool = True,
    ) -> None:
        super().__init__(validate=validate)
        self.label_weight = check_number(NAME, "label_weight", label_weight, low=0.0)
        self.exclude_positives = check_bool(NAME, "exclude_positives", exclude_positives)
        self.unlabelled_only = check_bool(NAME, "unlabelled_only", unlabelled_only)
        if self.unlabelled_only and (exclude_positives or positive_margin is not None):
            raise ValueError(f"{NAME}: exclude_positives and positive_margin change the labelled "
                             f"rows, which unlabelled_only leaves to the labels; set "
                             f"exclude_positives=false and positive_margin=null")
        if self.unlabelled_only and not self.label_weight:
            raise ValueError(f"{NAME}: unlabelled_only with label_weight=0 leaves the labelled "
                             f"rows without a loss; set label_weight > 0")
        if self.exclude_positives and positive_margin is not None:
            raise ValueError(f"{NAME}: positive_margin lifts the positives that "
                             f"exclude_positives leaves out of the KL; set "
                             f"positive_margin=null")
        if positive_margin is not None and not (
            isinstance(positive_margin, (int, float)) and 0 <= positive_margin < float("inf")
        ):
            raise ValueError(f"{NAME}: positive_margin must be a finite number >= 0 or None, "
                             f"got {positive_margin!r}")
        self.positive_margin = None if positive_margin is None else float(positive_margin)
        temperature = check_temperature(NAME, "temperature", temperature)
        self.student_temperature = (
            temperature
            if student_temperature is None
            else check_temperature(NAME, "student_temperature", student_temperature)
        )
        self.teacher_temperature = (
            temperature
            if teacher_temperature is None
            else check_temperature(NAME, "teacher_temperature", teacher_temperature)
        )
        self.t2_scaling = check_bool(NAME, "t2_scaling", t2_scaling)
        self.in_batch = check_bool(NAME, "in_batch", in_batch)

    def compute(self, batch: LossBatch, progress: float | None) -> Tensor:
        assert batch.teacher is not None
        if self.positive_margin is not None:
            batch = replace(batch, teacher=lift_positives(batch.teacher, batch.pos_mask,
                                                          batch.valid_mask,
                                                          self.positive_margin))
        target = replace(batch, valid_mask=batch.valid_mask & ~batch.pos_mask) \
            if self.exclude_positives else batch
        if self.unlabelled_only:
            unlabelled = (~batch.pos_mask.any(dim=-1)).to(batch.student.dtype)
            weight = unlabelled if batch.instance_weight is None \
                else unlabelled * batch.instance_weight
            target = replace(batch, instance_weight=weight)
        self._check_collapse(target.teacher, target.valid_mask, self.teacher_temperature)
        loss = _kl(target, self.student_temperature, self.teacher_temperature, self.t2_scaling)
        if self.label_weight:
            loss = loss + self.label_weight * _labelled_nll(batch)
        return loss

    def extra_repr(self) -> str:
        return (
            f"student_temperature={self.student_temperature:g}, "
            f"teacher_temperature={self.teacher_temperature:g}, t2_scaling={self.t2_scaling}, "
            f"label_weight={self.label_weight:g}, exclude_positives={self.exclude_positives}, "
            f"unlabelled_only={self.unlabelled_only}"
        )
