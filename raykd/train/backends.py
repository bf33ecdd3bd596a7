"""Training backends: plain DDP and DeepSpeed (ZeRO 0-3) behind one small interface.

Both use the same AdamW optimiser and linear warmup/decay schedule; a backend owns the wrapped
model, the optimiser step (with accumulation and clipping), mixed precision and checkpoints.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from raykd.config import TrainSpec
from raykd.errors import ConfigError

DDP_STATE = "trainer_state.pt"
DEEPSPEED_TAG = "deepspeed"
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _optimizer(spec: TrainSpec, model: torch.nn.Module, lr_lambda):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)


class DDPBackend:
    """torch DistributedDataParallel through Ray Train's `prepare_model` (gloo on CPU, nccl on GPU)."""

    def __init__(self, spec: TrainSpec, student: torch.nn.Module, lr_lambda, device: torch.device):
        import ray.train.torch

        self.spec, self.student, self.device = spec, student.to(device), device
        world = ray.train.get_context().get_world_size()
        # Unused parameters (e.g. a BERT pooler) must not stall the gradient all-reduce.
        self.model = (ray.train.torch.prepare_model(
            student, move_to_device=device.type != "cpu",
            parallel_strategy_kwargs={"find_unused_parameters": True}) if world > 1 else student)
        self.optimizer, self.scheduler = _optimizer(spec, student, lr_lambda)
        fp16 = spec.precision == "fp16" and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=fp16)

    def autocast(self):
        dtype = AUTOCAST_DTYPES.get(self.spec.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def backward_step(self, loss: torch.Tensor, boundary: bool) -> None:
        scaled = self.scaler.scale(loss / self.spec.grad_accum)
        no_sync = (self.model.no_sync() if isinstance(self.model, DistributedDataParallel)
                   and not boundary else contextlib.nullcontext())
        with no_sync:
            scaled.backward()
        if not boundary:
            return
        if self.spec.max_grad_norm:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.spec.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def save(self, directory: str, rank: int) -> bool:
        if rank != 0:
            return False
        torch.save({"model": self.student.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict()},
                   Path(directory) / DDP_STATE)
        return True

    def load(self, directory: str) -> None:
        state = torch.load(Path(directory) / DDP_STATE, map_location=self.device, weights_only=True)
        self.student.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])

    def full_weights(self):
        return contextlib.nullcontext()


def deepspeed_config(spec: TrainSpec) -> dict:
    """The DeepSpeed config generated from the recipe, with a user JSON merged over it."""
    config = {
        "train_micro_batch_size_per_gpu": spec.batch_size,
        "gradient_accumulation_steps": spec.grad_accum,
        "gradient_clipping": spec.max_grad_norm or 0.0,
        "zero_optimization": {"stage": spec.zero_stage},
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": spec.precision == "bf16"},
        "fp16": {"enabled": spec.precision == "fp16"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if spec.deepspeed_config:
        path = Path(spec.deepspeed_config)
        if not path.exists():
            raise ConfigError("train.deepspeed_config", f"{path} does not exist")
        try:
            user = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError("train.deepspeed_config", f"{path} is not valid JSON: {err}") from err
        config = _merge(config, user)
    return config


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(
            out.get(key), dict) else value
    return out


class DeepSpeedBackend:
    """DeepSpeed engine over the same optimiser and schedule; every rank saves its ZeRO shard."""

    def __init__(self, spec: TrainSpec, student: torch.nn.Module, lr_lambda, device: torch.device):
        import deepspeed

        if device.type == "cpu":
            # DeepSpeed's shared-memory op only serves inference all-reduce and costs a C++
            # build on first use; training on CPU never calls it.
            import deepspeed.comm.torch as ds_torch

            ds_torch.build_shm_op = lambda: None
        self.spec, self.student, self.device = spec, student.to(device), device
        optimizer, scheduler = _optimizer(spec, student, lr_lambda)
        self.config = deepspeed_config(spec)
        self.model, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=student, optimizer=optimizer, lr_scheduler=scheduler, config=self.config,
            dist_init_required=False)

    def autocast(self):
        return contextlib.nullcontext()  # DeepSpeed casts the model itself for bf16/fp16

    def backward_step(self, loss: torch.Tensor, boundary: bool) -> None:
        self.model.backward(loss)  # scales by 1/grad_accum and steps at the boundary
        self.model.step()

    def lr(self) -> float:
        return float(self.model.get_lr()[0])

    def save(self, directory: str, rank: int) -> bool:
        self.model.save_checkpoint(directory, tag=DEEPSPEED_TAG)
        return True

    def load(self, directory: str) -> None:
        path, _ = self.model.load_checkpoint(directory, tag=DEEPSPEED_TAG)
        if path is None:
            raise RuntimeError(f"no DeepSpeed checkpoint '{DEEPSPEED_TAG}' under {directory}")

    def full_weights(self):
        if self.spec.zero_stage == 3:
            import deepspeed

            return deepspeed.zero.GatheredParameters(list(self.student.parameters()),
                                                     modifier_rank=None)
        return contextlib.nullcontext()


BACKENDS = {"ddp": DDPBackend, "deepspeed": DeepSpeedBackend}


def make_backend(spec: TrainSpec, student: torch.nn.Module, lr_lambda, device: torch.device):
    return BACKENDS[spec.backend](spec, student, lr_lambda, device)
