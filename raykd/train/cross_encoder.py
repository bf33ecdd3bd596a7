"""Fine-tune a cross-encoder teacher: listwise softmax cross-entropy over 1 positive + n mined
negatives per query (METHODS.md 3(d), how PROD trains its CE teachers), optionally plus a
distillation term from another teacher.

    groups = mine_training_groups(dataset, "train", "outputs/teachers/x/candidates.parquet")
    result = train_cross_encoder(groups, "outputs/teachers/x", CrossEncoderTrainSpec(epochs=1))
    teacher_spec(kind="cross_encoder", model=result.model_dir)   # loads what was saved

Per query and step the list is one labelled positive (drawn per epoch, seeded by the query id,
when a query has several) followed by its first `num_negatives` mined negatives; the model
scores each `[CLS] query [SEP] passage [SEP]` pair with a single logit (the pair is cut like
`CrossEncoderTeacher` cuts it: the passage only, to `query_max_length + passage_max_length`
tokens). The loss is

    L = CE(softmax(s), positive)  +  distill_weight * T^2 * KL(softmax(t / T) || softmax(s / T))

with CE = `raykd.losses.infonce_loss` and KL = `raykd.losses.kl_loss` over the same list (t:
the teacher's scores of those candidates from the Ray Data scoring stage and its cache).

Training runs on Ray Train (`TorchTrainer`, `num_workers` workers, DDP through
`ray.train.torch.prepare_model` via `raykd.train.backends.DDPBackend`; gloo on CPU, nccl and
bf16 autocast on GPU), with AdamW, linear warmup and decay, and gradient clipping. Rank 0
saves the model and tokenizer as a Hugging Face folder, plus `teacher.yaml` (a TeacherSpec
with the trained lengths) and `training.json` (the settings and the loss curve).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml
from pydantic import Field, ValidationError, model_validator

from raykd.config import Spec, TeacherSpec, teacher_spec
from raykd.errors import ConfigError
from raykd.runtime import train_logging
from raykd.storage import is_uri

log = logging.getLogger(__name__)

TRAINING_FILE = "training.json"
TEACHER_FILE = "teacher.yaml"
MODEL_DIR = "model"


class CrossEncoderTrainSpec(Spec):
    """Settings of one cross-encoder training run (every field is checked on creation)."""

    model: str = "minilm"
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    lr: float = Field(2e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    batch_size: int = Field(8, ge=1)  # queries per worker per step
    num_negatives: int = Field(7, ge=1)
    query_max_length: int = Field(64, ge=2)
    passage_max_length: int = Field(192, ge=2)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    seed: int = 13
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(2, gt=0)
    distill_weight: float = Field(0.0, ge=0)
    distill_temperature: float = Field(1.0, gt=0)
    log_every: int = Field(10, ge=1)
    trust_remote_code: bool = False

    @model_validator(mode="after")
    def _check(self) -> CrossEncoderTrainSpec:
        if self.query_max_length + self.passage_max_length < 8:
            raise ValueError("query_max_length + passage_max_length must leave room for the "
                             "special tokens (at least 8)")
        return self


def make_train_spec(**options) -> CrossEncoderTrainSpec:
    """A CrossEncoderTrainSpec, with a ConfigError naming the first bad field."""
    try:
        return CrossEncoderTrainSpec(**options)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "<root>"
        raise ConfigError(f"train_teacher.{where}", first["msg"]) from None


# ------------------------------------------------------------------ training data


def mine_training_groups(dataset, split: str, out: str | os.PathLike, *,
                         source: str = "union", depth: int = 100, num_negatives: int = 7,
                         sampling: str = "random", seed: int = 13, model: str = "minilm",
                         embedding_cache: str | os.PathLike = "outputs/embedding_cache",
                         concurrency: int = 2, num_gpus: float = 0.0,
                         use_ray: bool | None = None):
    """Candidate groups for training: every labelled positive, then `num_negatives` negatives
    sampled from the first-stage candidates (`raykd.negatives.first_stage`: BM25, dense, or
    their set union), written to `out` (.parquet / .jsonl). Returns (MiningReport, FirstStage).

    `sampling` draws from the whole candidate list (for the union: up to 2 x depth).
    `use_ray` picks how passage texts are fetched (`fetch_passage_texts`; None: Ray when
    running)."""
    from raykd.negatives.candidates import (
        MiningReport,
        fill_texts,
        plan_groups,
        write_candidate_groups,
    )
    from raykd.negatives.first_stage import first_stage
    from raykd.negatives.mining import fetch_passage_texts
    from raykd.negatives.sampling import NegativeSampler

    start = time.perf_counter()
    stage = first_stage(dataset, split, depth=depth, source=source, model=model,
                        cache_dir=embedding_cache, concurrency=concurrency, num_gpus=num_gpus)
    rankings = stage.get(source)
    pool = 2 * depth if source == "union" else depth
    sampler = NegativeSampler(num_negatives=num_negatives, sampling=sampling, depth=pool,
                              window=(0, pool), seed=seed)
    report = MiningReport(source, split)
    report.seconds.update(stage.seconds)
    plans = list(plan_groups(rankings, dataset.qrels(split), sampler, report=report))
    if not plans:
        raise ConfigError("data", f"no {split} query of {dataset.root} has a labelled positive")
    texts = fetch_passage_texts(dataset.corpus_path, {p for plan in plans for p in plan["pids"]},
                                use_ray=use_ray)
    report.outputs = write_candidate_groups(
        fill_texts(plans, dataset.queries(split), texts, str(dataset.corpus_path)), out)
    report.seconds["total"] = time.perf_counter() - start
    return report, stage


def score_training_groups(groups_path, out_dir, teacher: TeacherSpec, dataset, *,
                          embedding_cache: str | os.PathLike | None = None,
                          cache: str | None = "outputs/score_cache", concurrency: int = 2,
                          num_gpus: float = 0.0, num_shards: int = 4):
    """Teacher scores of the training groups through the Ray Data scoring stage and cache
    (stored passage vectors, when given, spare a bi-encoder teacher its passage passes)."""
    from raykd.teachers.bi_encoder import StoredPassages
    from raykd.teachers.factory import build_teacher
    from raykd.teachers.scoring import remote_fingerprint, score_candidate_groups

    make = functools.partial(build_teacher, teacher, str(dataset.root))
    if embedding_cache is not None:
        make = StoredPassages(make, embedding_cache, dataset.corpus_path)
    fingerprint = remote_fingerprint(make)
    return score_candidate_groups(groups_path, Path(out_dir) / f"scored-{fingerprint}", make,
                                  fingerprint, num_shards=num_shards, concurrency=concurrency,
                                  num_gpus=num_gpus, batch_size=teacher.batch_size,
                                  cache=cache, groups_per_batch=16)


# ------------------------------------------------------------------ lists and loss


@dataclass
class PairLists:
    """B lists of m (query, passage) pairs: positive first, padding where a list is short."""

    qids: list[str]
    queries: list[str]  # flat, B * m (padding repeats the query with an empty passage)
    passages: list[str]
    valid: np.ndarray  # [B, m] bool
    teacher: np.ndarray | None  # [B, m] float32


def _as_list(value) -> list:
    if value is None:
        return []
    return value.tolist() if isinstance(value, np.ndarray) else list(value)


def build_lists(batch: Mapping, num_negatives: int, *, seed: int = 13, epoch: int = 0,
                with_teacher: bool = False) -> PairLists:
    """One positive (drawn per epoch, seeded by qid) + the first `num_negatives` negatives of
    each group of a Ray Data numpy batch (or a dict of lists)."""
    from raykd.negatives.sampling import query_rng

    m = 1 + num_negatives
    qids = [str(q) for q in _as_list(batch["qid"])]
    size = len(qids)
    queries, passages = [], []
    valid = np.zeros((size, m), dtype=bool)
    teacher = np.zeros((size, m), dtype=np.float32) if with_teacher else None
    query_texts = [str(q) for q in _as_list(batch["query"])]
    for b, qid in enumerate(qids):
        query = query_texts[b]
        texts = _as_list(batch["texts"][b])
        labels = [int(x) for x in _as_list(batch["labels"][b])]
        positives = [i for i, y in enumerate(labels) if y == 1]
        negatives = [i for i, y in enumerate(labels) if y != 1][:num_negatives]
        if not positives:
            raise ValueError(f"training group {qid!r} has no labelled positive")
        pick = positives[int(query_rng(seed + epoch, qid).integers(len(positives)))]
        chosen = [pick, *negatives]
        scores = _as_list(batch["teacher_scores"][b]) if with_teacher else None
        if with_teacher and (not scores or len(scores) != len(texts)):
            raise ValueError(f"training group {qid!r} has no teacher score per candidate")
        for j in range(m):
            queries.append(query)
            if j < len(chosen):
                passages.append(str(texts[chosen[j]]))
                valid[b, j] = True
                if teacher is not None:
                    teacher[b, j] = float(scores[chosen[j]])
            else:
                passages.append("")
    return PairLists(qids, queries, passages, valid, teacher)


def tokenize_pairs(tokenizer, queries: Sequence[str], passages: Sequence[str],
                   max_length: int) -> dict:
    """`[CLS] q [SEP] p [SEP]` cut to `max_length` tokens on the passage side only (the whole
    batch falls back to `longest_first` when a query alone would not leave room), as
    `CrossEncoderTeacher` tokenises at scoring time."""
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    longest = max(len(ids) for ids in tokenizer(list(queries),
                                                add_special_tokens=False)["input_ids"])
    fits = longest + specials < max_length
    return tokenizer(list(queries), list(passages), padding=True, max_length=max_length,
                     truncation="only_second" if fits else "longest_first", return_tensors="pt")


def listwise_loss(scores, valid, teacher=None, *, distill_weight: float = 0.0,
                  temperature: float = 1.0) -> tuple:
    """(total, ce, kl) for student scores [B, m] with the positive in column 0."""
    import torch

    from raykd.losses import infonce_loss, kl_loss

    valid = torch.as_tensor(valid, device=scores.device)
    pos = torch.zeros_like(valid)
    pos[:, 0] = True
    ce = infonce_loss(scores, pos, valid)
    kl = scores.new_zeros(())
    if distill_weight > 0:
        if teacher is None:
            raise ValueError("distill_weight > 0 needs teacher scores")
        kl = kl_loss(scores, torch.as_tensor(teacher, device=scores.device), valid,
                     student_temperature=temperature, teacher_temperature=temperature,
                     t2_scaling=True)
    return ce + distill_weight * kl, ce, kl


def evaluate_listwise_loss(model_dir: str | os.PathLike, groups: Sequence[Mapping], *,
                           num_negatives: int = 7, max_length: int = 256, seed: int = 13,
                           batch_size: int = 8) -> float:
    """Mean listwise CE of a saved (or any) cross-encoder over candidate groups (eval mode)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from raykd.students.bundled import resolve_model

    path = resolve_model(str(model_dir))
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(groups), batch_size):
            chunk = list(groups[start:start + batch_size])
            batch = {k: [g[k] for g in chunk] for k in ("qid", "query", "texts", "labels")}
            lists = build_lists(batch, num_negatives, seed=seed)
            enc = tokenize_pairs(tokenizer, lists.queries, lists.passages, max_length)
            scores = model(**enc).logits[:, 0].float().view(lists.valid.shape)
            _, ce, _ = listwise_loss(scores, lists.valid)
            total += float(ce) * len(chunk)
            count += len(chunk)
    return total / max(count, 1)


