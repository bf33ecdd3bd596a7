"""A recipe chooses a loss by name with its parameters."""

from __future__ import annotations

import inspect

import pytest
import torch

from raykd.errors import LossInputError
from raykd.losses import LOSSES, DistillationLoss, build_loss, loss_parameters, register_loss
from raykd.losses.kl import KLLoss


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_name_builds_a_module_with_defaults(name):
    """Guards the registry: every registered name builds an nn.Module loss with no parameters."""
    loss = build_loss(name)
    assert isinstance(loss, DistillationLoss) and isinstance(loss, torch.nn.Module)
    assert loss.name in LOSSES


def test_known_names():
    """Guards the names recipes use for the five methods and the two building blocks."""
    assert {"margin_mse", "kl", "infonce", "ckl", "prod", "collective", "adam"} <= set(LOSSES)


def test_unknown_name_lists_known_ones():
    """Guards a typo in a recipe: the error names the bad loss and lists every known one."""
    with pytest.raises(LossInputError, match="unknown loss 'kld'") as err:
        build_loss("kld")
    for name in LOSSES:
        assert name in str(err.value)


def test_unknown_parameter_named_with_allowed_ones():
    """Guards a misspelt parameter: it is named, with the parameters the loss accepts."""
    with pytest.raises(LossInputError, match="unknown parameter 'gama'") as err:
        build_loss("ckl", gama=2.0)
    assert "gamma" in str(err.value) and "alpha" in str(err.value)


def test_parameters_reach_the_module():
    """Guards parameter plumbing: values given by name end up on the module."""
    loss = build_loss("prod", temperature=2.0, lambda_reg=0.0, in_batch=True)
    assert (loss.temperature, loss.lambda_reg, loss.in_batch) == (2.0, 0.0, True)
    assert loss_parameters("collective")["teacher_temperature"] == 0.25
    assert loss_parameters("adam")["selection"] == "top_rho"


def test_uniform_forward_signature():
    """Guards the trainer's single call site: every loss takes the same forward keywords."""
    expected = [
        "self",
        "student",
        "teacher",
        "pos_mask",
        "valid_mask",
        "reference",
        "instance_weight",
        "progress",
        "original_mask",
    ]
    for cls in set(LOSSES.values()):
        assert list(inspect.signature(cls.forward).parameters) == expected, cls.__name__


def test_register_loss():
    """Guards extension: a new loss class can be registered once, and duplicates are refused."""

    class SharpKL(KLLoss):
        name = "sharp_kl"

    try:
        register_loss("sharp_kl", SharpKL)
        assert isinstance(build_loss("sharp_kl", temperature=0.5), SharpKL)
        with pytest.raises(LossInputError, match="already registered"):
            register_loss("sharp_kl", SharpKL)
    finally:
        LOSSES.pop("sharp_kl", None)
    with pytest.raises(LossInputError, match="not a DistillationLoss"):
        register_loss("other", dict)  # type: ignore[arg-type]
