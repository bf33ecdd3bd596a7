"""The train step: the stage's loss on Ray Train over the training groups, the student exported
from the last checkpoint into the stage's folder."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from raykd.config import Stage
from raykd.pipeline.context import RunContext, StageState
from raykd.pipeline.files import STUDENT_DIR
from raykd.pipeline.steps.registry import register_step
from raykd.tracking import StepMetricsCallback
from raykd.train.loop import WorkerConfig, restore_paths
from raykd.train.trainer import make_trainer, plan_steps


def train_student(ctx: RunContext, index: int, stage: Stage, student_in: str, train_path: str,
                  out: Path, run_id: str | None, extra: dict | None = None) -> tuple[str, int]:
    """Train on `train_path`; returns the exported student's folder and the last step."""
    from raykd.data.ray_datasets import groups_dataset

    dataset = groups_dataset(train_path).random_shuffle(seed=stage.train.seed).materialize()
    lengths = np.concatenate([b["m"] for b in dataset.map_batches(
        _list_lengths, batch_format="numpy").iter_batches(batch_format="numpy")])
    num_groups, list_size = len(lengths), int(lengths.max())  # one pass over the data
    steps_per_epoch, total = plan_steps(num_groups, stage)
    worker = WorkerConfig(
        stage=stage.model_dump(mode="json"), student_path=str(student_in),
        student_options=ctx.student_options(index), list_size=list_size,
        steps_per_epoch=steps_per_epoch, total_steps=total, stage_index=index,
        step_hooks=list(ctx.step_hooks.get(index, ())),
        extra={**ctx.worker_extra, **(extra or {})},
        student_kind=ctx.recipe.student.kind)
    callbacks = list(ctx.train_callbacks)
    if run_id is not None:
        callbacks.append(StepMetricsCallback(ctx.tracker.tracking_uri, run_id))
    ctx.echo(f"[raykd] training {total} steps ({steps_per_epoch}/epoch) on "
             f"{num_groups} queries, {stage.train.num_workers} worker(s), "
             f"backend={stage.train.backend}")
    trainer = make_trainer(worker, dataset, stage, f"{ctx.recipe.name}-{stage.name}",
                           ctx.storage.uri(f"{ctx.recipe.name}/train"), callbacks)
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"stage '{stage.name}' finished without a checkpoint")
    student_out = out / STUDENT_DIR
    with result.checkpoint.as_directory() as ckpt:
        state, exported = restore_paths(ckpt)
        if exported is None:
            raise RuntimeError(f"stage '{stage.name}': the last checkpoint holds no student")
        if student_out.exists():
            shutil.rmtree(student_out)
        shutil.copytree(exported, student_out)
    return str(student_out), int(state["step"])


def _list_lengths(batch: dict) -> dict:
    return {"m": [len(texts) for texts in batch["texts"]]}


@register_step("train", order=60, prepares=False)
def _train(ctx: RunContext, state: StageState) -> StageState:
    student_out, steps = train_student(ctx, state.index, state.stage, state.student_in,
                                       state.train_path, state.out, state.run_id, state.extra)
    return replace(state, student_out=student_out, steps=steps)
