"""Loss registry: a recipe names a loss and its parameters; no string if-chains."""

from __future__ import annotations

import inspect
from typing import Any

from raykd.errors import LossInputError
from raykd.losses.base import DistillationLoss
from raykd.losses.ckl import CKLLoss
from raykd.losses.collective import CollectiveKDLoss
from raykd.losses.infonce import InfoNCELoss
from raykd.losses.kl import KLLoss
from raykd.losses.margin_mse import MarginMSELoss
from raykd.losses.prod import PRODLoss
from raykd.losses.self_paced import SelfPacedKLLoss

LOSSES: dict[str, type[DistillationLoss]] = {
    "margin_mse": MarginMSELoss,
    "kl": KLLoss,
    "infonce": InfoNCELoss,
    "ckl": CKLLoss,
    "prod": PRODLoss,
    "collective": CollectiveKDLoss,
    "adam": SelfPacedKLLoss,
    "self_paced_kl": SelfPacedKLLoss,
}


def register_loss(name: str, cls: type[DistillationLoss]) -> type[DistillationLoss]:
    """Add a loss class under ``name`` (an existing name is an error)."""
    if name in LOSSES:
        raise LossInputError(f"loss {name!r} is already registered ({LOSSES[name].__name__})")
    if not (isinstance(cls, type) and issubclass(cls, DistillationLoss)):
        raise LossInputError(f"loss {name!r}: {cls!r} is not a DistillationLoss subclass")
    LOSSES[name] = cls
    return cls


def _loss_class(name: str) -> type[DistillationLoss]:
    if name not in LOSSES:
        raise LossInputError(f"unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]


def loss_parameters(name: str) -> dict[str, Any]:
    """The parameters loss ``name`` accepts, with their defaults."""
    sig = inspect.signature(_loss_class(name).__init__)
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def build_loss(name: str, **params: Any) -> DistillationLoss:
    """Build the loss module ``name`` with ``params``.

    An unknown name lists the known ones; an unknown parameter is named along with the
    allowed ones; bad values are rejected by the module's own checks.
    """
    cls = _loss_class(name)
    allowed = loss_parameters(name)
    for key in params:
        if key not in allowed:
            raise LossInputError(
                f"loss {name!r}: unknown parameter {key!r}; allowed: {', '.join(allowed)}"
            )
    return cls(**params)
