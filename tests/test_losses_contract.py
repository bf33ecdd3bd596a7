"""The shared loss contract, checked for every registered loss.

Each case builds a loss by name and feeds it the same batch: 3 queries, 5 candidates, one row
with two positives, one row padded to 3 valid candidates.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from raykd.errors import LossInputError
from raykd.losses import LOSSES, TemperatureCollapseWarning, build_loss

# name -> parameters for the contract batch
CASES: dict[str, dict] = {
    "margin_mse": {},
    "kl": {"temperature": 2.0},
    "infonce": {},
    "ckl": {"gamma": 1.0, "beta": "student_rank"},
    "prod": {},
    "collective": {"teacher_temperature": 0.5},
    "adam": {"selection": "threshold", "threshold": 0.0},
    "self_paced_kl": {"selection": "top_rho", "rho": 1.0},
}
# losses with a teacher temperature, and the parameter that sets it
TEACHER_TEMPERATURE = {
    "kl": "teacher_temperature",
    "ckl": "teacher_temperature",
    "prod": "temperature",
    "collective": "teacher_temperature",
    "adam": "temperature",
    "self_paced_kl": "temperature",
}
NAMES = sorted(CASES)
TEACHER_NAMES = [n for n in NAMES if LOSSES[n].needs_teacher]


def test_every_registered_loss_is_covered():
    """Guards against a loss added to the registry without contract tests."""
    assert set(CASES) == set(LOSSES)


def make_batch(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(3, 5, generator=g) * 2
    teacher = torch.randn(3, 5, generator=g) * 2
    reference = torch.randn(3, 5, generator=g) * 2
    pos = torch.zeros(3, 5, dtype=torch.bool)
    pos[0, 0] = pos[1, 1] = pos[1, 3] = pos[2, 2] = True
    teacher[pos] += 3.0
    valid = torch.ones(3, 5, dtype=torch.bool)
    valid[2, 3:] = False
    return {
        "student": student.to(dtype),
        "teacher": teacher.to(dtype),
        "pos_mask": pos,
        "valid_mask": valid,
        "reference": reference.to(dtype),
        "original_mask": torch.tensor([[True, True, True, True, False]] * 3),
    }


def call(loss, batch, **extra):
    return loss(**{**batch, **extra}, progress=0.5)


@pytest.mark.parametrize("name", NAMES)
def test_declares_trainer_attributes(name):
    """Guards the trainer's dispatch: every module says what inputs it needs."""
    loss = build_loss(name, **CASES[name])
    for attr in ("needs_teacher", "needs_reference", "in_batch"):
        assert isinstance(getattr(loss, attr), bool), attr


@pytest.mark.parametrize("name", NAMES)
def test_optimizer_step_lowers_loss(name):
    """Guards the gradient's sign: one SGD step on the student scores must lower the loss."""
    loss = build_loss(name, **CASES[name])
    batch = make_batch()
    student = batch.pop("student").requires_grad_(True)
    opt = torch.optim.SGD([student], lr=0.05)
    before = call(loss, batch, student=student)
    opt.zero_grad()
    before.backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0
    opt.step()
    with torch.no_grad():
        after = call(loss, batch, student=student)
    assert after.item() < before.item() - 1e-6


@pytest.mark.parametrize("name", NAMES)
def test_padding_invariance(name):
    """Guards the padding mask: extra masked candidates (with NaN / inf / huge scores), at any
    position, change neither the loss nor the real candidates' gradients, and get no gradient."""
    loss = build_loss(name, **CASES[name])
    base = make_batch()
    s0 = base["student"].clone().requires_grad_(True)
    ref_value = call(loss, {**base, "student": s0})
    ref_value.backward()

    extra = 3
    perm = torch.tensor([6, 0, 5, 1, 2, 7, 3, 4])  # real columns land in scattered places
    padded = {}
    garbage = torch.tensor([float("nan"), float("inf"), 1e4]).expand(3, extra)
    for key in ("student", "teacher", "reference"):
        padded[key] = torch.cat([base[key], garbage.roll(len(padded), 1)], dim=1)[:, perm]
    for key, fill in (("pos_mask", False), ("valid_mask", False), ("original_mask", True)):
        x = torch.cat([base[key], torch.full((3, extra), fill)], dim=1)
        padded[key] = x[:, perm]
    s1 = padded["student"].clone().requires_grad_(True)
    value = call(loss, {**padded, "student": s1})
    value.backward()

    assert torch.allclose(value, ref_value, atol=1e-6, rtol=1e-6)
    inverse = torch.argsort(perm)
    grad_back = s1.grad[:, inverse]
    assert torch.allclose(grad_back[:, :5], s0.grad, atol=1e-6)
    assert torch.equal(grad_back[:, 5:], torch.zeros(3, extra))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", NAMES)
