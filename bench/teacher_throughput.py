"""Teacher-scoring throughput: the Ray Data actor pool against a plain torch loop, side by side.

    python bench/teacher_throughput.py                    # 10,000 pairs (target ratio >= 0.9)
    python bench/teacher_throughput.py --quick            # 640 pairs, a smoke run
    python bench/teacher_throughput.py --pairs 50000 --concurrency 4 --threads-per-actor 4

One run, one model, one data set, one batch size:

- the model: a cross-encoder made from the bundled all-MiniLM-L6-v2 encoder with a freshly
  initialised (seeded) one-logit head (`BertForSequenceClassification`, num_labels=1), saved
  to a temporary folder; both sides load those same weights;
- the data: SciFact queries paired with SciFact passages (`--group-size` per query);
- the pool: `score_dataset` (the production path: `TeacherScorer` actors building the
  `cross_encoder` teacher through `build_teacher`), cache disabled, `--concurrency` actors of
  `--threads-per-actor` torch threads each, `--num-gpus` per actor when CUDA is present;
- the plain loop: one process, the same pairs sorted by length, tokenised and run through the
  model in batches of the same size under `torch.no_grad`, with torch threads = concurrency x
  threads-per-actor (the pool's total), on the same device.

The pool's time runs from building the dataset to the last scored row: it includes starting the
actors and loading the model in each. The loop's time excludes loading (done before the clock
starts). So the ratio is conservative for the pool. The two sides' scores are compared too.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from raykd.runtime import offline_models


def parse_args(argv=None) -> argparse.Namespace:
    cores = os.cpu_count() or 1
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=10_000, help="(query, passage) pairs to score")
    p.add_argument("--quick", action="store_true", help="640 pairs")
    p.add_argument("--group-size", type=int, default=10, help="candidates per query")
    p.add_argument("--batch-size", type=int, default=32, help="pairs per forward pass")
    p.add_argument("--groups-per-batch", type=int, default=16,
                   help="groups per actor call (16 x 10 pairs = 5 full batches of 32)")
    p.add_argument("--concurrency", type=int, default=min(cores, 2), help="teacher actors")
    p.add_argument("--threads-per-actor", type=int, default=max(1, cores // min(cores, 2)),
                   help="torch threads (and Ray CPUs) per actor")
    p.add_argument("--num-gpus", type=float, default=None,
                   help="GPUs per actor (default: 1/concurrency when CUDA is present, else 0)")
    p.add_argument("--query-max-length", type=int, default=64)
    p.add_argument("--passage-max-length", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.pairs = 640
    return args


def make_cross_encoder(folder: Path, seed: int) -> Path:
    """MiniLM encoder + a seeded, randomly initialised one-logit head (fine for throughput)."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    from raykd.students import minilm_path

    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(minilm_path(), num_labels=1)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(folder)
    return folder


def make_groups(n_pairs: int, group_size: int, seed: int) -> list[dict]:
    from raykd.data.beir import BeirDataset
    from raykd.data.records import passage_text
    from raykd.datasets import scifact_dir

    data = BeirDataset.from_dir(scifact_dir())
    queries = list(data.all_queries().items())
    passages = [(r["pid"], passage_text(r["title"], r["text"])) for r in data.iter_corpus()]
    rng = np.random.default_rng(seed)
    groups, made = [], 0
    while made < n_pairs:
        i = len(groups)
        qid, query = queries[i % len(queries)]
        m = min(group_size, n_pairs - made)
        picks = rng.choice(len(passages), m, replace=False)
        groups.append({"qid": f"{qid}#{i}", "query": query,
                       "pids": [passages[j][0] for j in picks],
                       "texts": [passages[j][1] for j in picks],
                       "labels": [0] * m})
        made += m
    return groups


