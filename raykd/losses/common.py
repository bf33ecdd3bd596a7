"""Shared pieces of every loss: input validation, masked softmax, row reduction, warnings.

All losses follow one shape contract: ``student[B, m]``, ``teacher[B, m]``, ``pos_mask[B, m]``
(bool), ``valid_mask[B, m]`` (bool, ``False`` = padding), optional ``reference[B, m]`` and
``instance_weight[B]``. :func:`prepare_inputs` checks that contract and returns a
:class:`LossBatch` whose tensors are in (at least) fp32, with teacher-side tensors detached and
padded entries zeroed, so that NaN or inf in padding can never reach a value or a gradient.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from raykd.errors import LossInputError

# A finite fill for padded logits: exp(NEG_FILL - anything reasonable) is exactly 0 in fp32, and
# NEG_FILL - NEG_FILL is 0, so neither 0 * log 0 nor -inf - -inf can produce NaN.
NEG_FILL = -1.0e30

# Mean max-probability of the teacher softmax above which the target counts as collapsed.
COLLAPSE_MAX_PROB = 0.999

MULTI_POSITIVE_MODES = ("mean", "logsumexp")


class TemperatureCollapseWarning(UserWarning):
    """The teacher distribution is (nearly) one-hot at the configured temperature."""


@dataclass(frozen=True)
class LossBatch:
    """Validated loss inputs: float tensors of at least fp32, bool masks, padding zeroed."""

    student: Tensor
    teacher: Tensor | None
    pos_mask: Tensor
    valid_mask: Tensor
    reference: Tensor | None = None
    instance_weight: Tensor | None = None
    original_mask: Tensor | None = None

    @property
    def rows(self) -> int:
        return self.student.shape[0]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half/bfloat16/fp32 inputs, fp64 for fp64 inputs."""
    return torch.promote_types(dtype, torch.float32)


def _first_index(mask: Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in mask.nonzero()[0].tolist())


