"""Loss-specific behaviour: multi-positive rows, weights, temperatures, options of each loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from raykd.errors import LossInputError
from raykd.losses import (
    BETA_FUNCTIONS,
    build_loss,
    ckl_loss,
    ckl_loss_parts,
    collective_loss,
    in_batch_layout,
    in_batch_scores,
    infonce_loss,
    kl_loss,
    margin_mse_loss,
    overwrite_positive_with_row_max,
    prod_loss,
    prod_loss_parts,
    select_instances,
    teacher_confidence,
)


def rand(*shape, seed=0, scale=2.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def mask(rows):
    return torch.tensor(rows, dtype=torch.bool)


# ------------------------------------------------------------------------------ Margin-MSE


def test_margin_mse_multi_positive_matches_brute_force():
    """Guards multi-positive rows: the mean runs over every (query, positive, valid negative)."""
    s, t = rand(3, 6, seed=1), rand(3, 6, seed=2)
    pos = mask([[1, 0, 1, 0, 0, 0], [0, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]])
    valid = mask([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0]])
    errors = [
        ((s[b, i] - s[b, j]) - (t[b, i] - t[b, j])) ** 2
        for b in range(3)
        for i in range(6)
        for j in range(6)
        if pos[b, i] and valid[b, j] and not pos[b, j]
    ]
    expected = torch.stack(errors).mean()
    assert torch.allclose(margin_mse_loss(s, t, pos, valid), expected, atol=1e-5)


def test_margin_mse_is_shift_invariant():
    """Guards the method's premise: adding a per-query constant to either side changes nothing."""
    s, t = rand(2, 4, seed=3), rand(2, 4, seed=4)
    pos = mask([[1, 0, 0, 0], [0, 0, 1, 0]])
    base = margin_mse_loss(s, t, pos)
    shifted = margin_mse_loss(s + torch.tensor([[100.0], [-7.0]]), t - 42.0, pos)
    assert torch.allclose(base, shifted, atol=1e-4)


def test_margin_mse_instance_weights_and_zero_weights():
    """Guards the weighted pair mean, and all-zero weights giving 0 (with a finite gradient)."""
    s = torch.tensor([[30.0, 27.0], [25.0, 26.0]], requires_grad=True)
    t = torch.tensor([[8.0, 2.0], [5.0, 4.5]])
    pos = mask([[1, 0], [1, 0]])
    weighted = margin_mse_loss(s, t, pos, instance_weight=torch.tensor([1.0, 3.0]))
    assert math.isclose(weighted.item(), (9 + 3 * 2.25) / 4, abs_tol=1e-6)
    zero = margin_mse_loss(s, t, pos, instance_weight=torch.zeros(2))
    zero.backward()
    assert zero.item() == 0.0 and torch.equal(s.grad, torch.zeros_like(s))


def test_margin_mse_needs_a_pair():
    """Guards a degenerate batch: no (positive, negative) pair is an error, not a NaN."""
    with pytest.raises(LossInputError, match="no \\(positive, negative\\) pair"):
        margin_mse_loss(rand(2, 2), rand(2, 2), mask([[1, 1], [1, 1]]))
    with pytest.raises(LossInputError, match="pos_mask row 1 has no positive"):
        margin_mse_loss(rand(2, 2), rand(2, 2), mask([[1, 0], [0, 0]]))


# -------------------------------------------------------------------------------------- KL


@pytest.mark.parametrize(("tau_s", "tau_t"), [(1.0, 1.0), (2.0, 0.5)])
def test_kl_matches_torch_batchmean(tau_s, tau_t):
    """Guards the F.kl_div convention: KL(teacher || student), sum over candidates / rows."""
    s, t = rand(4, 7, seed=5), rand(4, 7, seed=6)
    expected = F.kl_div(
        F.log_softmax(s / tau_s, -1), F.softmax(t / tau_t, -1), reduction="batchmean"
    )
    got = kl_loss(s, t, student_temperature=tau_s, teacher_temperature=tau_t)
    assert torch.allclose(got, expected, atol=1e-6)
    scaled = kl_loss(s, t, student_temperature=tau_s, teacher_temperature=tau_t, t2_scaling=True)
    assert torch.allclose(scaled, expected * tau_s**2, atol=1e-6)