def plain_loop(folder: Path, groups: list[dict], args, threads: int, device: str):
    """The baseline: one process, length-sorted batches straight through the model."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from raykd.teachers.cross_encoder import autocast_for

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).to(device).eval()
    queries = [g["query"] for g in groups for _ in g["texts"]]
    texts = [t for g in groups for t in g["texts"]]
    max_length = args.query_max_length + args.passage_max_length
    start = time.perf_counter()
    order = np.argsort([-(len(q) + len(t)) for q, t in zip(queries, texts, strict=True)],
                       kind="stable")
    scores = np.empty(len(texts), dtype=np.float32)
    with torch.no_grad():
        for s in range(0, len(order), args.batch_size):
            idx = order[s:s + args.batch_size]
            batch = tokenizer([queries[i] for i in idx], [texts[i] for i in idx], padding=True,
                              truncation="only_second", max_length=max_length,
                              return_tensors="pt").to(device)
            with autocast_for(torch.device(device)):
                logits = model(**batch).logits
            scores[idx] = logits[:, 0].float().cpu().numpy()
    seconds = time.perf_counter() - start
    keyed = {}
    k = 0
    for g in groups:
        for pid in g["pids"]:
            keyed[(g["qid"], pid)] = float(scores[k])
            k += 1
    return seconds, keyed


def actor_pool(folder: Path, groups: list[dict], args, num_gpus: float):
    """The production path: `score_dataset` over an in-memory dataset, cache disabled."""
    import pyarrow as pa
    import ray

    from raykd.config import teacher_spec
    from raykd.teachers.factory import build_teacher
    from raykd.teachers.scoring import score_dataset

    spec = teacher_spec(kind="cross_encoder", model=str(folder), batch_size=args.batch_size,
                        query_max_length=args.query_max_length,
                        passage_max_length=args.passage_max_length)
    per_block = args.groups_per_batch
    tables = [pa.Table.from_pylist(groups[i:i + per_block])
              for i in range(0, len(groups), per_block)]
    start = time.perf_counter()
    ds = ray.data.from_arrow(tables)
    scored = score_dataset(ds, functools.partial(build_teacher, spec), None,
                           concurrency=args.concurrency, num_gpus=num_gpus,
                           num_cpus=args.threads_per_actor,
                           torch_threads=args.threads_per_actor, batch_size=args.batch_size,
                           groups_per_batch=args.groups_per_batch, cache=None)
    keyed, first, pairs = {}, None, 0
    for batch in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
        if first is None:
            first = time.perf_counter() - start
        pairs += sum(batch.column("pairs_scored").to_pylist())
        for qid, pids, scores in zip(*(batch.column(c).to_pylist()
                                       for c in ("qid", "pids", "teacher_scores")), strict=True):
            keyed.update({(qid, p): s for p, s in zip(pids, scores, strict=True)})
    return time.perf_counter() - start, first, pairs, keyed


def main(argv=None) -> dict:
    args = parse_args(argv)
    offline_models()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    import ray
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    cores = os.cpu_count() or 1
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    num_gpus = args.num_gpus if args.num_gpus is not None else (
        1.0 / args.concurrency if cuda else 0.0)
    total_threads = args.concurrency * args.threads_per_actor
    groups = make_groups(args.pairs, args.group_size, args.seed)
    n_pairs = sum(len(g["pids"]) for g in groups)
    with tempfile.TemporaryDirectory(prefix="raykd-bench-") as tmp:
        folder = make_cross_encoder(Path(tmp) / "minilm-ce", args.seed)
        ray.init(num_cpus=max(cores, total_threads), include_dashboard=False,
                 log_to_driver=False, logging_level="ERROR",
                 runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                                           "TOKENIZERS_PARALLELISM": "false"}})
        ray.data.DataContext.get_current().enable_progress_bars = False
        loop_s, loop_scores = plain_loop(folder, groups, args, total_threads, device)
        pool_s, first_s, pool_pairs, pool_scores = actor_pool(folder, groups, args, num_gpus)
        ray.shutdown()
    if pool_pairs != n_pairs or set(pool_scores) != set(loop_scores):
        raise SystemExit(f"the pool scored {pool_pairs} pairs, expected {n_pairs}")
    diff = max(abs(pool_scores[k] - loop_scores[k]) for k in loop_scores)
    loop_rate, pool_rate = n_pairs / loop_s, n_pairs / pool_s
    gpu = torch.cuda.get_device_name(0) if cuda else "none"
    print(f"\nmachine: {cores} CPU cores ({platform.machine()}, {platform.processor() or '?'}), "
          f"GPU: {gpu}; torch {torch.__version__}, ray {ray.__version__}")
    print(f"model: MiniLM-L6 cross-encoder (random 1-logit head), max length "
          f"{args.query_max_length}+{args.passage_max_length}, batch {args.batch_size}, "
          f"device {device}")
    print(f"data: {n_pairs} SciFact pairs in {len(groups)} groups of {args.group_size}")
    print(f"threads: pool {args.concurrency} actors x {args.threads_per_actor} torch threads; "
          f"plain loop {total_threads} torch threads in one process (same total)")
    print(f"  plain torch loop   {loop_rate:9.1f} pairs/s   ({loop_s:.1f}s, model loaded "
          "before the clock)")
    print(f"  ray data pool      {pool_rate:9.1f} pairs/s   ({pool_s:.1f}s end to end, incl. "
          f"actor start + model load; first rows after {first_s:.1f}s)")
    print(f"  ratio pool/loop    {pool_rate / loop_rate:9.3f}   (target >= 0.9 at 10k pairs)")
    print(f"  max |score difference| between the two: {diff:.2e}")
    return {"pairs": n_pairs, "loop_pairs_per_s": loop_rate, "pool_pairs_per_s": pool_rate,
            "ratio": pool_rate / loop_rate, "max_abs_diff": diff}


if __name__ == "__main__":
    main()
