"""CKL: contrastively weighted KL (Yang et al., SIGIR 2024), plus alpha * InfoNCE.

Reconstruction (METHODS.md 2c): per-candidate KL terms ``p_i log(p_i / q_i)`` are weighted by
``(1 - q_j)^gamma`` on positives and ``q_i^max(gamma - beta_i, 0)`` on negatives, summed over
the list and averaged over queries. ``beta`` is a rank-based bias (pluggable, default 0).
The weights are constants (detached) unless ``detach_weights=False``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
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
    kl_terms,
    masked_log_softmax,
    positive_nll,
    prepare_inputs,
    reduce_rows,
)

NAME = "ckl"

BetaFn = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
"""``beta(student, teacher, pos_mask, valid_mask) -> [B, m]``; values on positives are unused."""

BetaSpec = str | BetaFn | Tensor | Sequence[float]


def _negative_rank(scores: Tensor, pos: Tensor, valid: Tensor) -> Tensor:
    """0-based rank of each valid negative among its row's negatives, highest score first."""
    neg = valid & ~pos
    key = scores.masked_fill(~neg, float("-inf"))
    order = torch.argsort(key, dim=-1, descending=True, stable=True)
    return torch.argsort(order, dim=-1, stable=True).to(scores.dtype)


def beta_zero(student: Tensor, teacher: Tensor, pos: Tensor, valid: Tensor) -> Tensor:
    """No bias: every negative is weighted ``q_i^gamma``."""
    return torch.zeros_like(student)


def beta_student_rank(student: Tensor, teacher: Tensor, pos: Tensor, valid: Tensor) -> Tensor:
    """``1 / (1 + r_i)``, r_i the student's rank of negative i (0 = the student's top negative).

    Raises the weight of the negatives the student confuses most.
    """
    return 1.0 / (1.0 + _negative_rank(student, pos, valid))


def beta_teacher_rank(student: Tensor, teacher: Tensor, pos: Tensor, valid: Tensor) -> Tensor:
    """``1 / (1 + r_i)``, r_i the rank of negative i from the teacher's *lowest* upwards.

    Raises the weight of the negatives the teacher is surest are irrelevant.
    """
    return 1.0 / (1.0 + _negative_rank(-teacher, pos, valid))


BETA_FUNCTIONS: dict[str, BetaFn] = {
    "zero": beta_zero,
    "student_rank": beta_student_rank,
    "teacher_rank": beta_teacher_rank,
}


def resolve_beta(beta: BetaSpec) -> BetaFn | Tensor:
    """A beta name, callable, or explicit per-candidate values ([m] or [B, m]) -> fn or tensor."""
    if isinstance(beta, str):
        if beta not in BETA_FUNCTIONS:
            raise LossInputError(
                f"{NAME}: beta must be one of {sorted(BETA_FUNCTIONS)}, a callable or a tensor, "
                f"got {beta!r}"
            )
        return BETA_FUNCTIONS[beta]
    if callable(beta):
        return beta
    try:
        values = torch.as_tensor(beta, dtype=torch.float32)
    except (TypeError, ValueError) as exc:
        raise LossInputError(f"{NAME}: beta could not be read as numbers: {beta!r}") from exc
    if values.dim() not in (1, 2) or not bool(torch.isfinite(values).all()):
        raise LossInputError(
            f"{NAME}: an explicit beta must be finite with shape [m] or [B, m], got "
            f"{tuple(values.shape)}"
        )
    return values


def _beta_values(beta: BetaFn | Tensor, batch: LossBatch, scale: float) -> Tensor:
    s = batch.student.detach()
    t = batch.teacher
    assert t is not None
    if isinstance(beta, Tensor):
        values = beta.to(device=s.device, dtype=s.dtype)
        try:
            values = values.expand_as(s)
        except RuntimeError as exc:
            raise LossInputError(
                f"{NAME}: beta shape {tuple(beta.shape)} does not broadcast to the scores "
                f"{tuple(s.shape)}"
            ) from exc
    else:
        values = beta(s, t, batch.pos_mask, batch.valid_mask)
        if not isinstance(values, Tensor) or values.shape != s.shape:
            raise LossInputError(
                f"{NAME}: the beta function must return a tensor of shape {tuple(s.shape)}"
            )
        values = values.detach().to(s.dtype)
    return values * scale