def _check_scores(loss: str, name: str, x: object, shape: torch.Size | None) -> Tensor:
    if not isinstance(x, Tensor):
        raise LossInputError(f"{loss}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise LossInputError(f"{loss}: {name} must be a floating-point tensor, got {x.dtype}")
    if shape is None:
        if x.dim() != 2:
            raise LossInputError(
                f"{loss}: {name} must be a 2-D [B, m] tensor, got shape {tuple(x.shape)}"
            )
        if x.shape[0] == 0:
            raise LossInputError(f"{loss}: {name} has an empty batch (B=0)")
        if x.shape[1] == 0:
            raise LossInputError(f"{loss}: {name} has an empty candidate list (m=0)")
    elif x.shape != shape:
        raise LossInputError(
            f"{loss}: {name} shape {tuple(x.shape)} does not match student shape {tuple(shape)}"
        )
    return x


def _check_mask(loss: str, name: str, x: object, shape: torch.Size) -> Tensor:
    if not isinstance(x, Tensor):
        raise LossInputError(f"{loss}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.shape != shape:
        raise LossInputError(
            f"{loss}: {name} shape {tuple(x.shape)} does not match student shape {tuple(shape)}"
        )
    if x.dtype == torch.bool:
        return x
    if x.is_complex() or not bool(((x == 0) | (x == 1)).all()):
        raise LossInputError(f"{loss}: {name} must be boolean (or 0/1), got dtype {x.dtype}")
    return x != 0


def _check_finite(loss: str, name: str, x: Tensor, valid: Tensor) -> None:
    bad = ~torch.isfinite(x) & valid
    if not bool(bad.any()):
        return
    nan = torch.isnan(x) & valid
    kind, where = ("NaN", nan) if bool(nan.any()) else ("inf", bad)
    row, col = _first_index(where)
    raise LossInputError(f"{loss}: {name} scores contain {kind} at row {row} (column {col})")


def prepare_inputs(
    student: Tensor,
    teacher: Tensor | None = None,
    pos_mask: Tensor | None = None,
    valid_mask: Tensor | None = None,
    reference: Tensor | None = None,
    instance_weight: Tensor | None = None,
    original_mask: Tensor | None = None,
    *,
    loss: str,
    require_teacher: bool = True,
    require_positive: bool = False,
    require_reference: bool = False,
    check_finite: bool = True,
) -> LossBatch:
    """Check the shape contract and return fp32 (or fp64) tensors ready for the maths.

    Raises :class:`LossInputError` naming the argument (and row) at fault: a shape mismatch, an
    empty list, a row with no valid candidate or (when ``require_positive``) no positive, a
    positive on a padded entry, NaN/inf in the teacher or reference at a valid entry.
    """
    student = _check_scores(loss, "student", student, None)
    shape = student.shape
    dtype = compute_dtype(student.dtype)

    if valid_mask is None:
        valid = torch.ones(shape, dtype=torch.bool, device=student.device)
    else:
        valid = _check_mask(loss, "valid_mask", valid_mask, shape)
        empty = ~valid.any(dim=1)
        if bool(empty.any()):
            row = _first_index(empty)[0]
            raise LossInputError(
                f"{loss}: valid_mask row {row} has no valid candidate (empty list)"
            )

    if pos_mask is None:
        pos = torch.zeros(shape, dtype=torch.bool, device=student.device)
    else:
        pos = _check_mask(loss, "pos_mask", pos_mask, shape)
        padded_pos = pos & ~valid
        if bool(padded_pos.any()):
            row, col = _first_index(padded_pos)
            raise LossInputError(
                f"{loss}: pos_mask marks a padded candidate as positive at row {row} (column {col})"
            )
    if require_positive:
        missing = ~pos.any(dim=1)
        if bool(missing.any()):
            row = _first_index(missing)[0]
            raise LossInputError(f"{loss}: pos_mask row {row} has no positive")

    zero = torch.zeros((), dtype=dtype, device=student.device)
    student_f = torch.where(valid, student.to(dtype), zero)

    teacher_f = None
    if teacher is None:
        if require_teacher:
            raise LossInputError(f"{loss}: teacher scores are required")
    else:
        teacher = _check_scores(loss, "teacher", teacher, shape)
        if check_finite:
            _check_finite(loss, "teacher", teacher, valid)
        teacher_f = torch.where(valid, teacher.detach().to(dtype), zero)

    reference_f = None
    if reference is None:
        if require_reference:
            raise LossInputError(f"{loss}: reference scores (frozen student) are required")
    else:
        reference = _check_scores(loss, "reference", reference, shape)
        if check_finite:
            _check_finite(loss, "reference", reference, valid)
        reference_f = torch.where(valid, reference.detach().to(dtype), zero)

    weight_f = None
    if instance_weight is not None:
        if not isinstance(instance_weight, Tensor):
            raise LossInputError(
                f"{loss}: instance_weight must be a torch.Tensor, got {type(instance_weight).__name__}"
            )
        if instance_weight.shape != shape[:1]:
            raise LossInputError(
                f"{loss}: instance_weight shape {tuple(instance_weight.shape)} does not match "
                f"batch size ({shape[0]},)"
            )
        weight_f = instance_weight.detach().to(dtype)
        if not bool(torch.isfinite(weight_f).all()) or bool((weight_f < 0).any()):
            raise LossInputError(f"{loss}: instance_weight must be finite and >= 0")

    original = None
    if original_mask is not None:
        original = _check_mask(loss, "original_mask", original_mask, shape)

    return LossBatch(student_f, teacher_f, pos, valid, reference_f, weight_f, original)


# --------------------------------------------------------------------------- maths helpers


def lift_positives(teacher: Tensor, pos_mask: Tensor, valid: Tensor, margin: float) -> Tensor:
    """Teacher scores corrected by the labels: each labelled positive is raised to at least
    `margin` above the best negative of its row (scores it already beats by more are kept).
    Rows without a positive (queries nobody labelled) are unchanged."""
    negatives = valid & ~pos_mask
    best_negative = teacher.masked_fill(~negatives, NEG_FILL).max(dim=-1, keepdim=True).values
    floor = torch.where(negatives.any(dim=-1, keepdim=True), best_negative + margin,
                        torch.full_like(best_negative, NEG_FILL))
    return torch.where(pos_mask, torch.maximum(teacher, floor.expand_as(teacher)), teacher)


def masked_log_softmax(scores: Tensor, valid: Tensor, temperature: float = 1.0) -> Tensor:
    """log-softmax of ``scores / temperature`` over the valid entries of each row.

    Padded entries get a log-probability of about ``NEG_FILL`` (probability exactly 0).
    """
    return torch.log_softmax((scores / temperature).masked_fill(~valid, NEG_FILL), dim=-1)


def row_kl(teacher_logp: Tensor, student_logq: Tensor, valid: Tensor) -> Tensor:
    """Per-row KL(p || q) = sum_i p_i (log p_i - log q_i) over valid entries, shape [B]."""
    return kl_terms(teacher_logp, student_logq, valid).sum(dim=-1)


def kl_terms(teacher_logp: Tensor, student_logq: Tensor, valid: Tensor) -> Tensor:
    """Per-candidate KL terms p_i (log p_i - log q_i), zero on padding, shape [B, m]."""
    terms = teacher_logp.exp() * (teacher_logp - student_logq)
    return torch.where(valid, terms, torch.zeros_like(terms))


def positive_nll(student_logq: Tensor, pos: Tensor, multi_positive: str = "mean") -> Tensor:
    """Per-row contrastive loss of the positives, shape [B].

    ``mean``: mean over positives of ``-log q_j``; ``logsumexp``: ``-log sum_j q_j`` (the
    probability mass on the positive set). Identical with one positive per row.
    """
    if multi_positive == "mean":
        nll = torch.where(pos, -student_logq, torch.zeros_like(student_logq))
        return nll.sum(dim=-1) / pos.sum(dim=-1).clamp_min(1).to(nll.dtype)
    if multi_positive == "logsumexp":
        return -torch.logsumexp(student_logq.masked_fill(~pos, NEG_FILL), dim=-1)
    raise LossInputError(
        f"multi_positive must be one of {list(MULTI_POSITIVE_MODES)}, got {multi_positive!r}"
    )


def reduce_rows(per_row: Tensor, weight: Tensor | None = None) -> Tensor:
    """Mean over rows, or the weighted mean ``sum v_q L_q / sum v_q``.

    With all weights zero the result is an exact 0 that still carries a (zero) gradient.
    """
    if weight is None:
        return per_row.mean()
    total = weight.sum()
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return (weight * per_row).sum() / safe


def teacher_max_probability(teacher: Tensor, valid: Tensor, temperature: float) -> Tensor | None:
    """Mean over rows with >= 2 valid candidates of the teacher's max softmax probability."""
    rows = valid.sum(dim=-1) >= 2
    if not bool(rows.any()):
        return None
    with torch.no_grad():
        p = masked_log_softmax(teacher[rows], valid[rows], temperature).exp()
        return p.max(dim=-1).values.mean()


def warn_if_collapsed(
    loss: str, teacher: Tensor, valid: Tensor, temperature: float, stacklevel: int = 3
) -> bool:
    """Warn (:class:`TemperatureCollapseWarning`) when the teacher target is nearly one-hot.

    Returns whether it warned.
    """
    max_prob = teacher_max_probability(teacher, valid, temperature)
    if max_prob is None or float(max_prob) <= COLLAPSE_MAX_PROB:
        return False
    warnings.warn(
        f"{loss}: the teacher distribution collapses at temperature={temperature:g} "
        f"(mean max probability {float(max_prob):.6f} > {COLLAPSE_MAX_PROB}); the targets are "
        f"nearly one-hot and carry no dark knowledge. Use a larger teacher temperature "
        f"(e.g. {temperature * 4:g} or more).",
        TemperatureCollapseWarning,
        stacklevel=stacklevel,
    )
    return True


# ----------------------------------------------------------------------- parameter checks


def check_number(
    loss: str,
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real number within [low, high] (bounds open when asked), else LossInputError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise LossInputError(f"{loss}: {name} must be a finite number, got {value!r}")
    v = float(value)
    too_low = low is not None and (v <= low if low_open else v < low)
    too_high = high is not None and (v >= high if high_open else v > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise LossInputError(f"{loss}: {name} must be in {left}{lo}, {hi}{right}, got {value!r}")
    return v


def check_temperature(loss: str, name: str, value: object) -> float:
    """A temperature: a finite number > 0."""
    return check_number(loss, name, value, low=0.0, low_open=True)


def check_choice(loss: str, name: str, value: object, choices: Sequence[str]) -> str:
    """One of ``choices``, else LossInputError listing them."""
    if value not in choices:
        raise LossInputError(f"{loss}: {name} must be one of {list(choices)}, got {value!r}")
    return value  # type: ignore[return-value]


def check_bool(loss: str, name: str, value: object) -> bool:
    """A real bool (not a truthy string)."""
    if not isinstance(value, bool):
        raise LossInputError(f"{loss}: {name} must be a bool, got {value!r}")
    return value


def check_progress(loss: str, progress: float | None) -> float | None:
    """Training progress in [0, 1] (or None)."""
    if progress is None:
        return None
    return check_number(loss, "progress", progress, low=0.0, high=1.0)