def test_kl_instance_weights_weighted_mean_and_all_zero():
    """Guards ADAM's reduction: sum v KL / sum v; all-zero weights give 0, no NaN gradient."""
    s = rand(3, 5, seed=7).requires_grad_(True)
    t = rand(3, 5, seed=8)
    rows = F.kl_div(F.log_softmax(s, -1), F.softmax(t, -1), reduction="none").sum(-1)
    v = torch.tensor([1.0, 0.0, 2.0])
    got = kl_loss(s, t, instance_weight=v)
    assert torch.allclose(got, (v * rows).sum() / 3.0, atol=1e-6)
    zero = kl_loss(s, t, instance_weight=torch.zeros(3))
    zero.backward()
    assert zero.item() == 0.0 and torch.equal(s.grad, torch.zeros_like(s))
    with pytest.raises(LossInputError, match="instance_weight must be finite and >= 0"):
        kl_loss(s, t, instance_weight=torch.tensor([1.0, -1.0, 1.0]))


def test_kl_module_temperature_overrides():
    """Guards the temperature parameters: `temperature` sets both sides unless overridden."""
    loss = build_loss("kl", temperature=3.0, teacher_temperature=0.5)
    assert (loss.student_temperature, loss.teacher_temperature) == (3.0, 0.5)


def test_kl_exclude_positives_is_kl_over_the_negatives_by_hand():
    """exclude_positives: on a labelled row the KL of the teacher's and the student's softmax
    renormalised over the negatives (by hand), so a positive's score gets no gradient from it;
    a row without a positive keeps its whole list; combining it with positive_margin is
    refused, naming the field."""
    student = torch.tensor([[0.2, 0.9, -0.3, 0.4], [0.5, 0.1, 0.0, -0.2]], requires_grad=True)
    teacher = torch.tensor([[1.0, 3.0, 2.0, -1.0], [0.0, 0.5, 1.5, 1.0]])
    pos = mask([[False, True, False, False], [False] * 4])
    loss = build_loss("kl", exclude_positives=True)(student, teacher, pos)
    neg = [0, 2, 3]
    p = torch.softmax(teacher[0, neg], dim=-1)
    q = torch.log_softmax(student[0, neg], dim=-1)
    row0 = (p * (p.log() - q)).sum()
    row1 = F.kl_div(torch.log_softmax(student[1], -1), torch.log_softmax(teacher[1], -1),
                    reduction="sum", log_target=True)
    assert torch.allclose(loss, (row0 + row1) / 2)
    assert not torch.allclose(loss, build_loss("kl")(student, teacher, pos))
    loss.backward()
    assert student.grad[0, 1] == 0 and student.grad[0, 0] != 0
    with pytest.raises(ValueError, match="positive_margin"):
        build_loss("kl", exclude_positives=True, positive_margin=1.0)


