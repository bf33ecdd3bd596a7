"""Every numeric sanity value of METHODS.md (1h, 2h, 3h, 4h, 5h), to 1e-5."""

from __future__ import annotations

import pytest
import torch

from raykd.losses import (
    build_loss,
    ckl_loss_parts,
    collective_loss,
    kl_loss,
    kl_rows,
    margin_mse_loss,
    prod_loss,
    prod_loss_parts,
    self_paced_kl_loss,
    teacher_confidence,
)

TOL = 1e-5


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def first_positive(b: int, m: int) -> torch.Tensor:
    mask = torch.zeros(b, m, dtype=torch.bool)
    mask[:, 0] = True
    return mask


def close(x: torch.Tensor, value: float) -> bool:
    return abs(float(x) - value) <= TOL


# ---------------------------------------------------------------------------- 1h Margin-MSE


def test_margin_mse_1h_triples():
    """Guards the Margin-MSE reduction: mean over the batch of squared margin errors = 5.625."""
    s = t([[30, 27], [25, 26]])
    tt = t([[8, 2], [5, 4.5]])
    assert close(margin_mse_loss(s, tt, first_positive(2, 2)), 5.625)
    assert close(build_loss("margin_mse")(s, tt, first_positive(2, 2)), 5.625)


def test_margin_mse_1h_multi_negative():
    """Guards the multi-negative generalisation: mean over (query, negative) pairs = 6.0."""
    s = t([[30, 27, 29, 28]])
    tt = t([[8, 2, 4, 6]])
    assert close(margin_mse_loss(s, tt, first_positive(1, 4)), 6.0)


# ----------------------------------------------------------------------------------- 2h CKL

CKL_S = t([[2, 2.5, 0.5, -1]])
CKL_T = t([[4, 3, 1, 0]])


def test_ckl_2h_beta_zero():
    """Guards CKL weights (1-q)^gamma / q^gamma, per-term KL and the InfoNCE term."""
    parts = ckl_loss_parts(CKL_S, CKL_T, first_positive(1, 4), gamma=2.0, alpha=1.0)
    assert close(parts["ckl"], 0.149397)
    assert close(parts["infonce"], 1.072145)
    assert close(parts["total"], 0.149397 + 1.072145)
    assert close(kl_loss(CKL_S, CKL_T), 0.261254)


def test_ckl_2h_explicit_beta():
    """Guards the rank bias: beta=[0,1,0,0] lowers the exponent of the top negative."""
    loss = build_loss("ckl", gamma=2.0, beta=[0.0, 1.0, 0.0, 0.0], alpha=0.0)
    assert close(loss(CKL_S, CKL_T, first_positive(1, 4)), 0.099655)


# ---------------------------------------------------------------------------------- 3h PROD


def test_prod_3h_list_form():
    """Guards L_II: CE at T=1, T^2-scaled KD and Reg, weights 0.1 / 0.9 / 1.0."""
    s, tt, ref = t([[12, 10, 11, 7]]), t([[6, -2, 3, -5]]), t([[11, 10.5, 10, 8]])
    parts = prod_loss_parts(s, tt, first_positive(1, 4), reference=ref, temperature=4.0)
    assert close(parts["ce"], 0.412078)
    assert close(parts["kd"], 2.381973)
    assert close(parts["reg"], 0.344632)
    assert close(parts["total"], 2.529615)
    module = build_loss("prod")
    assert close(module(s, tt, first_positive(1, 4), reference=ref), 2.529615)
    assert close(module.last_stats["reg"], 0.344632)


def test_prod_3h_in_batch_form():
    """Guards L_I over the global in-batch matrix, positives at each query's own column."""
    s = t([[10, 8, 5, 6], [4, 5, 9, 7]])
    tt = t([[20, 14, 9, 12], [8, 10, 18, 15]])
    pos = torch.tensor([[True, False, False, False], [False, False, True, False]])
    parts = prod_loss_parts(s, tt, pos, lambda_reg=0.0)
    assert close(parts["ce"], 0.148755)
    assert close(parts["kd"], 1.795738)
    assert close(parts["total"], 1.631040)
    assert close(prod_loss(s, tt, pos, lambda_reg=0.0), 1.631040)
    module = build_loss("prod", in_batch=True, lambda_reg=0.0)
    assert module.in_batch and not module.needs_reference
    assert close(module(s, tt, pos), 1.631040)


# ---------------------------------------------------------------------------- 4h CollectiveKD


def test_collective_4h():
    """Guards the teacher-only temperature (0.25) and the row-max overwrite of the positive."""
    s = t([[-10, -14, -11, -15], [-13, -9, -12.5, -9.5]])
    tt = t([[-12, -15, -11.5, -16], [-14, -10, -13, -10.5]])
    pos = torch.tensor([[True, False, False, False], [False, True, False, False]])
    assert close(collective_loss(s, tt, pos), 0.168151)
    assert close(build_loss("collective")(s, tt, pos), 0.168151)


# ------------------------------------------------------------------------------------ 5h ADAM

ADAM_T = t([[9, -4, -6, 3, 1], [2, 1.5, -3, 0.5, 1]])
ADAM_S = t([[20, 15, 12, 18, 17], [16, 17, 11, 15, 15.5]])
ADAM_POS = first_positive(2, 5)
ADAM_ORIGINAL = torch.tensor([[True, True, True, False, False]] * 2)


def test_adam_5h_confidence_both_lists():
    """Guards the confidence definition: original list by default, full list as an option."""
    c_orig = teacher_confidence(ADAM_T, ADAM_POS, original_mask=ADAM_ORIGINAL)
    c_full = teacher_confidence(ADAM_T, ADAM_POS)
    assert torch.allclose(c_orig, t([0.999997, 0.619860]), atol=TOL)
    assert torch.allclose(c_full, t([0.997191, 0.453663]), atol=TOL)
    assert torch.allclose(kl_rows(ADAM_S, ADAM_T), t([0.161404, 0.210240]), atol=TOL)


@pytest.mark.parametrize(("theta", "expected"), [(0.5, 0.185822), (0.7, 0.161404)])
def test_adam_5h_threshold(theta, expected):
    """Guards self-paced selection: theta=0.5 keeps both queries, theta=0.7 only query 1."""
    pure = self_paced_kl_loss(
        ADAM_S, ADAM_T, ADAM_POS, original_mask=ADAM_ORIGINAL, mode="threshold", threshold=theta
    )
    assert close(pure, expected)
    module = build_loss("adam", selection="threshold", threshold=theta)
    assert close(module(ADAM_S, ADAM_T, ADAM_POS, original_mask=ADAM_ORIGINAL), expected)
    assert close(module.last_stats["kept_fraction"], 1.0 if theta == 0.5 else 0.5)
