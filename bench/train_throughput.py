"""Training throughput, measured side by side in one run on the same model, data and batch:

1. the raykd Ray Train loop (TorchTrainer, 1 worker, the real `train_loop_per_worker`),
2. a plain PyTorch loop in this process (same student, loss, optimiser, threads),
3. sentence-transformers' MarginMSELoss with its own trainer (same triples and margins).

    python bench/train_throughput.py            # 40 steps each, 8 queries x (1 + 3) passages
    python bench/train_throughput.py --quick    # a short check

Throughput is steady-state queries/s (the first `--warmup` steps are not timed); each query
brings 1 positive and `--negatives` negatives. Teacher margins are deterministic synthetic
values: throughput does not depend on them.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=8, help="queries per step")
    p.add_argument("--negatives", type=int, default=3)
    p.add_argument("--query-max-length", type=int, default=32)
    p.add_argument("--passage-max-length", type=int, default=128)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch threads for every loop (Ray: CPUs of the one worker)")
    p.add_argument("--skip-st", action="store_true", help="skip sentence-transformers")
    p.add_argument("--quick", action="store_true", help="12 steps, 3 warmup, 64-token passages")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.passage_max_length = 12, 3, 64
    if args.steps <= args.warmup:
        p.error("--steps must exceed --warmup")
    return args


def build_groups(n: int, negatives: int, seed: int = 0) -> list[dict]:
    """SciFact train queries with their positive and BM25-mined negatives."""
    from raykd.data.beir import BeirDataset
    from raykd.data.records import passage_text
    from raykd.datasets import scifact_dir
    from raykd.negatives.mining import bm25_rankings

    data = BeirDataset.from_dir(scifact_dir())
    queries, qrels = data.queries("train"), data.qrels("train")
    qids = sorted(queries)[:n]
    ranked = bm25_rankings(data.corpus_path, {q: queries[q] for q in qids}, depth=20)
    texts = {r["pid"]: passage_text(r["title"], r["text"]) for r in data.iter_corpus()}
    rng = np.random.default_rng(seed)
    groups = []
    for qid in qids:
        pos = next(iter(qrels[qid]))
        negs = [p for p in ranked[qid] if p not in qrels[qid]][:negatives]
        pids = [pos, *negs]
        scores = [8.0, *(float(s) for s in rng.uniform(0, 6, size=len(negs)))]
        groups.append({"qid": qid, "query": queries[qid], "pids": pids,
                       "texts": [texts[p] for p in pids], "labels": [1] + [0] * len(negs),
                       "teacher_scores": scores, "kinds": ["pos"] + ["neg"] * len(negs)})
    return groups


def plain_loop(args, groups, model_path) -> float:
    from raykd.losses import build_loss
    from raykd.students import BiEncoder
    from raykd.train.batching import Scorer, collate_groups

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    student = BiEncoder.from_pretrained(model_path, query_max_length=args.query_max_length,
                                        passage_max_length=args.passage_max_length).train()
    loss_fn = build_loss("margin_mse")
    optimizer = torch.optim.AdamW(student.parameters(), lr=2e-5)
    scorer = Scorer(student, False, 0, 1)
    m = args.negatives + 1
    times = []
    for step in range(args.steps):
        chunk = groups[step * args.batch_size:(step + 1) * args.batch_size]
        start = time.perf_counter()
        batch = collate_groups({k: [g[k] for g in chunk] for k in chunk[0]}, m)
        q, p = student(student.tokenize(batch.queries, "query"),
                       student.tokenize(batch.passages, "passage"))
        loss = loss_fn(student=scorer.scores(q, p, batch), teacher=batch.teacher,
                       pos_mask=batch.pos_mask, valid_mask=batch.valid_mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return args.batch_size * (args.steps - args.warmup) / sum(times[args.warmup:])


def ray_train_loop(args, groups, model_path, storage: str) -> float:
    """The real worker loop on 1 Ray Train worker; it reports every `warmup` steps with the
    queries/s of that window (report overhead included), so windows after the first are
    steady state."""
    import json

    import ray
    from ray.train import UserCallback

    from raykd.config import Stage
    from raykd.runtime import init_ray
    from raykd.train.loop import WorkerConfig
    from raykd.train.trainer import make_trainer

    init_ray()
    log_file = str(Path(storage) / "rates.jsonl")

    class Rates(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            with open(log_file, "a") as f:
                f.write(json.dumps({k: metrics[0][k] for k in ("step", "queries_per_s")}) + "\n")

    stage = Stage.model_validate({
        "name": "bench", "loss": {"name": "margin_mse"},
        "train": {"num_workers": 1, "cpus_per_worker": args.threads, "batch_size": args.batch_size,
                  "max_steps": args.steps, "lr": 2e-5, "warmup_ratio": 0.0,
                  "log_every": args.warmup, "max_grad_norm": 1.0}})
    config = WorkerConfig(
        stage=stage.model_dump(mode="json"), student_path=model_path,
        student_options={"query_max_length": args.query_max_length,
                         "passage_max_length": args.passage_max_length},
        list_size=args.negatives + 1, steps_per_epoch=len(groups) // args.batch_size,
        total_steps=args.steps)
    make_trainer(config, ray.data.from_items(groups), stage, "train-throughput", storage,
                 [Rates()]).fit()
    with open(log_file) as f:
        reports = [json.loads(line) for line in f]
    steady = [r for r in reports if r["step"] > args.warmup]
    if not steady:
        raise RuntimeError(f"no report after the {args.warmup} warmup steps: {reports}")
    steps = np.diff([args.warmup, *(r["step"] for r in steady)])
    seconds = sum(n * args.batch_size / r["queries_per_s"] for n, r in zip(steps, steady,
                                                                          strict=True))
    return float(steps.sum() * args.batch_size / seconds)


def sentence_transformers_loop(args, groups, model_path) -> float:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
        losses,
    )
    from transformers import TrainerCallback

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SentenceTransformer(model_path, device="cpu")
    model.max_seq_length = args.passage_max_length
    rows = {"query": [g["query"] for g in groups], "positive": [g["texts"][0] for g in groups]}
    for j in range(args.negatives):
        rows[f"negative_{j + 1}"] = [g["texts"][j + 1] for g in groups]
    rows["label"] = [[g["teacher_scores"][0] - s for s in g["teacher_scores"][1:]] for g in groups]
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.start = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            times.append(time.perf_counter() - self.start)

    with tempfile.TemporaryDirectory() as out:
        training = SentenceTransformerTrainingArguments(
            output_dir=out, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
            learning_rate=2e-5, report_to=[], save_strategy="no", logging_strategy="no",
            use_cpu=True, dataloader_drop_last=True, seed=0)
        trainer = SentenceTransformerTrainer(
            model=model, args=training, train_dataset=Dataset.from_dict(rows),
            loss=losses.MarginMSELoss(model), callbacks=[Timer()])
        trainer.train()
    return args.batch_size * (args.steps - args.warmup) / sum(times[args.warmup:])


def main(argv=None) -> dict:
    args = parse_args(argv)
    from raykd.students import minilm_path

    model_path = minilm_path()
    groups = build_groups(args.batch_size * args.steps, args.negatives)
    print(f"machine: {os.cpu_count()} CPU cores ({platform.machine()}), GPU: "
          f"{'yes' if torch.cuda.is_available() else 'none'}; torch {torch.__version__}")
    print(f"model: all-MiniLM-L6-v2 student, Margin-MSE, {args.batch_size} queries x "
          f"(1 + {args.negatives}) passages per step, lengths {args.query_max_length}/"
          f"{args.passage_max_length}, {args.steps} steps ({args.warmup} untimed), "
          f"{args.threads} torch threads each")
    rates = {}
    with tempfile.TemporaryDirectory() as storage:
        rates["ray_train"] = ray_train_loop(args, groups, model_path, storage)
    rates["plain_torch"] = plain_loop(args, groups, model_path)
    if not args.skip_st:
        rates["sentence_transformers"] = sentence_transformers_loop(args, groups, model_path)
    base = rates["plain_torch"]
    print(f"\n{'loop':<24} {'queries/s':>10} {'passages/s':>11} {'vs plain':>9}")
    for name, rate in rates.items():
        print(f"{name:<24} {rate:>10.2f} {rate * (args.negatives + 1):>11.2f} "
              f"{rate / base:>9.3f}")
    print(f"\nray_train / plain_torch = {rates['ray_train'] / base:.3f} (target >= 0.9)")
    return rates


if __name__ == "__main__":
    main()