def test_kl_unlabelled_only_is_the_kl_of_the_unlabelled_rows_plus_the_labels_by_hand():
    """unlabelled_only: the KL averaged over the rows without a labelled positive only, plus
    label_weight x InfoNCE over the labelled rows (by hand), so the teacher gives a labelled
    row no gradient beyond its label; combinations that would change the labelled rows, or
    leave them without a loss, are refused by name."""
    student = torch.tensor([[0.2, 0.9, -0.3, 0.4], [0.5, 0.1, 0.0, -0.2],
                            [0.3, -0.1, 0.8, 0.0]], requires_grad=True)
    teacher = torch.tensor([[1.0, 3.0, 2.0, -1.0], [0.0, 0.5, 1.5, 1.0], [2.0, 0.0, 1.0, 0.5]])
    pos = mask([[False, True, False, False], [False] * 4, [False] * 4])
    loss = build_loss("kl", unlabelled_only=True, label_weight=0.5)(student, teacher, pos)

    def kl(row):
        return F.kl_div(torch.log_softmax(student[row], -1), torch.log_softmax(teacher[row], -1),
                        reduction="sum", log_target=True)
    nll = -torch.log_softmax(student[0], -1)[1]
    assert torch.allclose(loss, (kl(1) + kl(2)) / 2 + 0.5 * nll)
    same = build_loss("kl", unlabelled_only=True, label_weight=0.5)
    labelled_changed, unlabelled_changed = teacher.clone(), teacher.clone()
    labelled_changed[0] = torch.tensor([5.0, -5.0, 0.0, 1.0])
    unlabelled_changed[2] = torch.tensor([-2.0, 0.0, 1.0, 0.5])
    assert torch.allclose(loss, same(student, labelled_changed, pos))
    assert not torch.allclose(loss, same(student, unlabelled_changed, pos))
    loss.backward()
    assert torch.allclose(student.grad[0], 0.5 * (torch.softmax(student[0], -1).detach()
                                                  - F.one_hot(torch.tensor(1), 4)))
    with pytest.raises(ValueError, match="exclude_positives and positive_margin"):
        build_loss("kl", unlabelled_only=True, label_weight=1.0, exclude_positives=True)
    with pytest.raises(ValueError, match="label_weight > 0"):
        build_loss("kl", unlabelled_only=True)


# --------------------------------------------------------------------------------- InfoNCE


def test_infonce_single_positive_is_cross_entropy():
    """Guards the contrastive term: -log softmax(s / tau) at the positive, mean over queries."""
    s = rand(4, 6, seed=9)
    target = torch.tensor([0, 3, 5, 1])
    pos = F.one_hot(target, 6).bool()
    expected = F.cross_entropy(s / 0.5, target)
    assert torch.allclose(infonce_loss(s, pos, temperature=0.5), expected, atol=1e-6)


def test_infonce_multi_positive_modes():
    """Guards the documented multi-positive choices: mean of -log q_j vs -log sum q_j."""
    s = torch.tensor([[1.0, 2.0, 0.0, -1.0]])
    pos = mask([[1, 1, 0, 0]])
    logq = F.log_softmax(s, -1)[0]
    mean = infonce_loss(s, pos, multi_positive="mean")
    lse = infonce_loss(s, pos, multi_positive="logsumexp")
    assert math.isclose(float(mean), float(-(logq[0] + logq[1]) / 2), abs_tol=1e-6)
    assert math.isclose(float(lse), float(-torch.log(logq[:2].exp().sum())), abs_tol=1e-6)


def test_in_batch_layout_and_scores_single_process():
    """Guards the in-batch layout: every passage is a candidate for every query and each
    query's positives sit at its own columns (b * n + j)."""
    q = rand(2, 3, seed=10)
    p = rand(2, 2, 3, seed=11)
    pos = mask([[1, 0], [1, 0]])
    valid = mask([[1, 1], [1, 0]])
    scores, gpos, gvalid = in_batch_scores(q, p, pos, valid)
    assert torch.allclose(scores, q @ p.reshape(4, 3).T)
    assert gpos.tolist() == [[True, False, False, False], [False, False, True, False]]
    assert gvalid.tolist() == [[True, True, True, False]] * 2
    local_pos, local_valid = in_batch_layout(pos, valid)
    assert torch.equal(local_pos, gpos) and torch.equal(local_valid, gvalid)
    expected = F.cross_entropy(scores[:, :3], torch.tensor([0, 2]))
    assert torch.allclose(infonce_loss(scores, gpos, gvalid), expected, atol=1e-6)
    with pytest.raises(LossInputError, match="shapes disagree"):
        in_batch_scores(q, p, mask([[1, 0, 0], [1, 0, 0]]))


