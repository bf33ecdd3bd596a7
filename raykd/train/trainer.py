"""Ray Train's TorchTrainer over the worker loop: scaling, failures, checkpoints, resume by name."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import ray
from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from raykd.config import Stage
from raykd.runtime import train_logging
from raykd.train.loop import WorkerConfig, train_loop_per_worker


def plan_steps(num_groups: int, stage: Stage) -> tuple[int, int]:
    """(steps per epoch, total optimiser steps) for a stage over `num_groups` queries."""
    spec = stage.train
    per_step = spec.batch_size * spec.num_workers * spec.grad_accum
    steps_per_epoch = num_groups // per_step
    if steps_per_epoch < 1:
        raise ValueError(
            f"stage '{stage.name}': {num_groups} training queries cannot fill one step of "
            f"{per_step} (train.batch_size x train.num_workers x train.grad_accum)")
    total = spec.max_steps or max(1, math.ceil(spec.epochs * steps_per_epoch))
    return steps_per_epoch, total


def _ordered_ingest():
    """Ingest in a fixed order, so a resumed run skips exactly the batches it had consumed."""
    options = DataConfig.default_ingest_options()
    options.preserve_order = True
    return options


def make_trainer(worker: WorkerConfig, train_ds: ray.data.Dataset, stage: Stage, run_name: str,
                 storage_path: str, callbacks: list | None = None) -> TorchTrainer:
    """A TorchTrainer for one stage; the same `run_name` under `storage_path` resumes."""
    spec = stage.train
    resources = {"CPU": spec.cpus_per_worker}
    if spec.use_gpu:
        resources["GPU"] = 1
    return TorchTrainer(
        train_loop_per_worker=train_loop_per_worker,
        train_loop_config=asdict(worker),
        scaling_config=ScalingConfig(num_workers=spec.num_workers, use_gpu=spec.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=run_name,
            storage_path=str(Path(storage_path).resolve()) if "://" not in storage_path
            else storage_path,
            failure_config=FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=callbacks or [],
            **train_logging(),
        ),
        datasets={"train": train_ds},
        dataset_config=DataConfig(datasets_to_split="all", execution_options=_ordered_ingest()),
        torch_config=TorchConfig(backend="nccl" if spec.use_gpu else "gloo"),
    )