def _ckl_parts(
    batch: LossBatch,
    *,
    gamma: float,
    beta: BetaFn | Tensor,
    beta_scale: float,
    alpha: float,
    student_temperature: float,
    teacher_temperature: float,
    contrastive_temperature: float,
    detach_weights: bool,
    multi_positive: str,
) -> dict[str, Tensor]:
    assert batch.teacher is not None
    valid, pos = batch.valid_mask, batch.pos_mask
    logq = masked_log_softmax(batch.student, valid, student_temperature)
    logp = masked_log_softmax(batch.teacher, valid, teacher_temperature)
    terms = kl_terms(logp, logq, valid)

    q = logq.exp()
    if detach_weights:
        q = q.detach()
    tiny = torch.finfo(q.dtype).tiny
    one = torch.ones_like(q)
    # Replace padding (q = 0) by 1 before pow so no 0^e can produce an inf/NaN gradient.
    q_neg = torch.where(valid, q.clamp_min(tiny), one)
    q_pos = torch.where(valid, (1.0 - q).clamp_min(tiny), one)
    exponent = (gamma - _beta_values(beta, batch, beta_scale)).clamp_min(0.0)
    weights = torch.where(pos, q_pos.pow(gamma), q_neg.pow(exponent))
    weights = torch.where(valid, weights, torch.zeros_like(weights))

    w = batch.instance_weight
    ckl = reduce_rows((weights * terms).sum(dim=-1), w)
    parts = {"ckl": ckl}
    if alpha > 0:
        logq_c = masked_log_softmax(batch.student, valid, contrastive_temperature)
        parts["infonce"] = reduce_rows(positive_nll(logq_c, pos, multi_positive), w)
        parts["total"] = ckl + alpha * parts["infonce"]
    else:
        parts["total"] = ckl
    return parts


def _check_params(
    gamma: float,
    beta_scale: float,
    alpha: float,
    student_temperature: float,
    teacher_temperature: float,
    contrastive_temperature: float,
    detach_weights: bool,
    multi_positive: str,
) -> None:
    check_number(NAME, "gamma", gamma, low=0.0)
    check_number(NAME, "beta_scale", beta_scale, low=0.0)
    check_number(NAME, "alpha", alpha, low=0.0)
    check_temperature(NAME, "student_temperature", student_temperature)
    check_temperature(NAME, "teacher_temperature", teacher_temperature)
    check_temperature(NAME, "contrastive_temperature", contrastive_temperature)
    check_bool(NAME, "detach_weights", detach_weights)
    check_choice(NAME, "multi_positive", multi_positive, MULTI_POSITIVE_MODES)


def ckl_loss_parts(
    student: Tensor,
    teacher: Tensor,
    pos_mask: Tensor,
    valid_mask: Tensor | None = None,
    *,
    gamma: float = 2.0,
    beta: BetaSpec = "zero",
    beta_scale: float = 1.0,
    alpha: float = 1.0,
    student_temperature: float = 1.0,
    teacher_temperature: float = 1.0,
    contrastive_temperature: float = 1.0,
    detach_weights: bool = True,
    multi_positive: str = "mean",
    instance_weight: Tensor | None = None,
) -> dict[str, Tensor]:
    """CKL components: ``{"ckl", "infonce" (when alpha > 0), "total"}``.

    ``total = ckl + alpha * infonce``; the InfoNCE term uses ``contrastive_temperature``.
    """
    _check_params(
        gamma,
        beta_scale,
        alpha,
        student_temperature,
        teacher_temperature,
        contrastive_temperature,
        detach_weights,
        multi_positive,
    )
    beta_r = resolve_beta(beta)
    batch = prepare_inputs(
        student,
        teacher,
        pos_mask,
        valid_mask,
        instance_weight=instance_weight,
        loss=NAME,
        require_positive=alpha > 0,
    )
    return _ckl_parts(
        batch,
        gamma=gamma,
        beta=beta_r,
        beta_scale=beta_scale,
        alpha=alpha,
        student_temperature=student_temperature,
        teacher_temperature=teacher_temperature,
        contrastive_temperature=contrastive_temperature,
        detach_weights=detach_weights,
        multi_positive=multi_positive,
    )