def test_prod_in_batch_form_from_embeddings():
    """Guards PROD L_I end to end: embeddings -> global matrix -> CE + T^2 KD."""
    qs, ps = rand(3, 4, seed=12), rand(3, 2, 4, seed=13)
    qt, pt = rand(3, 4, seed=14), rand(3, 2, 4, seed=15)
    pos = mask([[1, 0]] * 3)
    s, gpos, gvalid = in_batch_scores(qs, ps, pos)
    t, _, _ = in_batch_scores(qt, pt, pos)
    loss = build_loss("prod", in_batch=True, lambda_reg=0.0)
    value = loss(s, t, gpos, gvalid)
    target = torch.tensor([0, 2, 4])
    ce = F.cross_entropy(s, target)
    kd = 16 * F.kl_div(F.log_softmax(s / 4, -1), F.softmax(t / 4, -1), reduction="batchmean")
    assert torch.allclose(value, 0.1 * ce + 0.9 * kd, atol=1e-5)


# ------------------------------------------------------------------------------------- CKL

CKL_S = torch.tensor([[2.0, 2.5, 0.5, -1.0]])
CKL_T = torch.tensor([[4.0, 3.0, 1.0, 0.0]])
CKL_POS = mask([[1, 0, 0, 0]])


def test_ckl_gamma_zero_is_plain_kl():
    """Guards the weighting: gamma=0 gives every term weight 1, i.e. plain KL."""
    got = ckl_loss(CKL_S, CKL_T, CKL_POS, gamma=0.0, alpha=0.0)
    assert torch.allclose(got, kl_loss(CKL_S, CKL_T), atol=1e-6)


def test_ckl_exponent_clamped_at_zero():
    """Guards beta > gamma: the exponent is clamped to 0 (weight 1), never negative."""
    q = F.softmax(CKL_S, -1)[0]
    p = F.softmax(CKL_T, -1)[0]
    terms = p * (p.log() - q.log())
    weights = torch.stack([(1 - q[0]) ** 2, torch.tensor(1.0), q[2] ** 2, q[3] ** 2])
    got = ckl_loss(CKL_S, CKL_T, CKL_POS, gamma=2.0, beta=[0.0, 5.0, 0.0, 0.0], alpha=0.0)
    assert torch.allclose(got, (weights * terms).sum(), atol=1e-6)


def test_ckl_detach_weights_flag():
    """Guards the ablation flag: same value, but gradients flow through the weights only when
    detach_weights=False."""
    grads = {}
    for detach in (True, False):
        s = CKL_S.clone().requires_grad_(True)
        value = ckl_loss(s, CKL_T, CKL_POS, alpha=0.0, detach_weights=detach)
        value.backward()
        grads[detach] = (value.detach(), s.grad)
    assert torch.allclose(grads[True][0], grads[False][0])
    assert not torch.allclose(grads[True][1], grads[False][1], atol=1e-4)
    assert torch.isfinite(grads[False][1]).all()
    # With weights as constants the gradient is sum_i w_i * d KL_i / d s.
    s = CKL_S.clone().requires_grad_(True)
    q = F.softmax(s, -1)
    p = F.softmax(CKL_T, -1)
    qd = q.detach()
    w = torch.cat([(1 - qd[:, :1]) ** 2, qd[:, 1:] ** 2], dim=1)
    (w * p * (p.log() - q.log())).sum().backward()
    assert torch.allclose(grads[True][1], s.grad, atol=1e-6)


def test_ckl_rank_beta_functions():
    """Guards the rank-based betas: student_rank favours the student's top negatives,
    teacher_rank the teacher's lowest; positives get no bias."""
    pos, valid = CKL_POS, torch.ones_like(CKL_POS)
    student_beta = BETA_FUNCTIONS["student_rank"](CKL_S, CKL_T, pos, valid)
    teacher_beta = BETA_FUNCTIONS["teacher_rank"](CKL_S, CKL_T, pos, valid)
    assert torch.allclose(student_beta[0, 1:], torch.tensor([1.0, 1 / 2, 1 / 3]))
    assert torch.allclose(teacher_beta[0, 1:], torch.tensor([1 / 3, 1 / 2, 1.0]))
    explicit = ckl_loss(CKL_S, CKL_T, CKL_POS, beta=[0.0, 0.5, 0.25, 1 / 6], alpha=0.0)
    named = ckl_loss(CKL_S, CKL_T, CKL_POS, beta="student_rank", beta_scale=0.5, alpha=0.0)
    assert torch.allclose(explicit, named, atol=1e-6)


