"""The per-worker training loop run by Ray Train (DDP or DeepSpeed, CPU or GPU)."""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import ray.train
import torch

from raykd.config import Stage
from raykd.losses import build_loss
from raykd.progress import eta, format_duration
from raykd.train.backends import make_backend
from raykd.train.batching import collate_groups
from raykd.train.online_teacher import build_online_teacher
from raykd.train.probe import DevProbe
from raykd.train.student_scores import check_layout, load_student, make_scorer

STATE_FILE = "train_state.json"
STUDENT_DIR = "student"


@dataclass
class WorkerConfig:
    """What the driver hands every worker (plain data, so it pickles and logs)."""

    stage: dict
    student_path: str
    student_options: dict
    list_size: int
    steps_per_epoch: int
    total_steps: int
    stage_index: int = 0
    step_hooks: list = field(default_factory=list)  # `hook(step, rank)`: raykd.train.hooks
    extra: dict = field(default_factory=dict)
    student_kind: str = "bi_encoder"


@dataclass
class TrainState:
    """Where training stands: restored from a checkpoint to resume exactly."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    stage_index: int = 0
    stage_done: bool = False


def _world() -> tuple[int, int]:
    ctx = ray.train.get_context()
    return ctx.get_world_rank(), ctx.get_world_size()


def linear_warmup_decay(total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        remaining = max(total_steps - warmup_steps, 1)
        return max(0.0, (total_steps - step) / remaining)
    return factor


def _device(use_gpu: bool) -> torch.device:
    if use_gpu and torch.cuda.is_available():
        return ray.train.torch.get_device()
    return torch.device("cpu")


def _to(inputs: dict, device) -> dict:
    return {k: v.to(device) for k, v in inputs.items()}


def train_loop_per_worker(raw_config: dict) -> None:
    """One worker: restore, iterate the dataset shard, step, report, checkpoint."""
    cfg = WorkerConfig(**raw_config)
    stage = Stage.model_validate(cfg.stage)
    spec = stage.train
    rank, world = _world()
    torch.manual_seed(spec.seed + rank)
    np.random.seed(spec.seed + rank)
    device = _device(spec.use_gpu)
    if device.type == "cpu":  # Ray caps a worker's threads at 1; use the CPUs it reserved
        torch.set_num_threads(max(1, int(spec.cpus_per_worker)))

    student = load_student(cfg.student_kind, cfg.student_path, cfg.student_options)
    loss_fn = build_loss(stage.loss.name, **stage.loss.params)
    needs_reference = bool(getattr(loss_fn, "needs_reference", False))
    in_batch = bool(getattr(loss_fn, "in_batch", False))
    # PROD's frozen copy is the student at the stage's start: the stage's input weights.
    reference = copy.deepcopy(student).eval().requires_grad_(False) if needs_reference else None
    online_teacher = None
    if in_batch and getattr(loss_fn, "needs_teacher", True) and stage.teacher is not None:
        online_teacher = build_online_teacher(stage.teacher, device, cfg.extra)

    warmup = int(spec.warmup_ratio * cfg.total_steps)
    backend = make_backend(spec, student, linear_warmup_decay(cfg.total_steps, warmup), device)
    state = TrainState(stage_index=cfg.stage_index)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            saved = json.loads((Path(ckpt_dir) / STATE_FILE).read_text())
            state = TrainState(**saved)
            backend.load(ckpt_dir)

    scorer = make_scorer(student, in_batch, rank, world)
    probe = DevProbe.from_config(cfg.extra.get("dev_probe")) if rank == 0 else None
    probe_every = (cfg.extra.get("dev_probe") or {}).get("every")
    ref_scorer = make_scorer(reference, in_batch, rank, world)
    check_layout(scorer, online_teacher, world)
    shard = ray.train.get_dataset_shard("train")
    last_report = time.perf_counter()
    started, start_step = last_report, state.step  # the ETA: steps of this run (a resume's own)
    queries_seen = 0
    window_losses: list[float] = []
    extra_metrics: dict[str, float] = {}

    def report(checkpoint_now: bool, final: bool = False) -> None:
        nonlocal last_report, queries_seen, window_losses
        elapsed = max(time.perf_counter() - last_report, 1e-9)
        metrics = {
            "step": state.step,
            "epoch": state.epoch,
            "stage": stage.name,
            "loss": float(np.mean(window_losses)) if window_losses else float("nan"),
            "lr": backend.lr(),
            "queries_per_s": queries_seen * world / elapsed,
            **extra_metrics,
        }
        if final:
            state.stage_done = True
        if probe_every and (final or state.step % probe_every == 0):
            with backend.full_weights():  # ZeRO-3 gathers on every rank; rank 0 measures
                if probe is not None:
                    metrics.update(probe.measure(student))
        if rank == 0:  # progress for whoever watches the job's log
            # To the process's real stdout: Ray Train's patched print would both tee it and
            # log it, and the job's log would show every line twice.
            left = None if final else eta(state.step - start_step, cfg.total_steps - start_step,
                                          time.perf_counter() - started)
            print(f"[raykd] {stage.name} step {state.step}/{cfg.total_steps} "
                  f"loss {metrics['loss']:.4f} lr {metrics['lr']:.2e} "
                  f"{metrics['queries_per_s']:.1f} queries/s"
                  + (f", ETA {format_duration(left)}" if left is not None else ""),
                  file=sys.__stdout__, flush=True)
        if not checkpoint_now:
            ray.train.report(metrics)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                wrote = backend.save(tmp, rank)
                if final:
                    with backend.full_weights():
                        if rank == 0:
                            student.save(Path(tmp) / STUDENT_DIR)
                    wrote = wrote or rank == 0
                if rank == 0:
                    (Path(tmp) / STATE_FILE).write_text(json.dumps(asdict(state)))
                    wrote = True
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp)
                                 if wrote else None)
        last_report = time.perf_counter()
        queries_seen = 0
        window_losses = []

    micro = 0
    while state.step < cfg.total_steps:
        skip = state.batch_in_epoch
        iterator = shard.iter_batches(batch_size=spec.batch_size, batch_format="numpy",
                                      drop_last=True, local_shuffle_buffer_size=None)
        for i, raw in enumerate(iterator):
            if i < skip:
                continue
            batch = collate_groups(raw, cfg.list_size)
            with backend.autocast():
                q_in = _to(student.tokenize(batch.queries, "query"), device)
                p_in = _to(student.tokenize(batch.passages, "passage"), device)
                q_emb, p_emb = backend.model(q_in, p_in)
                scores = scorer.scores(q_emb, p_emb, batch)
            pos_mask, valid_mask = scorer.masks(batch, device)
            teacher = batch.teacher.to(device) if batch.teacher is not None else None
            if online_teacher is not None:
                teacher = online_teacher.in_batch_scores(batch, rank, world)
            ref_scores = None
            if ref_scorer is not None:
                with torch.no_grad():
                    rq, rp = reference(_to(q_in, device), _to(p_in, device))
                    ref_scores = ref_scorer.scores(rq, rp, batch, gather_grad=False)
            extra = {}
            if getattr(loss_fn, "needs_original_mask", False) and not in_batch:
                extra["original_mask"] = batch.original_mask.to(device)
            loss = loss_fn(student=scores.float(), teacher=teacher, pos_mask=pos_mask,
                           valid_mask=valid_mask, reference=ref_scores,
                           progress=state.step / max(cfg.total_steps, 1), **extra)
            extra_metrics = _loss_metrics(loss_fn)
            boundary = (micro + 1) % spec.grad_accum == 0
            backend.backward_step(loss, boundary)
            micro += 1
            queries_seen += len(batch.qids)
            window_losses.append(float(loss.detach()))
            state.batch_in_epoch = i + 1
            if not boundary:
                continue
            state.step += 1
            for hook in cfg.step_hooks:
                hook(state.step, rank)
            done = state.step >= cfg.total_steps
            ckpt_due = spec.checkpoint_every and state.step % spec.checkpoint_every == 0
            if done:
                report(checkpoint_now=True, final=True)
                return
            if ckpt_due:
                report(checkpoint_now=True)
            elif state.step % spec.log_every == 0 or (probe_every
                                                       and state.step % probe_every == 0):
                report(checkpoint_now=False)
        state.epoch += 1
        state.batch_in_epoch = 0
        if state.epoch > math.ceil(cfg.total_steps / max(cfg.steps_per_epoch, 1)) + 1:
            raise RuntimeError(
                f"worker {rank} ran out of data at step {state.step}/{cfg.total_steps}")


def _loss_metrics(loss_fn) -> dict[str, float]:
    """Per-step extras a loss exposes for logging (components, kept fraction, confidence)."""
    stats = getattr(loss_fn, "last_stats", None) or {}
    out = {}
    for key, value in dict(stats).items():
        try:
            out[f"loss/{key}"] = float(value)
        except (TypeError, ValueError):
            continue
    return out


def restore_paths(checkpoint_dir: str | os.PathLike) -> tuple[dict, Path | None]:
    """The saved train state and the exported student folder (if the stage finished)."""
    root = Path(checkpoint_dir)
    state = json.loads((root / STATE_FILE).read_text())
    student = root / STUDENT_DIR
    return state, (student if student.exists() else None)