def ckl_loss(
    student: Tensor,
    teacher: Tensor,
    pos_mask: Tensor,
    valid_mask: Tensor | None = None,
    **params: object,
) -> Tensor:
    """CKL + alpha * InfoNCE (see :func:`ckl_loss_parts` for the parameters)."""
    return ckl_loss_parts(student, teacher, pos_mask, valid_mask, **params)["total"]  # type: ignore[arg-type]


class CKLLoss(DistillationLoss):
    """Contrastively weighted KL plus ``alpha`` InfoNCE.

    ``beta``: a name from ``BETA_FUNCTIONS`` (``zero``, ``student_rank``, ``teacher_rank``), a
    callable ``(student, teacher, pos_mask, valid_mask) -> [B, m]`` or explicit values;
    multiplied by ``beta_scale``. ``temperature`` sets the student and teacher temperatures
    unless overridden one by one. ``last_stats`` holds ``ckl``, ``infonce``, ``total``.
    """

    name = NAME
    needs_teacher = True
    needs_reference = False
    in_batch = False

    def __init__(
        self,
        gamma: float = 2.0,
        beta: BetaSpec = "zero",
        beta_scale: float = 1.0,
        alpha: float = 1.0,
        temperature: float = 1.0,
        student_temperature: float | None = None,
        teacher_temperature: float | None = None,
        contrastive_temperature: float = 1.0,
        detach_weights: bool = True,
        multi_positive: str = "mean",
        validate: bool = True,
    ) -> None:
        super().__init__(validate=validate)
        check_temperature(NAME, "temperature", temperature)
        student_temperature = temperature if student_temperature is None else student_temperature
        teacher_temperature = temperature if teacher_temperature is None else teacher_temperature
        _check_params(
            gamma,
            beta_scale,
            alpha,
            student_temperature,
            teacher_temperature,
            contrastive_temperature,
            detach_weights,
            multi_positive,
        )
        self.gamma = float(gamma)
        self.beta = resolve_beta(beta)
        self.beta_scale = float(beta_scale)
        self.alpha = float(alpha)
        self.student_temperature = float(student_temperature)
        self.teacher_temperature = float(teacher_temperature)
        self.contrastive_temperature = float(contrastive_temperature)
        self.detach_weights = detach_weights
        self.multi_positive = multi_positive

    def _requires_positive(self) -> bool:
        return self.alpha > 0

    def compute(self, batch: LossBatch, progress: float | None) -> Tensor:
        assert batch.teacher is not None
        self._check_collapse(batch.teacher, batch.valid_mask, self.teacher_temperature)
        parts = _ckl_parts(
            batch,
            gamma=self.gamma,
            beta=self.beta,
            beta_scale=self.beta_scale,
            alpha=self.alpha,
            student_temperature=self.student_temperature,
            teacher_temperature=self.teacher_temperature,
            contrastive_temperature=self.contrastive_temperature,
            detach_weights=self.detach_weights,
            multi_positive=self.multi_positive,
        )
        self.last_stats = {k: v.detach() for k, v in parts.items()}
        return parts["total"]

    def extra_repr(self) -> str:
        return (
            f"gamma={self.gamma:g}, alpha={self.alpha:g}, beta_scale={self.beta_scale:g}, "
            f"detach_weights={self.detach_weights}"
        )