def test_ckl_callable_and_bad_beta():
    """Guards pluggable beta: a callable is used; a wrong-shaped result or tensor is named."""
    seen = {}

    def beta(student, teacher, pos, valid):
        seen["shape"] = tuple(student.shape)
        return torch.zeros_like(student)

    value = ckl_loss(CKL_S, CKL_T, CKL_POS, beta=beta, alpha=0.0)
    assert seen["shape"] == (1, 4)
    assert torch.allclose(value, ckl_loss(CKL_S, CKL_T, CKL_POS, alpha=0.0))
    with pytest.raises(LossInputError, match="beta function must return"):
        ckl_loss(CKL_S, CKL_T, CKL_POS, beta=lambda *a: torch.zeros(3))
    with pytest.raises(LossInputError, match="beta shape"):
        ckl_loss(CKL_S, CKL_T, CKL_POS, beta=[0.0, 1.0, 0.0])


def test_ckl_rows_without_positive_need_alpha_zero():
    """Guards the InfoNCE term: a row without positive is an error only when alpha > 0."""
    no_pos = torch.zeros_like(CKL_POS)
    assert torch.isfinite(ckl_loss(CKL_S, CKL_T, no_pos, alpha=0.0))
    with pytest.raises(LossInputError, match="pos_mask row 0 has no positive"):
        ckl_loss(CKL_S, CKL_T, no_pos, alpha=1.0)


def test_ckl_module_logs_components():
    """Guards logging: the module exposes its CKL and InfoNCE parts after a call."""
    loss = build_loss("ckl", gamma=2.0, alpha=0.5)
    total = loss(CKL_S, CKL_T, CKL_POS)
    parts = ckl_loss_parts(CKL_S, CKL_T, CKL_POS, gamma=2.0, alpha=0.5)
    assert set(loss.last_stats) == {"ckl", "infonce", "total"}
    assert torch.allclose(total, parts["ckl"] + 0.5 * parts["infonce"])


# ------------------------------------------------------------------------------------ PROD


def test_prod_reference_required_when_regularising():
    """Guards a silent no-op regulariser: lambda_reg > 0 without reference is an error."""
    s, t = rand(2, 4, seed=16), rand(2, 4, seed=17)
    pos = mask([[1, 0, 0, 0]] * 2)
    with pytest.raises(LossInputError, match="reference"):
        prod_loss(s, t, pos)
    with pytest.raises(LossInputError, match="reference"):
        build_loss("prod")(s, t, pos)
    assert build_loss("prod").needs_reference
    assert not build_loss("prod", lambda_reg=0.0).needs_reference
    assert set(prod_loss_parts(s, t, pos, lambda_reg=0.0)) == {"ce", "kd", "total"}


def test_prod_temperature_scaling():
    """Guards the T^2 factor on KD and Reg (and the CE staying at temperature 1)."""
    s, t, r = rand(3, 5, seed=18), rand(3, 5, seed=19), rand(3, 5, seed=20)
    pos = mask([[1, 0, 0, 0, 0]] * 3)
    parts = prod_loss_parts(s, t, pos, reference=r, temperature=3.0)
    kl = lambda target: kl_loss(s, target, student_temperature=3.0, teacher_temperature=3.0)  # noqa: E731
    assert torch.allclose(parts["kd"], 9 * kl(t), atol=1e-5)
    assert torch.allclose(parts["reg"], 9 * kl(r), atol=1e-5)
    assert torch.allclose(parts["ce"], F.cross_entropy(s, torch.zeros(3, dtype=torch.long)))


def test_prod_reference_is_not_differentiated():
    """Guards the frozen copy: no gradient reaches the reference (or teacher) scores."""
    s = rand(2, 4, seed=21).requires_grad_(True)
    t = rand(2, 4, seed=22).requires_grad_(True)
    r = rand(2, 4, seed=23).requires_grad_(True)
    prod_loss(s, t, mask([[1, 0, 0, 0]] * 2), reference=r).backward()
    assert s.grad is not None and t.grad is None and r.grad is None


