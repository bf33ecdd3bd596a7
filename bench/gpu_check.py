"""The GPU check: one command, a few minutes on one GPU, no downloads.

    python bench/gpu_check.py                # on a CUDA machine (exit 2 without one)
    python bench/gpu_check.py --cpu-smoke    # every part at a tiny size on CPU (fp32, gloo)

It measures, in one run, and prints and writes to `outputs/bench/gpu_check.json`:

1. training through the real Ray Train loop (`raykd.train.trainer.make_trainer`, the workers'
   `train_loop_per_worker`, DeepSpeed bf16) of a 6-layer and a 12-layer random-init BERT
   student (hidden 768, MiniLM's tokenizer) under ZeRO-2 and ZeRO-3: steps/s, peak GPU memory,
   and model FLOPs utilisation, MFU = 6 x N x tokens per step x steps/s / the GPU's dense bf16
   peak, with N the parameters outside the embedding tables (a lookup does no matmul) and
   tokens = queries x (query length + candidates x passage length), every text filling its
   max length. Peaks by GPU name are in `BF16_PEAK_TFLOPS` (`--peak-tflops` overrides);
2. resume from a ZeRO-3 checkpoint: the 6-layer ZeRO-3 run again, its worker SIGKILLed after a
   checkpoint; every loss reported after the restore against the undisturbed run's;
3. faiss-gpu against faiss-cpu (raykd's `DenseIndex`, exact inner product) on the same vectors:
   recall@10 of both and the speed ratio ("faiss-gpu: not available" when faiss has no GPU);
4. teacher scoring: the Ray Data actor pool (`raykd.teachers.scoring.score_dataset`, the
   production path) against a plain torch loop on the same GPU, as `bench/teacher_throughput.py`.

Steps/s is timed in the worker (a step hook stamps every optimiser step); the first
`--warmup` steps and the steps that follow a checkpoint save are not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # bench/teacher_throughput.py, run as a script or imported

from raykd.runtime import offline_models  # noqa: E402

# Dense bf16 tensor-core peaks (TFLOPs, no sparsity), by a substring of the CUDA device name;
# the first match wins, so the more specific names come first.
BF16_PEAK_TFLOPS = [
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),  # SXM
    ("GH200", 989.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10G", 125.0),
    ("A10", 125.0),
    ("A6000", 155.0),
]
FLOPS_FORMULA = ("MFU = 6 x N x T x steps/s / peak; N = parameters outside the embedding "
                 "tables, T = tokens per optimiser step = queries x (query_len + candidates x "
                 "passage_len) (texts fill their max length); attention's own FLOPs are not "
                 "counted")
EXIT_NO_CUDA = 2


def peak_tflops(name: str) -> float | None:
    for key, peak in BF16_PEAK_TFLOPS:
        if key.lower() in name.lower():
            return peak
    return None


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu-smoke", action="store_true",
                   help="every part at a tiny size on CPU (fp32, gloo): tests the script")
    p.add_argument("--out", default=str(HERE.parent / "outputs" / "bench" / "gpu_check.json"))
    p.add_argument("--layers", default="6,12", help="student depths to train")
    p.add_argument("--zero", default="2,3", help="ZeRO stages to train")
    p.add_argument("--steps", type=int, default=40, help="optimiser steps per training run")
    p.add_argument("--warmup", type=int, default=8, help="steps not timed")
    p.add_argument("--batch-size", type=int, default=32, help="queries per step")
    p.add_argument("--candidates", type=int, default=8, help="passages per query (1 positive)")
    p.add_argument("--query-max-length", type=int, default=32)
    p.add_argument("--passage-max-length", type=int, default=128)
    p.add_argument("--checkpoint-every", type=int, default=10)
    p.add_argument("--faiss-corpus", type=int, default=500_000)
    p.add_argument("--faiss-queries", type=int, default=2_000)
    p.add_argument("--faiss-dim", type=int, default=768)
    p.add_argument("--pairs", type=int, default=20_000, help="teacher scoring pairs")
    p.add_argument("--scoring-concurrency", type=int, default=2,
                   help="scoring actors sharing the one GPU")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the GPU's dense bf16 peak, for a GPU not in the table")
    args = p.parse_args(argv)
    if args.cpu_smoke:
        args.steps, args.warmup, args.batch_size, args.candidates = 8, 2, 2, 4
        args.query_max_length, args.passage_max_length, args.checkpoint_every = 8, 16, 3
        args.faiss_corpus, args.faiss_queries, args.faiss_dim = 2_000, 50, 32
        args.pairs, args.scoring_concurrency = 48, 1
    args.layers = [int(x) for x in str(args.layers).split(",")]
    args.zero = [int(x) for x in str(args.zero).split(",")]
    if args.steps <= max(args.warmup, args.checkpoint_every + 2):
        p.error("--steps must exceed --warmup and --checkpoint-every + 2")
    return args


# ------------------------------------------------------------------ models and data


def random_student(folder: Path, layers: int, smoke: bool) -> Path:
    """A random-init BERT (hidden 768, or 32 for the smoke run) with MiniLM's tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from raykd.students import minilm_path

    torch.manual_seed(layers)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    width = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64} if smoke \
        else {"hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072}
    # Dropout off: the resumed run can follow the undisturbed one step for step.
    config = BertConfig(vocab_size=tokenizer.vocab_size, num_hidden_layers=layers,
                        max_position_embeddings=512, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, **width)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def param_counts(folder: Path) -> tuple[int, int]:
    """(all parameters, parameters outside the embedding tables)."""
    from safetensors import safe_open

    total = embed = 0
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        for key in f.keys():
            n = f.get_slice(key).get_shape()
            size = 1
            for d in n:
                size *= d
            total += size
            if key.startswith("embeddings.") and key.endswith("embeddings.weight"):
                embed += size
    return total, total - embed


def training_groups(n: int, candidates: int, seed: int = 0) -> list[dict]:
    """Groups whose texts are long enough to be cut at any max length used here."""
    from raykd.data.beir import BeirDataset
    from raykd.datasets import scifact_dir

    words = " ".join(r["text"] for _, r in zip(range(200), BeirDataset.from_dir(
        scifact_dir()).iter_corpus(), strict=False)).split()
    rng = random.Random(seed)

    def text(length: int) -> str:
        start = rng.randrange(len(words) - length)
        return " ".join(words[start:start + length])

    return [{"qid": f"q{i}", "query": text(80), "pids": [f"p{i}-{j}" for j in range(candidates)],
             "texts": [text(300) for _ in range(candidates)],
             "labels": [1] + [0] * (candidates - 1),
             "teacher_scores": [rng.gauss(0.0, 2.0) for _ in range(candidates)]}
            for i in range(n)]


# ------------------------------------------------------------------ training


class StepClock:
    """A step hook: stamps every optimiser step on rank 0 and, at the last step, writes the
    stamps and the worker's peak CUDA memory to `path` (the worker's view, not the driver's)."""

    def __init__(self, path: str, total: int):
        self.path, self.total, self.stamps = path, total, {}

    def __call__(self, step: int, rank: int) -> None:
        if rank != 0:
            return
        self.stamps[step] = time.perf_counter()
        if step == self.total:
            import torch

            peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None)
            Path(self.path).write_text(json.dumps({"stamps": self.stamps, "peak_bytes": peak}))