def test_half_precision_inputs_computed_in_fp32(name, dtype):
    """Guards mixed precision: fp16/bf16 scores give an fp32 loss equal to the fp32 computation
    on the same values, and a finite gradient in the input's dtype."""
    loss = build_loss(name, **CASES[name])
    half = make_batch(dtype)
    as_fp32 = {k: (v.float() if v.is_floating_point() else v) for k, v in half.items()}
    student = half.pop("student").requires_grad_(True)
    value = call(loss, half, student=student)
    assert value.dtype == torch.float32
    assert torch.allclose(value, call(loss, as_fp32), atol=1e-6, rtol=1e-6)
    value.backward()
    assert student.grad.dtype == dtype and torch.isfinite(student.grad.float()).all()


def test_margin_mse_large_margins_do_not_overflow_fp16():
    """Guards fp16 overflow: squared margins of ~1e5 exceed the fp16 range (65504)."""
    s = torch.tensor([[300.0, -20.0]], dtype=torch.float16)
    tt = torch.tensor([[-20.0, 300.0]], dtype=torch.float16)
    value = build_loss("margin_mse")(s, tt, torch.tensor([[True, False]]))
    assert value.dtype == torch.float32 and float(value) == 640.0**2


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("name", TEACHER_NAMES)
def test_non_finite_teacher_scores_rejected(name, bad):
    """Guards silent NaN training: a NaN or inf teacher score at a valid entry is an error that
    names the teacher and the row."""
    loss = build_loss(name, **CASES[name])
    batch = make_batch()
    batch["teacher"][1, 2] = float(bad)
    kind = "NaN" if bad == "nan" else "inf"
    with pytest.raises(LossInputError, match=rf"teacher scores contain {kind} at row 1"):
        call(loss, batch)


def test_non_finite_reference_rejected():
    """Guards PROD's regulariser: a NaN in the frozen student's scores is named as such."""
    batch = make_batch()
    batch["reference"][2, 0] = float("nan")
    with pytest.raises(LossInputError, match="reference scores contain NaN at row 2"):
        call(build_loss("prod"), batch)


def test_infonce_ignores_teacher():
    """Guards the teacher-free loss: InfoNCE neither needs nor reads teacher scores."""
    loss = build_loss("infonce")
    batch = make_batch()
    expected = call(loss, batch)
    batch["teacher"][:] = float("nan")
    assert not loss.needs_teacher
    assert torch.equal(call(loss, batch), expected)
    assert torch.equal(call(loss, batch, teacher=None), expected)


@pytest.mark.parametrize("name", sorted(TEACHER_TEMPERATURE))
def test_collapsing_temperature_warns_once(name):
    """Guards one-hot targets: a teacher temperature that collapses the teacher distribution
    warns (naming the temperature) once per loss instance, not every step."""
    loss = build_loss(name, **{**CASES[name], TEACHER_TEMPERATURE[name]: 0.001})
    batch = make_batch()
    # CollectiveKD's row-max overwrite would tie positives with the top negative: not one-hot
    batch["pos_mask"][1, 3] = False
    batch["teacher"][2, 2] = 4.0
    with pytest.warns(TemperatureCollapseWarning, match=r"temperature=0\.001") as record:
        call(loss, batch)
    assert "larger" in str(record[0].message)
    assert record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error", TemperatureCollapseWarning)
        call(loss, batch)


@pytest.mark.parametrize("name", NAMES)
def test_sane_temperature_does_not_warn(name):
    """Guards against a noisy warning: the contract batch at its temperature is not collapsed."""
    loss = build_loss(name, **CASES[name])
    with warnings.catch_warnings():
        warnings.simplefilter("error", TemperatureCollapseWarning)
        call(loss, make_batch())


@pytest.mark.parametrize("name", NAMES)
def test_empty_candidate_list_rejected(name):
    """Guards m=0 lists: an empty list is an error naming the candidate list."""
    loss = build_loss(name, **CASES[name])
    empty = torch.zeros(2, 0)
    mask = torch.zeros(2, 0, dtype=torch.bool)
    with pytest.raises(LossInputError, match="empty candidate list"):
        loss(empty, empty, mask, mask, reference=empty)