# ------------------------------------------------------------------ the Ray Train worker


def _train_worker(config: dict) -> None:
    """Ray Train loop per worker: DDP over the group shard, report, save on rank 0."""
    import ray.train
    import ray.train.torch
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from raykd.config import TrainSpec
    from raykd.train.backends import DDPBackend
    from raykd.train.loop import linear_warmup_decay

    spec = CrossEncoderTrainSpec(**config["spec"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    torch.manual_seed(spec.seed + rank)
    use_gpu = spec.use_gpu and torch.cuda.is_available()
    device = ray.train.torch.get_device() if use_gpu else torch.device("cpu")
    if not use_gpu:
        torch.set_num_threads(max(1, int(spec.cpus_per_worker)))
    tokenizer = AutoTokenizer.from_pretrained(config["model_path"],
                                              trust_remote_code=spec.trust_remote_code)
    model = AutoModelForSequenceClassification.from_pretrained(
        config["model_path"], num_labels=1, trust_remote_code=spec.trust_remote_code)
    model.config.num_labels = 1
    total, steps_per_epoch = config["total_steps"], config["steps_per_epoch"]
    backend = DDPBackend(
        TrainSpec(lr=spec.lr, weight_decay=spec.weight_decay, max_grad_norm=spec.max_grad_norm,
                  precision="bf16" if use_gpu else "fp32", use_gpu=use_gpu,
                  batch_size=spec.batch_size, seed=spec.seed),
        model, linear_warmup_decay(total, int(spec.warmup_ratio * total)), device)
    model.train()
    max_length = spec.query_max_length + spec.passage_max_length
    shard = ray.train.get_dataset_shard("train")
    history: list[dict] = []
    window: list[tuple[float, float, float]] = []
    step, epoch, started = 0, 0, time.perf_counter()
    while step < total:
        for raw in shard.iter_batches(batch_size=spec.batch_size, batch_format="numpy",
                                      drop_last=True):
            lists = build_lists(raw, spec.num_negatives, seed=spec.seed, epoch=epoch,
                                with_teacher=config["with_teacher"])
            enc = {k: v.to(device) for k, v in tokenize_pairs(
                tokenizer, lists.queries, lists.passages, max_length).items()}
            with backend.autocast():
                logits = backend.model(**enc).logits
            scores = logits[:, 0].float().view(lists.valid.shape)
            loss, ce, kl = listwise_loss(scores, lists.valid, lists.teacher,
                                         distill_weight=spec.distill_weight,
                                         temperature=spec.distill_temperature)
            backend.backward_step(loss, True)
            step += 1
            window.append((float(loss.detach()), float(ce.detach()), float(kl.detach())))
            if step % spec.log_every == 0 or step == total:
                row = {"step": step, "epoch": epoch,
                       "loss": float(np.mean([w[0] for w in window])),
                       "ce": float(np.mean([w[1] for w in window])),
                       "kl": float(np.mean([w[2] for w in window])), "lr": backend.lr(),
                       "seconds": time.perf_counter() - started}
                history.append(row)
                window = []
                if rank == 0:
                    print(f"[train_teacher] step {step}/{total} epoch {epoch} "
                          f"loss {row['loss']:.4f} (ce {row['ce']:.4f}, kl {row['kl']:.4f}) "
                          f"lr {row['lr']:.2e} {row['seconds']:.0f}s", file=sys.__stdout__,
                          flush=True)  # the real stdout: Ray Train's print would show it twice
                if step < total:
                    ray.train.report({k: v for k, v in row.items()})
            if step >= total:
                break
        epoch += 1
        if epoch > math.ceil(total / max(steps_per_epoch, 1)) + 1:
            raise RuntimeError(f"worker {rank} ran out of data at step {step}/{total}")
    with tempfile.TemporaryDirectory() as tmp:
        if rank == 0:
            backend.student.save_pretrained(Path(tmp) / MODEL_DIR)
            tokenizer.save_pretrained(Path(tmp) / MODEL_DIR)
            (Path(tmp) / TRAINING_FILE).write_text(json.dumps({"history": history,
                                                               "steps": step}))
        ray.train.report(history[-1] if history else {"step": step},
                         checkpoint=ray.train.Checkpoint.from_directory(tmp)
                         if rank == 0 else None)


# ------------------------------------------------------------------ the driver


@dataclass
class TrainResult:
    """What `train_cross_encoder` leaves behind."""

    model_dir: str
    teacher_spec: str
    steps: int
    steps_per_epoch: int
    num_groups: int
    history: list[dict] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def first_loss(self) -> float:
        return self.history[0]["loss"] if self.history else float("nan")

    @property
    def last_loss(self) -> float:
        return self.history[-1]["loss"] if self.history else float("nan")


def plan_training(num_groups: int, spec: CrossEncoderTrainSpec) -> tuple[int, int]:
    """(steps per epoch, total steps); a dataset too small for one step is a ConfigError."""
    per_step = spec.batch_size * spec.num_workers
    steps_per_epoch = num_groups // per_step
    if steps_per_epoch < 1:
        raise ConfigError("train_teacher.batch_size",
                          f"{num_groups} training queries cannot fill one step of {per_step} "
                          "(batch_size x num_workers)")
    total = spec.max_steps or max(1, math.ceil(spec.epochs * steps_per_epoch))
    return steps_per_epoch, total


def train_cross_encoder(groups_path: str | os.PathLike, out_dir: str | os.PathLike,
                        spec: CrossEncoderTrainSpec, *, storage_path: str | None = None,
                        echo: Callable[[str], None] = log.info) -> TrainResult:
    """Train on the candidate groups at `groups_path` (with `teacher_scores` when
    `spec.distill_weight > 0`) and save `<out_dir>/model`, `teacher.yaml`, `training.json`."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from raykd.data.ray_datasets import groups_dataset
    from raykd.students.bundled import resolve_model

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    dataset = groups_dataset(groups_path).random_shuffle(seed=spec.seed).materialize()
    num_groups = dataset.count()
    steps_per_epoch, total = plan_training(num_groups, spec)
    with_teacher = spec.distill_weight > 0
    if with_teacher:
        missing = dataset.filter(lambda row: row.get("teacher_scores") is None).count()
        if missing:
            raise ConfigError("train_teacher.distill_weight",
                              f"{missing} training groups have no teacher_scores; score them "
                              "first (score_training_groups) or set distill_weight 0")
    echo(f"training a cross-encoder from {spec.model}: {num_groups} queries, {total} steps "
         f"({steps_per_epoch}/epoch) of {spec.batch_size} x {spec.num_workers} worker(s), "
         f"lists of 1+{spec.num_negatives}, max length "
         f"{spec.query_max_length}+{spec.passage_max_length}, lr {spec.lr:g}"
         + (f", distill weight {spec.distill_weight:g}" if with_teacher else ""))
    resources = {"CPU": spec.cpus_per_worker, **({"GPU": 1} if spec.use_gpu else {})}
    ingest = DataConfig.default_ingest_options()
    ingest.preserve_order = True
    storage = storage_path or str(out / "ray_train")
    trainer = TorchTrainer(
        train_loop_per_worker=_train_worker,
        train_loop_config={"spec": spec.model_dump(mode="json"),
                           "model_path": resolve_model(spec.model), "total_steps": total,
                           "steps_per_epoch": steps_per_epoch, "with_teacher": with_teacher},
        scaling_config=ScalingConfig(num_workers=spec.num_workers, use_gpu=spec.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=f"train-teacher-{int(time.time())}",
                             storage_path=storage if is_uri(storage)
                             else str(Path(storage).resolve()),
                             failure_config=FailureConfig(max_failures=0),
                             checkpoint_config=CheckpointConfig(num_to_keep=1),
                             **train_logging()),
        datasets={"train": dataset},
        dataset_config=DataConfig(datasets_to_split="all", execution_options=ingest),
        torch_config=TorchConfig(backend="nccl" if spec.use_gpu else "gloo"),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError("cross-encoder training finished without a checkpoint")
    model_dir = out / MODEL_DIR
    with result.checkpoint.as_directory() as ckpt:
        if model_dir.exists():
            shutil.rmtree(model_dir)
        shutil.copytree(Path(ckpt) / MODEL_DIR, model_dir)
        trained = json.loads((Path(ckpt) / TRAINING_FILE).read_text())
    seconds = {"train": time.perf_counter() - t0}
    teacher = teacher_spec(kind="cross_encoder", model=str(model_dir),
                           query_max_length=spec.query_max_length,
                           passage_max_length=spec.passage_max_length)
    spec_path = out / TEACHER_FILE
    spec_path.write_text(yaml.safe_dump(teacher.model_dump(mode="json", exclude_defaults=True),
                                        sort_keys=False))
    outcome = TrainResult(str(model_dir), str(spec_path), int(trained["steps"]),
                          steps_per_epoch, num_groups, trained["history"], seconds)
    (out / TRAINING_FILE).write_text(json.dumps(
        {"spec": spec.model_dump(mode="json"), "groups": str(groups_path),
         **asdict(outcome)}, indent=2) + "\n")
    return outcome
