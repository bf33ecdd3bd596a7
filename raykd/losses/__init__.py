"""Distillation losses over each query's candidate list: pure functions, modules, registry.

Shape contract (DESIGN.md 3): ``student[B, m]``, ``teacher[B, m]``, ``pos_mask[B, m]``,
``valid_mask[B, m]`` (False = padding), optional ``reference[B, m]`` and
``instance_weight[B]``. Computation is in fp32 (fp64 stays fp64); teacher tensors are detached.
"""

from raykd.losses.base import DistillationLoss
from raykd.losses.ckl import (
    BETA_FUNCTIONS,
    CKLLoss,
    beta_student_rank,
    beta_teacher_rank,
    beta_zero,
    ckl_loss,
    ckl_loss_parts,
)
from raykd.losses.collective import (
    CollectiveKDLoss,
    collective_loss,
    overwrite_positive_with_row_max,
)
from raykd.losses.common import (
    LossBatch,
    TemperatureCollapseWarning,
    masked_log_softmax,
    prepare_inputs,
)
from raykd.losses.in_batch import gather_with_grad, in_batch_layout, in_batch_scores
from raykd.losses.infonce import InfoNCELoss, infonce_loss
from raykd.losses.kl import KLLoss, kl_loss, kl_rows
from raykd.losses.margin_mse import MarginMSELoss, margin_mse_loss
from raykd.losses.prod import PRODLoss, prod_loss, prod_loss_parts
from raykd.losses.registry import LOSSES, build_loss, loss_parameters, register_loss
from raykd.losses.self_paced import (
    SCHEDULES,
    ConstantSchedule,
    LinearSchedule,
    SelfPacedKLLoss,
    select_instances,
    self_paced_kl_loss,
    teacher_confidence,
)

__all__ = [
    "BETA_FUNCTIONS",
    "LOSSES",
    "SCHEDULES",
    "CKLLoss",
    "CollectiveKDLoss",
    "ConstantSchedule",
    "DistillationLoss",
    "InfoNCELoss",
    "KLLoss",
    "LinearSchedule",
    "LossBatch",
    "MarginMSELoss",
    "PRODLoss",
    "SelfPacedKLLoss",
    "TemperatureCollapseWarning",
    "beta_student_rank",
    "beta_teacher_rank",
    "beta_zero",
    "build_loss",
    "ckl_loss",
    "ckl_loss_parts",
    "collective_loss",
    "gather_with_grad",
    "in_batch_layout",
    "in_batch_scores",
    "infonce_loss",
    "kl_loss",
    "kl_rows",
    "loss_parameters",
    "margin_mse_loss",
    "masked_log_softmax",
    "overwrite_positive_with_row_max",
    "prepare_inputs",
    "prod_loss",
    "prod_loss_parts",
    "register_loss",
    "select_instances",
    "self_paced_kl_loss",
    "teacher_confidence",
]