# ------------------------------------------------------------------------------ Collective


def test_row_max_overwrite_only_touches_positives():
    """Guards the collective target: positives (several per row too) become the row max of the
    valid scores; negatives and padding stay as they were."""
    t = torch.tensor([[1.0, 5.0, 2.0, 9.0], [3.0, -1.0, 0.0, 2.0]])
    pos = mask([[1, 0, 1, 0], [1, 0, 0, 0]])
    valid = mask([[1, 1, 1, 0], [1, 1, 1, 1]])
    out = overwrite_positive_with_row_max(t, pos, valid)
    assert out.tolist() == [[5.0, 5.0, 5.0, 9.0], [3.0, -1.0, 0.0, 2.0]]


def test_collective_tempers_teacher_only():
    """Guards the one-sided temperature: without the overwrite it is KL with tau on the
    teacher and the student's raw scores, not a symmetric temperature."""
    s, t = rand(3, 4, seed=24), rand(3, 4, seed=25)
    pos = mask([[1, 0, 0, 0]] * 3)
    got = collective_loss(s, t, pos, overwrite_positive=False)
    assert torch.allclose(got, kl_loss(s, t, teacher_temperature=0.25), atol=1e-6)
    assert not torch.allclose(
        got, kl_loss(s, t, student_temperature=0.25, teacher_temperature=0.25), atol=1e-3
    )
    assert build_loss("collective").in_batch


# ------------------------------------------------------------------------------------ ADAM

ADAM_T = torch.tensor([[9.0, -4, -6, 3, 1], [2, 1.5, -3, 0.5, 1]])
ADAM_S = torch.tensor([[20.0, 15, 12, 18, 17], [16, 17, 11, 15, 15.5]])
ADAM_POS = mask([[1, 0, 0, 0, 0]] * 2)
ADAM_ORIG = mask([[1, 1, 1, 0, 0]] * 2)


def test_select_instances_modes():
    """Guards selection: threshold keeps c >= theta; top_rho keeps floor(rho B) (at least 1)."""
    c = torch.tensor([0.9, 0.2, 0.6, 0.4, 0.8])
    assert select_instances(c, "threshold", threshold=0.6).tolist() == [1, 0, 1, 0, 1]
    assert select_instances(c, "top_rho", rho=0.4).tolist() == [1, 0, 0, 0, 1]
    assert select_instances(c, "top_rho", rho=1.0).tolist() == [1] * 5
    assert select_instances(c, "top_rho", rho=0.01).tolist() == [1, 0, 0, 0, 0]
    with pytest.raises(LossInputError, match="mode"):
        select_instances(c, "random")


def test_adam_linear_schedule_follows_progress():
    """Guards the self-paced schedule: the threshold moves linearly with training progress,
    and a linear schedule without progress is an error."""
    loss = build_loss(
        "adam", selection="threshold", schedule="linear", schedule_start=0.5, schedule_end=0.7
    )
    assert [loss.selection_value(p) for p in (0.0, 0.5, 1.0)] == pytest.approx([0.5, 0.6, 0.7])
    at_start = loss(ADAM_S, ADAM_T, ADAM_POS, original_mask=ADAM_ORIG, progress=0.0)
    at_end = loss(ADAM_S, ADAM_T, ADAM_POS, original_mask=ADAM_ORIG, progress=1.0)
    assert math.isclose(float(at_start), 0.185822, abs_tol=1e-5)
    assert math.isclose(float(at_end), 0.161404, abs_tol=1e-5)
    assert float(loss.last_stats["kept_fraction"]) == 0.5
    with pytest.raises(LossInputError, match="progress"):
        loss(ADAM_S, ADAM_T, ADAM_POS)


def test_adam_confidence_over_full_list():
    """Guards the confidence option: over the full list query 2 drops below 0.5."""
    loss = build_loss("adam", selection="threshold", threshold=0.5, confidence_over="full")
    value = loss(ADAM_S, ADAM_T, ADAM_POS, original_mask=ADAM_ORIG)
    assert math.isclose(float(value), 0.161404, abs_tol=1e-5)
    assert math.isclose(
        float(loss.last_stats["mean_confidence"]), (0.997191 + 0.453663) / 2, abs_tol=1e-5
    )