def report_log(path: Path):
    """A controller-side callback: one JSON line per report (it outlives worker restarts)."""
    from ray.train import UserCallback

    class _Log(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            with open(path, "a") as f:
                f.write(json.dumps({"step": metrics[0]["step"], "loss": metrics[0]["loss"],
                                    "ckpt": checkpoint is not None}) + "\n")
    return _Log()


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] \
        if path.exists() else []


def run_training(ray, args, work: Path, student: Path, layers: int, zero: int, name: str,
                 hooks: list) -> list[dict]:
    from raykd.config import Stage
    from raykd.train.loop import WorkerConfig
    from raykd.train.trainer import make_trainer, plan_steps

    gpu = not args.cpu_smoke
    groups = training_groups(args.batch_size * args.steps, args.candidates)
    stage = Stage.model_validate({"name": "gpu_check", "loss": {"name": "kl"}, "train": {
        "backend": "deepspeed", "zero_stage": zero, "num_workers": 1, "use_gpu": gpu,
        "precision": "bf16" if gpu else "fp32", "batch_size": args.batch_size, "lr": 1e-4,
        "max_steps": args.steps, "warmup_ratio": 0.0, "log_every": 5, "max_grad_norm": 1.0,
        "checkpoint_every": args.checkpoint_every, "max_failures": 1, "seed": 7,
        "cpus_per_worker": 1 if not gpu else max(1, (os.cpu_count() or 2) // 2)}})
    steps_per_epoch, total = plan_steps(len(groups), stage)
    config = WorkerConfig(
        stage=stage.model_dump(mode="json"), student_path=str(student),
        student_options={"pooling": "mean", "similarity": "dot",
                         "query_max_length": args.query_max_length,
                         "passage_max_length": args.passage_max_length},
        list_size=args.candidates, steps_per_epoch=steps_per_epoch, total_steps=total,
        step_hooks=hooks)
    log = work / f"{name}.reports.jsonl"
    trainer = make_trainer(config, ray.data.from_items(groups), stage, name,
                           str(work / "storage"), [report_log(log)])
    result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(f"training run {name} failed: {result.error}")
    return read_log(log)


def measure_training(ray, args, work: Path, layers: int, zero: int, peak: float | None) -> dict:
    student = random_student(work / f"student-{layers}", layers, args.cpu_smoke) \
        if not (work / f"student-{layers}").exists() else work / f"student-{layers}"
    params, dense = param_counts(student)
    clock_file = work / f"clock-{layers}-{zero}.json"
    name = f"train-l{layers}-z{zero}"
    started = time.perf_counter()
    reports = run_training(ray, args, work, student, layers, zero, name,
                           [StepClock(str(clock_file), args.steps)])
    wall = time.perf_counter() - started
    clock = json.loads(clock_file.read_text())
    stamps = {int(k): v for k, v in clock["stamps"].items()}
    every = args.checkpoint_every
    # A step's time is the gap to the stamp before it; a gap that holds a checkpoint save
    # (the report after a step divisible by `every`) is left out, and so is the warmup.
    gaps = [stamps[s] - stamps[s - 1] for s in range(args.warmup + 1, args.steps + 1)
            if s - 1 in stamps and (s - 1) % every]
    steps_per_s = len(gaps) / sum(gaps)
    tokens = args.batch_size * (args.query_max_length
                                + args.candidates * args.passage_max_length)
    tflops = 6.0 * dense * tokens * steps_per_s / 1e12
    return {"layers": layers, "zero_stage": zero, "precision": "fp32" if args.cpu_smoke
            else "bf16", "params": params, "non_embedding_params": dense,
            "tokens_per_step": tokens, "steps_timed": len(gaps), "steps_per_s": steps_per_s,
            "queries_per_s": steps_per_s * args.batch_size,
            "peak_gpu_mem_gib": (clock["peak_bytes"] / 2**30
                                 if clock["peak_bytes"] is not None else None),
            "model_tflops_per_s": tflops, "mfu": tflops / peak if peak else None,
            "final_loss": reports[-1]["loss"] if reports else None, "wall_s": wall,
            "reports": reports}


def measure_resume(ray, args, work: Path, reference: dict) -> dict:
    """The ZeRO-3 reference run again, SIGKILLed two steps after its first checkpoint."""
    from raykd.train.hooks import KillOnce

    layers, every = reference["layers"], args.checkpoint_every
    kill_at = every + 2
    marker = work / "killed"
    reports = run_training(ray, args, work, work / f"student-{layers}", layers, 3,
                           f"resume-l{layers}-z3", [KillOnce(kill_at, str(marker))])
    clean = {e["step"]: e["loss"] for e in reference["reports"]}
    # The restored attempt starts after the last checkpoint before the kill; a step reported
    # twice keeps its last (restored) report.
    restored = (kill_at - 1) // every * every
    after = list({e["step"]: e for e in reports if e["step"] > restored}.values())
    diffs = [abs(e["loss"] - clean[e["step"]]) for e in after]
    rel = max((d / max(abs(clean[e["step"]]), 1e-12) for d, e in zip(diffs, after,
                                                                       strict=True)), default=None)
    # CPU fp32 over gloo replays exactly; CUDA's atomics (embedding backward) may differ in the
    # last bits, which a bf16 run carries forward: "identical" there means within 1e-2.
    tolerance = 0.0 if args.cpu_smoke else 1e-2
    return {"zero_stage": 3, "layers": layers, "checkpoint_every": every, "killed_at": kill_at,
            "restored_from_step": restored, "killed": marker.exists(), "steps_compared": [e["step"] for e in after],
            "max_abs_loss_diff": max(diffs) if diffs else None, "max_rel_loss_diff": rel,
            "tolerance_rel": tolerance,
            "identical": bool(marker.exists() and after and rel is not None
                              and rel <= tolerance),
            "reports": reports}


# ------------------------------------------------------------------ faiss


def measure_faiss(args) -> dict:
    import numpy as np

    from raykd.index.faiss_index import DenseIndex, gpu_available

    rng = np.random.default_rng(0)
    n, q, dim, k = args.faiss_corpus, args.faiss_queries, args.faiss_dim, 10
    corpus = rng.standard_normal((n, dim), dtype=np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    targets = rng.choice(n, q, replace=False)  # each query is a noisy copy of one passage
    queries = corpus[targets] + 0.7 * rng.standard_normal((q, dim), dtype=np.float32) / dim**0.5
    ids = [str(i) for i in range(n)]

    def run(use_gpu: bool):
        index = DenseIndex(dim, use_gpu=use_gpu)
        index.add(ids, corpus)
        index.search(queries[:8], k)  # warm (GPU: kernels, transfers)
        start = time.perf_counter()
        _, found = index.search(queries, k)
        seconds = time.perf_counter() - start
        recall = float(np.mean([str(t) in row for t, row in zip(targets, found, strict=True)]))
        return seconds, recall, found

    cpu_s, cpu_recall, cpu_found = run(False)
    out = {"corpus": n, "queries": q, "dim": dim, "index": "flat inner product", "k": k,
           "cpu_s": cpu_s, "cpu_recall_at_10": cpu_recall, "gpu_available": gpu_available()}
    if not out["gpu_available"]:
        print("faiss-gpu: not available", flush=True)
        return out
    gpu_s, gpu_recall, gpu_found = run(True)
    overlap = float(np.mean([len(set(a) & set(b)) / k
                             for a, b in zip(cpu_found, gpu_found, strict=True)]))
    out.update({"gpu_s": gpu_s, "gpu_recall_at_10": gpu_recall, "top10_overlap": overlap,
                "recall_equal": gpu_recall == cpu_recall, "speed_ratio": cpu_s / gpu_s})
    return out


# ------------------------------------------------------------------ teacher scoring


def measure_scoring(args, work: Path, cuda: bool) -> dict:
    import teacher_throughput as tt

    concurrency = args.scoring_concurrency
    targs = tt.parse_args(["--pairs", str(args.pairs), "--concurrency", str(concurrency),
                           "--threads-per-actor", "1"])
    if args.cpu_smoke:
        targs.query_max_length, targs.passage_max_length, targs.batch_size = 16, 32, 8
    folder = tt.make_cross_encoder(work / "minilm-ce", 0)
    groups = tt.make_groups(targs.pairs, targs.group_size, 0)
    device = "cuda" if cuda else "cpu"
    num_gpus = 1.0 / concurrency if cuda else 0.0
    loop_s, loop_scores = tt.plain_loop(folder, groups, targs, concurrency, device)
    pool_s, first_s, pool_pairs, pool_scores = tt.actor_pool(folder, groups, targs, num_gpus)
    if pool_pairs != len(loop_scores) or set(pool_scores) != set(loop_scores):
        raise RuntimeError(f"the pool scored {pool_pairs} pairs, expected {len(loop_scores)}")
    diff = max(abs(pool_scores[k] - loop_scores[k]) for k in loop_scores)
    n = len(loop_scores)
    return {"pairs": n, "model": "MiniLM-L6 cross-encoder (random 1-logit head)",
            "device": device, "actors": concurrency, "gpus_per_actor": num_gpus,
            "batch_size": targs.batch_size,
            "max_length": targs.query_max_length + targs.passage_max_length,
            "loop_pairs_per_s": n / loop_s, "pool_pairs_per_s": n / pool_s,
            "ratio_pool_over_loop": (n / pool_s) / (n / loop_s), "pool_first_rows_s": first_s,
            "max_abs_score_diff": diff}


# ------------------------------------------------------------------ main


def machine(cuda: bool, peak: float | None) -> dict:
    import deepspeed
    import faiss
    import ray
    import torch

    name = torch.cuda.get_device_name(0) if cuda else "none"
    return {"gpu": name, "bf16_peak_tflops": peak, "cpu_cores": os.cpu_count(),
            "platform": platform.platform(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "deepspeed": deepspeed.__version__,
            "ray": ray.__version__, "faiss": faiss.__version__}


def print_summary(out: dict) -> None:
    m = out["machine"]
    print(f"\n== raykd GPU check ({out['mode']}) on {m['gpu']}, {m['cpu_cores']} CPU cores; "
          f"torch {m['torch']} (CUDA {m['cuda']}), deepspeed {m['deepspeed']}, ray {m['ray']}, "
          f"faiss {m['faiss']}")
    print(f"bf16 peak: {m['bf16_peak_tflops'] or 'unknown (pass --peak-tflops)'} TFLOPs; "
          f"{out['flops_formula']}")
    print(f"{'layers':>6} {'ZeRO':>4} {'prec':>5} {'N (non-emb)':>12} {'tokens/step':>11} "
          f"{'steps/s':>8} {'peak GiB':>8} {'TFLOP/s':>8} {'MFU':>6}")
    for r in out["training"]:
        mem = f"{r['peak_gpu_mem_gib']:.2f}" if r["peak_gpu_mem_gib"] is not None else "-"
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        print(f"{r['layers']:>6} {r['zero_stage']:>4} {r['precision']:>5} "
              f"{r['non_embedding_params']:>12,} {r['tokens_per_step']:>11,} "
              f"{r['steps_per_s']:>8.2f} {mem:>8} {r['model_tflops_per_s']:>8.2f} {mfu:>6}")
    res = out["resume"]
    print(f"resume from a ZeRO-3 checkpoint: killed at step {res['killed_at']} "
          f"(checkpoints every {res['checkpoint_every']}), compared steps "
          f"{res['steps_compared']}, max |loss diff| {res['max_abs_loss_diff']}, "
          f"identical (rel <= {res['tolerance_rel']}): {res['identical']}")
    fa = out["faiss"]
    if fa["gpu_available"]:
        print(f"faiss flat IP, {fa['corpus']:,} x {fa['dim']}, {fa['queries']:,} queries: "
              f"cpu {fa['cpu_s']:.3f}s recall@10 {fa['cpu_recall_at_10']:.4f}; gpu "
              f"{fa['gpu_s']:.4f}s recall@10 {fa['gpu_recall_at_10']:.4f}; "
              f"speed ratio {fa['speed_ratio']:.1f}x")
    else:
        print(f"faiss flat IP, {fa['corpus']:,} x {fa['dim']}: cpu {fa['cpu_s']:.3f}s, "
              f"recall@10 {fa['cpu_recall_at_10']:.4f}; faiss-gpu: not available")
    sc = out["scoring"]
    print(f"teacher scoring, {sc['pairs']:,} pairs on {sc['device']}: plain torch loop "
          f"{sc['loop_pairs_per_s']:.1f} pairs/s, Ray Data pool ({sc['actors']} actors) "
          f"{sc['pool_pairs_per_s']:.1f} pairs/s, ratio {sc['ratio_pool_over_loop']:.3f}, "
          f"max |score diff| {sc['max_abs_score_diff']:.2e}")
    print(f"total {out['seconds']:.0f}s; JSON: {out['json']}")


def main(argv=None) -> int:
    args = parse_args(argv)
    offline_models()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.cpu_smoke:
        print(f"gpu_check: no CUDA device (torch {torch.__version__}, CUDA "
              f"{torch.version.cuda}); run it on a GPU machine, or with --cpu-smoke to test "
              "the CPU-reachable parts", flush=True)
        return EXIT_NO_CUDA
    cuda = cuda and not args.cpu_smoke
    started = time.perf_counter()
    import ray
    import ray.cloudpickle
    import transformers

    transformers.logging.set_verbosity_error()
    ray.cloudpickle.register_pickle_by_value(sys.modules[StepClock.__module__])
    peak = args.peak_tflops or (peak_tflops(torch.cuda.get_device_name(0)) if cuda else None)
    out = {"mode": "gpu" if cuda else "cpu-smoke", "machine": machine(cuda, peak),
           "flops_formula": FLOPS_FORMULA}
    cores = os.cpu_count() or 2
    ray.init(num_cpus=max(cores, 4), num_gpus=1 if cuda else 0, include_dashboard=False,
             log_to_driver=False, logging_level="ERROR",
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                                       "TOKENIZERS_PARALLELISM": "false"}})
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        with tempfile.TemporaryDirectory(prefix="raykd-gpu-check-") as tmp:
            work = Path(tmp)
            out["training"] = []
            for layers in args.layers:
                for zero in args.zero:
                    row = measure_training(ray, args, work, layers, zero, peak)
                    print(f"[gpu_check] {layers} layers ZeRO-{zero}: "
                          f"{row['steps_per_s']:.2f} steps/s", flush=True)
                    out["training"].append(row)
            reference = next((r for r in out["training"] if r["zero_stage"] == 3),
                             None) or measure_training(ray, args, work, min(args.layers), 3,
                                                       peak)
            out["resume"] = measure_resume(ray, args, work, reference)
            print(f"[gpu_check] resume identical: {out['resume']['identical']}", flush=True)
            out["faiss"] = measure_faiss(args)
            out["scoring"] = measure_scoring(args, work, cuda)
    finally:
        ray.shutdown()
    out["seconds"] = time.perf_counter() - started
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    out["json"] = str(path)
    path.write_text(json.dumps(out, indent=2))
    print_summary(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
