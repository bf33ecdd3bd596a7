"""ADAM's self-paced distillation (Tao et al., 2024; reconstruction, METHODS.md 5c).

Each query gets a teacher confidence ``c_q`` (softmax probability of its positive(s)); a
selection rule keeps the confident ones (``c_q >= theta`` or the top ``rho`` fraction of the
batch), with ``theta`` / ``rho`` following a schedule over training progress; the kept
queries' listwise KL is averaged: ``sum_q v_q KL_q / sum_q v_q``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor

from raykd.errors import LossInputError
from raykd.losses.base import DistillationLoss
from raykd.losses.common import (
    LossBatch,
    check_bool,
    check_choice,
    check_number,
    check_temperature,
    masked_log_softmax,
    positive_nll,
    prepare_inputs,
    reduce_rows,
)
from raykd.losses.kl import _kl

NAME = "adam"
SELECTION_MODES = ("threshold", "top_rho")
CONFIDENCE_LISTS = ("original", "full")


# ------------------------------------------------------------------------------ schedules


class ConstantSchedule:
    """The same value at every point of training."""

    def __init__(self, value: float) -> None:
        self.value = float(value)

    def __call__(self, progress: float | None) -> float:
        return self.value

    def __repr__(self) -> str:
        return f"ConstantSchedule({self.value:g})"


class LinearSchedule:
    """``start + (end - start) * progress`` for progress in [0, 1]."""

    def __init__(self, start: float, end: float) -> None:
        self.start = float(start)
        self.end = float(end)

    def __call__(self, progress: float | None) -> float:
        if progress is None:
            raise LossInputError(f"{NAME}: progress (in [0, 1]) is required by a linear schedule")
        return self.start + (self.end - self.start) * progress

    def __repr__(self) -> str:
        return f"LinearSchedule({self.start:g}, {self.end:g})"


SCHEDULES: dict[str, Callable[..., Callable[[float | None], float]]] = {
    "constant": ConstantSchedule,
    "linear": LinearSchedule,
}


# ---------------------------------------------------------------------- pure functions


def _original_support(batch: LossBatch) -> Tensor:
    """Valid candidates that are not dark examples; every positive must be among them."""
    if batch.original_mask is None:
        return batch.valid_mask
    support = batch.valid_mask & batch.original_mask
    lost = batch.pos_mask & ~support
    if bool(lost.any()):
        row = int(lost.nonzero()[0, 0])
        raise LossInputError(
            f"{NAME}: original_mask excludes a positive at row {row}; positives belong to the "
            f"original list"
        )
    return support


def _confidence(batch: LossBatch, temperature: float, over: str) -> Tensor:
    assert batch.teacher is not None
    support = _original_support(batch) if over == "original" else batch.valid_mask
    logp = masked_log_softmax(batch.teacher, support, temperature)
    return torch.where(batch.pos_mask, logp.exp(), torch.zeros_like(logp)).sum(dim=-1)


def teacher_confidence(
    teacher: Tensor,
    pos_mask: Tensor,
    valid_mask: Tensor | None = None,
    original_mask: Tensor | None = None,
    *,
    temperature: float = 1.0,
) -> Tensor:
    """Teacher softmax probability of the positive(s) (summed over positives), shape [B].

    The softmax runs over the original list (``valid_mask & original_mask``: the candidates
    that are not dark examples) when ``original_mask`` is given, else over the full valid list.
    """
    check_temperature(NAME, "temperature", temperature)
    batch = prepare_inputs(
        teacher,
        teacher,
        pos_mask,
        valid_mask,
        original_mask=original_mask,
        loss=NAME,
        require_positive=True,
    )
    return _confidence(batch, temperature, "original")


def select_instances(
    confidence: Tensor,
    mode: str = "threshold",
    threshold: float = 0.5,
    rho: float = 0.7,
) -> Tensor:
    """Self-paced instance weights in {0, 1}, same dtype as ``confidence``.

    ``threshold``: keep ``c_q >= threshold``. ``top_rho``: keep the ``max(1, floor(rho * B))``
    most confident queries (ties broken by position).
    """
    check_choice(NAME, "mode", mode, SELECTION_MODES)
    if confidence.dim() != 1 or confidence.numel() == 0:
        raise LossInputError(
            f"{NAME}: confidence must be a non-empty [B] tensor, got {tuple(confidence.shape)}"
        )
    if mode == "threshold":
        check_number(NAME, "threshold", threshold, low=0.0, high=1.0)
        return (confidence >= threshold).to(confidence.dtype)
    check_number(NAME, "rho", rho, low=0.0, high=1.0, low_open=True)
    n = confidence.numel()
    k = max(1, math.floor(rho * n + 1e-9))
    keep = torch.zeros_like(confidence)
    keep[torch.topk(confidence, k, sorted=False).indices] = 1.0
    return keep


def self_paced_kl_loss(
    student: Tensor,
    teacher: Tensor,
    pos_mask: Tensor,
    valid_mask: Tensor | None = None,
    original_mask: Tensor | None = None,
    *,
    temperature: float = 1.0,
    confidence_over: str = "original",
    mode: str = "threshold",
    threshold: float = 0.5,
    rho: float = 0.7,
) -> Tensor:
    """KL(teacher || student) at ``temperature``, averaged over the selected queries."""
    check_temperature(NAME, "temperature", temperature)
    check_choice(NAME, "confidence_over", confidence_over, CONFIDENCE_LISTS)
    batch = prepare_inputs(
        student,
        teacher,
        pos_mask,
        valid_mask,
        original_mask=original_mask,
        loss=NAME,
        require_positive=True,
    )
    weights = select_instances(
        _confidence(batch, temperature, confidence_over), mode, threshold, rho
    )
    return _kl(_with_weight(batch, weights), temperature, temperature, False)


def _with_weight(batch: LossBatch, weights: Tensor) -> LossBatch:
    if batch.instance_weight is not None:
        weights = weights * batch.instance_weight
    return LossBatch(
        batch.student,
        batch.teacher,
        batch.pos_mask,
        batch.valid_mask,
        batch.reference,
        weights,
        batch.original_mask,
    )


# ---------------------------------------------------------------------------- module


class SelfPacedKLLoss(DistillationLoss):
    """ADAM: listwise KL with self-paced instance selection by teacher confidence.

    * ``confidence_over``: ``"original"`` (default; softmax over the non-dark candidates given
      by ``original_mask``; with no ``original_mask`` every valid candidate counts as original)
      or ``"full"`` (over the whole list, dark examples included: systematically lower).
    * ``selection``: ``"threshold"`` (keep ``c_q >= theta``) or ``"top_rho"`` (default, keep
      the ``rho`` most confident fraction of the batch).
    * ``schedule``: ``"constant"`` (``threshold`` or ``rho``) or ``"linear"`` (from
      ``schedule_start`` to ``schedule_end`` over progress in [0, 1]).
    * ``ce_weight``: optional contrastive CE on the positive over the original list.
    * ``exclude_positives``: the KL over each row's non-positive candidates only (mined
      negatives and dark examples, both softmaxes renormalised over them), decoupled KD's
      non-target term: the CE (``ce_weight``, then required > 0) alone places the positive and
      the teacher orders the rest, so its KL can never pull a positive down.

    ``last_stats``: ``kept_fraction``, ``mean_confidence``, ``selection_value``, ``kl``
    (and ``ce``, ``total``).
    """

    name = NAME
    needs_teacher = True
    needs_reference = False
    in_batch = False
    needs_original_mask = True
    requires_positive = True

    def __init__(
        self,
        temperature: float = 1.0,
        confidence_temperature: float | None = None,
        confidence_over: str = "original",
        selection: str = "top_rho",
        threshold: float = 0.5,
        rho: float = 0.7,
        schedule: str = "constant",
        schedule_start: float | None = None,
        schedule_end: float | None = None,
        ce_weight: float = 0.0,
        t2_scaling: bool = False,
        exclude_positives: bool = False,
        validate: bool = True,
    ) -> None:
        super().__init__(validate=validate)
        self.temperature = check_temperature(NAME, "temperature", temperature)
        self.confidence_temperature = (
            self.temperature
            if confidence_temperature is None
            else check_temperature(NAME, "confidence_temperature", confidence_temperature)
        )
        self.confidence_over = check_choice(
            NAME, "confidence_over", confidence_over, CONFIDENCE_LISTS
        )
        self.selection = check_choice(NAME, "selection", selection, SELECTION_MODES)
        if selection == "threshold":
            value_name, low, low_open = "threshold", 0.0, False
            value = check_number(NAME, "threshold", threshold, low=0.0, high=1.0)
        else:
            value_name, low, low_open = "rho", 0.0, True
            value = check_number(NAME, "rho", rho, low=0.0, high=1.0, low_open=True)
        check_choice(NAME, "schedule", schedule, tuple(SCHEDULES))
        if schedule == "constant":
            if schedule_start is not None or schedule_end is not None:
                raise LossInputError(
                    f"{NAME}: schedule_start/schedule_end need schedule='linear' "
                    f"(the constant schedule uses {value_name})"
                )
            self.schedule = ConstantSchedule(value)
        else:
            if schedule_start is None or schedule_end is None:
                raise LossInputError(
                    f"{NAME}: schedule_start and schedule_end (values of {value_name}) are "
                    f"required by schedule='linear'"
                )
            for pname, v in (("schedule_start", schedule_start), ("schedule_end", schedule_end)):
                check_number(NAME, pname, v, low=low, high=1.0, low_open=low_open)
            self.schedule = LinearSchedule(schedule_start, schedule_end)
        self.ce_weight = check_number(NAME, "ce_weight", ce_weight, low=0.0)
        self.t2_scaling = check_bool(NAME, "t2_scaling", t2_scaling)
        self.exclude_positives = check_bool(NAME, "exclude_positives", exclude_positives)
        if self.exclude_positives and self.ce_weight == 0:
            raise LossInputError(
                f"{NAME}: exclude_positives leaves the positive to the CE alone; set "
                f"ce_weight > 0 (1.0 weighs it like the label-only recipe)"
            )

    def selection_value(self, progress: float | None) -> float:
        """The threshold (or rho) at training progress ``progress``."""
        return self.schedule(progress)

    def compute(self, batch: LossBatch, progress: float | None) -> Tensor:
        assert batch.teacher is not None
        self._check_collapse(batch.teacher, batch.valid_mask, self.temperature)
        value = self.selection_value(progress)
        confidence = _confidence(batch, self.confidence_temperature, self.confidence_over)
        if self.selection == "threshold":
            keep = select_instances(confidence, "threshold", threshold=value)
        else:
            keep = select_instances(confidence, "top_rho", rho=value)
        target = (
            replace(batch, valid_mask=batch.valid_mask & ~batch.pos_mask)
            if self.exclude_positives
            else batch
        )
        kl = _kl(_with_weight(target, keep), self.temperature, self.temperature, self.t2_scaling)
        stats = {
            "kl": kl.detach(),
            "kept_fraction": keep.mean(),
            "mean_confidence": confidence.mean(),
            "selection_value": torch.tensor(value, device=confidence.device),
        }
        total = kl
        if self.ce_weight > 0:
            logq = masked_log_softmax(batch.student, _original_support(batch), 1.0)
            ce = reduce_rows(positive_nll(logq, batch.pos_mask), batch.instance_weight)
            stats["ce"] = ce.detach()
            total = kl + self.ce_weight * ce
        stats["total"] = total.detach()
        self.last_stats = stats
        return total

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature:g}, confidence_over={self.confidence_over!r}, "
            f"selection={self.selection!r}, schedule={self.schedule!r}, "
            f"ce_weight={self.ce_weight:g}, exclude_positives={self.exclude_positives}"
        )