def test_adam_nothing_kept_gives_zero_with_gradient():
    """Guards an empty selection: zero loss, finite zero gradient, no NaN."""
    s = ADAM_S.clone().requires_grad_(True)
    loss = build_loss("adam", selection="threshold", threshold=1.0)
    value = loss(s, ADAM_T, ADAM_POS, original_mask=ADAM_ORIG)
    value.backward()
    assert value.item() == 0.0 and torch.equal(s.grad, torch.zeros_like(s))


def test_adam_positive_outside_original_list_rejected():
    """Guards a mislabelled dark example: the positive must belong to the original list."""
    with pytest.raises(LossInputError, match="original_mask excludes a positive at row 1"):
        teacher_confidence(ADAM_T, ADAM_POS, original_mask=mask([[1, 1, 1, 0, 0], [0, 1, 1, 0, 0]]))


def test_adam_combines_weights_and_optional_ce():
    """Guards composition: caller weights multiply the selection; ce_weight adds the CE on the
    original list."""
    loss = build_loss("adam", selection="threshold", threshold=0.5)
    value = loss(
        ADAM_S, ADAM_T, ADAM_POS, original_mask=ADAM_ORIG, instance_weight=torch.tensor([0.0, 1.0])
    )
    assert math.isclose(float(value), 0.210240, abs_tol=1e-5)
    with_ce = build_loss("adam", selection="threshold", threshold=0.5, ce_weight=0.5)
    total = with_ce(ADAM_S, ADAM_T, ADAM_POS, original_mask=ADAM_ORIG)
    ce = F.cross_entropy(ADAM_S[:, :3], torch.zeros(2, dtype=torch.long))
    assert torch.allclose(total, torch.tensor(0.185822) + 0.5 * ce, atol=1e-5)
    assert {"kl", "ce", "kept_fraction", "mean_confidence", "total"} <= set(with_ce.last_stats)


def test_adam_exclude_positives_is_kl_over_the_non_positives_by_hand():
    """exclude_positives: the kept rows' KL over the candidates that are not positives (mined
    negatives and dark examples alike, by hand), plus the CE that alone places the positive;
    the KL gives the positive no gradient; without a CE weight it is refused, naming it."""
    student = ADAM_S.clone().requires_grad_(True)
    loss = build_loss("adam", selection="threshold", threshold=0.0, ce_weight=1.0,
                      exclude_positives=True)
    total = loss(student, ADAM_T, ADAM_POS, original_mask=ADAM_ORIG)
    rows = []
    for r in range(2):
        rest = [c for c in range(5) if not bool(ADAM_POS[r, c])]
        p = torch.softmax(ADAM_T[r, rest], dim=-1)
        q = torch.log_softmax(ADAM_S[r, rest], dim=-1)
        rows.append((p * (p.log() - q)).sum())
    kl = torch.stack(rows).mean()
    ce = F.cross_entropy(ADAM_S[:, :3], torch.zeros(2, dtype=torch.long))
    assert torch.allclose(total, kl + ce, atol=1e-6)
    assert torch.allclose(loss.last_stats["kl"], kl, atol=1e-6)
    whole_list = build_loss("adam", selection="threshold", threshold=0.0)
    assert not torch.allclose(kl, whole_list(ADAM_S, ADAM_T, ADAM_POS, original_mask=ADAM_ORIG))
    grad_kl, = torch.autograd.grad(
        build_loss("adam", selection="threshold", threshold=0.0, ce_weight=1e-9,
                   exclude_positives=True)(student, ADAM_T, ADAM_POS, original_mask=ADAM_ORIG),
        student)
    assert abs(float(grad_kl[0, 0])) < 1e-8 and float(grad_kl[0, 1]) != 0
    with pytest.raises(LossInputError, match="ce_weight"):
        build_loss("adam", exclude_positives=True)