@pytest.mark.parametrize("name", NAMES)
def test_row_without_valid_candidate_rejected(name):
    """Guards all-padding rows (a NaN softmax): the error names valid_mask and the row."""
    loss = build_loss(name, **CASES[name])
    batch = make_batch()
    batch["valid_mask"][1] = False
    batch["pos_mask"][1] = False
    with pytest.raises(LossInputError, match="valid_mask row 1 has no valid candidate"):
        call(loss, batch)


def _inputs_read(name: str) -> list[str]:
    loss = build_loss(name, **CASES[name])
    keys = ["pos_mask", "valid_mask"]
    keys += ["teacher"] if loss.needs_teacher else []
    keys += ["reference"] if loss.needs_reference else []
    keys += ["original_mask"] if loss.needs_original_mask else []
    return keys


@pytest.mark.parametrize(
    ("name", "key"), [(name, key) for name in NAMES for key in _inputs_read(name)]
)
def test_shape_mismatch_names_the_argument(name, key):
    """Guards misaligned inputs: a [B, m'] tensor next to [B, m] scores is an error naming it."""
    loss = build_loss(name, **CASES[name])
    batch = make_batch()
    batch[key] = batch[key][:, :4]
    with pytest.raises(LossInputError, match=rf"{key} shape \(3, 4\) does not match"):
        call(loss, batch)


@pytest.mark.parametrize("name", NAMES)
def test_instance_weight_shape_checked(name):
    """Guards per-query weights: a weight vector of the wrong length is named."""
    loss = build_loss(name, **CASES[name])
    with pytest.raises(LossInputError, match="instance_weight shape"):
        call(loss, make_batch(), instance_weight=torch.ones(2))


@pytest.mark.parametrize("name", NAMES)
def test_progress_outside_unit_interval_rejected(name):
    """Guards the schedule input: training progress must lie in [0, 1]."""
    loss = build_loss(name, **CASES[name])
    with pytest.raises(LossInputError, match="progress"):
        loss(**make_batch(), progress=1.5)


BAD_PARAMS = [
    ("kl", {"temperature": 0.0}, "temperature"),
    ("kl", {"teacher_temperature": -1.0}, "teacher_temperature"),
    ("kl", {"t2_scaling": "yes"}, "t2_scaling"),
    ("infonce", {"temperature": -0.1}, "temperature"),
    ("infonce", {"multi_positive": "max"}, "multi_positive"),
    ("ckl", {"gamma": -1.0}, "gamma"),
    ("ckl", {"beta": "nope"}, "beta"),
    ("ckl", {"beta_scale": -1.0}, "beta_scale"),
    ("ckl", {"alpha": float("nan")}, "alpha"),
    ("ckl", {"student_temperature": 0}, "student_temperature"),
    ("prod", {"temperature": 0.0}, "temperature"),
    ("prod", {"lambda_kd": -0.5}, "lambda_kd"),
    ("prod", {"lambda_ce": 0.0, "lambda_kd": 0.0, "lambda_reg": 0.0}, "lambda_ce"),
    ("collective", {"teacher_temperature": 0.0}, "teacher_temperature"),
    ("adam", {"rho": 0.0}, "rho"),
    ("adam", {"rho": 1.5}, "rho"),
    ("adam", {"selection": "threshold", "threshold": 1.2}, "threshold"),
    ("adam", {"selection": "best"}, "selection"),
    ("adam", {"schedule": "cosine"}, "schedule"),
    ("adam", {"schedule": "linear"}, "schedule_start"),
    ("adam", {"schedule": "linear", "schedule_start": 0.0, "schedule_end": 1.0}, "schedule_start"),
    ("adam", {"confidence_over": "dark"}, "confidence_over"),
    ("adam", {"temperature": -2.0}, "temperature"),
    ("margin_mse", {"validate": 1}, "validate"),
]


@pytest.mark.parametrize(("name", "params", "param"), BAD_PARAMS)
def test_bad_parameters_rejected_eagerly(name, params, param):
    """Guards recipes with bad values: construction fails with a message naming the parameter."""
    with pytest.raises(LossInputError, match=rf"{name}: {param}"):
        build_loss(name, **params)


@pytest.mark.parametrize("name", NAMES)
def test_any_list_length(name):
    """Guards fixed-width assumptions: lists of 1+1 and 1+63 candidates both work."""
    loss = build_loss(name, **CASES[name])
    for m in (2, 64):
        g = torch.Generator().manual_seed(m)
        s = torch.randn(4, m, generator=g, requires_grad=True)
        tt = torch.randn(4, m, generator=g)
        pos = torch.zeros(4, m, dtype=torch.bool)
        pos[:, 0] = True
        value = loss(s, tt, pos, reference=torch.randn(4, m, generator=g), progress=0.0)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(s.grad).all()
