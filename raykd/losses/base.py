"""The thin ``nn.Module`` base shared by every loss: one keyword signature for the trainer."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from raykd.losses.common import (
    LossBatch,
    check_bool,
    check_progress,
    prepare_inputs,
    warn_if_collapsed,
)


class DistillationLoss(nn.Module):
    """Base of the loss modules.

    Class attributes tell the trainer what to supply (an instance may override them when a
    parameter decides, e.g. PROD needs a reference only when ``lambda_reg > 0``):

    * ``needs_teacher``: teacher scores are used;
    * ``needs_reference``: frozen-student scores (``reference``) are used;
    * ``in_batch``: the score matrices must be global in-batch ones (see
      :func:`raykd.losses.in_batch_scores`) rather than per-query lists;
    * ``needs_original_mask``: ``original_mask`` (non-dark candidates) is used when given.

    ``last_stats`` holds detached scalars of the last call (components, kept fraction, ...)
    for logging; reading them with ``.item()`` is the caller's choice (it syncs the device).
    """

    name: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = True
    needs_reference: bool = False
    in_batch: bool = False
    needs_original_mask: ClassVar[bool] = False
    requires_positive: ClassVar[bool] = False

    def __init__(self, validate: bool = True) -> None:
        super().__init__()
        self.validate = check_bool(self.name, "validate", validate)
        self.last_stats: dict[str, Tensor] = {}
        self._collapse_warned = False

    def forward(
        self,
        student: Tensor,
        teacher: Tensor | None,
        pos_mask: Tensor,
        valid_mask: Tensor | None = None,
        reference: Tensor | None = None,
        instance_weight: Tensor | None = None,
        progress: float | None = None,
        original_mask: Tensor | None = None,
    ) -> Tensor:
        """Loss of a batch of candidate lists (scalar, fp32 for half-precision inputs)."""
        progress = check_progress(self.name, progress)
        batch = prepare_inputs(
            student,
            teacher if self.needs_teacher else None,
            pos_mask,
            valid_mask,
            reference if self.needs_reference else None,
            instance_weight,
            original_mask if self.needs_original_mask else None,
            loss=self.name,
            require_teacher=self.needs_teacher,
            require_positive=self._requires_positive(),
            require_reference=self.needs_reference,
            check_finite=self.validate,
        )
        return self.compute(batch, progress)

    def _requires_positive(self) -> bool:
        return self.requires_positive

    def compute(self, batch: LossBatch, progress: float | None) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def _check_collapse(self, teacher: Tensor, valid: Tensor, temperature: float) -> None:
        """Warn once per instance when the teacher target collapses at ``temperature``.

        ``stacklevel`` points the warning at the code that called the module.
        """
        if self.validate and not self._collapse_warned:
            self._collapse_warned = warn_if_collapsed(
                self.name, teacher, valid, temperature, stacklevel=7
            )
