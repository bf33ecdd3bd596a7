"""Memory and time at corpus scale: mining, teacher scoring and one training epoch, 100k vs 1M.

    python bench/scale.py                      # 100k and 1M passages, side by side
    python bench/scale.py --quick              # 10k and 100k
    python bench/scale.py --sizes 50000,200000 --source union

Per size, in its own subprocess with its own local Ray instance (so peaks are per size):

1. a seeded synthetic BEIR folder, generated as a stream: `corpus.jsonl` (N passages of
   pseudo-words drawn from a Zipf-like vocabulary), one query per `--passages-per-query`
   passages (4 words of its positive passage) and `qrels/train.tsv`; the number of queries, so
   of groups and pairs, scales with the corpus;
2. mining: `raykd.negatives.mine_negatives` (dense by default: the corpus encoded by a Ray Data
   actor pool with a tiny random 2-layer BERT into the embedding store, searched with faiss in
   an actor, `--mining-index` auto: flat at 100k, IVF at 1M; `--source bm25|union` adds bm25s),
   streamed per chunk of 1024 queries, 1 positive + `--num-negatives` negatives per query,
   written as parquet;
3. teacher scoring: `score_candidate_groups` with the toy lexical-overlap teacher on the Ray
   Data actor pool (cache off);
4. one training epoch: `RecipeRunner.train` (Ray Train, 1 DDP worker, the tiny student, KL).

After the timed phases, `--recall-queries` queries are searched in a Ray task with the
mining index and with exact flat search over the same stored vectors: recall@depth of the
index mining used against exact search (not timed, not in the memory peaks).

A background thread samples the RSS of the driver and of every Ray worker process (`ray::*`
titles) and of the other Ray processes (raylet, GCS, ...) every `--interval` seconds, per phase.
The table reports the peaks and the time per 1k pairs (mining + scoring + training, generation
and Ray start-up excluded), and the ratios of the last size to the first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

for _key, _value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
                     ("TOKENIZERS_PARALLELISM", "false"), ("RAY_USAGE_STATS_ENABLED", "0")):
    os.environ.setdefault(_key, _value)

PHASES = ("mine", "score", "train")
MIB = 1024 * 1024


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000,1000000", help="corpus sizes (passages), comma "
                   "separated; ratios are last / first")
    p.add_argument("--quick", action="store_true", help="10k and 100k passages")
    p.add_argument("--out", default="outputs/bench_scale", help="data and run folder")
    p.add_argument("--passages-per-query", type=int, default=100,
                   help="one training query per this many passages")
    p.add_argument("--source", default="dense", choices=("dense", "bm25", "union"))
    p.add_argument("--depth", type=int, default=50)
    p.add_argument("--mining-index", default="auto", choices=("auto", "flat", "ivf"),
                   help="dense mining's faiss index")
    p.add_argument("--recall-queries", type=int, default=200,
                   help="queries for the index's recall against flat (0: skip)")
    p.add_argument("--num-negatives", type=int, default=7)
    p.add_argument("--concurrency", type=int, default=2, help="encoding / teacher actors")
    p.add_argument("--batch-size", type=int, default=64, help="training queries per step")
    p.add_argument("--object-store-mib", type=int, default=1024)
    p.add_argument("--interval", type=float, default=0.2, help="RSS sampling period (s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep each size's data and outputs")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.sizes = [10_000, 100_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    return args


# ------------------------------------------------------------------ synthetic data


def _vocabulary(rng, size: int = 20_000) -> list[str]:
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "pe", "da", "gu", "ri", "zo",
                 "be", "fa", "ho", "ju", "xi", "we", "qu"]
    words = set()
    while len(words) < size:
        n = int(rng.integers(2, 5))
        words.add("".join(syllables[i] for i in rng.integers(0, len(syllables), n)))
    return sorted(words)


def generate_beir(root: Path, num_passages: int, passages_per_query: int, seed: int,
                  chunk: int = 10_000) -> dict:
    """Write a seeded synthetic BEIR folder chunk by chunk (never the whole corpus in memory)."""
    import numpy as np

    marker = root / "_generated.json"
    spec = {"passages": num_passages, "passages_per_query": passages_per_query, "seed": seed}
    if marker.exists() and json.loads(marker.read_text()).get("spec") == spec:
        return json.loads(marker.read_text())
    if root.exists():
        shutil.rmtree(root)
    (root / "qrels").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    vocab = np.array(_vocabulary(rng))
    weights = 1.0 / (np.arange(len(vocab)) + 20.0)
    weights /= weights.sum()
    queries = 0
    with open(root / "corpus.jsonl", "w") as corpus, open(root / "queries.jsonl", "w") as qf, \
            open(root / "qrels" / "train.tsv", "w") as qrels:
        qrels.write("query-id\tcorpus-id\tscore\n")
        for start in range(0, num_passages, chunk):
            n = min(chunk, num_passages - start)
            words = vocab[rng.choice(len(vocab), size=(n, 24), p=weights)]
            lines = []
            for i in range(n):
                pid = f"p{start + i}"
                row = words[i]
                lines.append(json.dumps({"_id": pid, "title": " ".join(row[:3]),
                                         "text": " ".join(row[3:])}) + "\n")
                if (start + i) % passages_per_query == 0:
                    qid = f"q{queries}"
                    picks = rng.choice(24, size=4, replace=False)
                    qf.write(json.dumps({"_id": qid, "text": " ".join(row[picks])}) + "\n")
                    qrels.write(f"{qid}\t{pid}\t1\n")
                    queries += 1
            corpus.writelines(lines)
    info = {"spec": spec, "queries": queries,
            "corpus_bytes": (root / "corpus.jsonl").stat().st_size}
    marker.write_text(json.dumps(info))
    return info


def make_tiny_encoder(folder: Path, seed: int = 0) -> Path:
    """A 2-layer, 32-wide BERT with random weights and MiniLM's tokenizer (as in the tests)."""
    if (folder / "config.json").exists():
        return folder
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from raykd.students import minilm_path

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=512)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# ------------------------------------------------------------------ memory sampling


class RssSampler(threading.Thread):
    """Peak RSS of the driver, of Ray worker processes and of the other Ray processes, per phase."""

    def __init__(self, interval: float):
        super().__init__(daemon=True)
        import psutil

        self.psutil = psutil
        self.me = psutil.Process()
        self.interval = interval
        self.phase = "setup"
        self.peaks: dict[str, dict[str, float]] = {}
        self._halt = threading.Event()

    def sample(self) -> None:
        psutil = self.psutil
        driver = self.me.memory_info().rss
        worker_max = worker_sum = system_sum = 0
        for proc in self.me.children(recursive=True):
            try:
                rss = proc.memory_info().rss
                title = (proc.cmdline() or [""])[0]
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            if title.startswith("ray::"):
                worker_max = max(worker_max, rss)
                worker_sum += rss
            else:
                system_sum += rss
        peak = self.peaks.setdefault(self.phase, {})
        for name, value in (("driver", driver), ("worker_max", worker_max),
                            ("workers_sum", worker_sum), ("ray_system", system_sum)):
            peak[name] = max(peak.get(name, 0), value / MIB)

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.sample()

    def overall(self, phases=PHASES) -> dict[str, float]:
        out: dict[str, float] = {}
        for phase in phases:
            for name, value in self.peaks.get(phase, {}).items():
                out[name] = max(out.get(name, 0), value)
        return out


# ------------------------------------------------------------------ one size


def run_size(args, size: int) -> dict:
    import ray

    from raykd.config import recipe_from_dict
    from raykd.negatives import mine_negatives
    from raykd.pipeline.runner import RecipeRunner
    from raykd.teachers.scoring import score_candidate_groups
    from raykd.teachers.toy import LexicalOverlapTeacher

    out = Path(args.out).resolve()
    tiny = make_tiny_encoder(out / "tiny_encoder")
    data = out / f"data-{size}"
    t0 = time.perf_counter()
    info = generate_beir(data, size, args.passages_per_query, args.seed)
    seconds = {"generate": time.perf_counter() - t0}
    work = out / f"run-{size}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)

    sampler = RssSampler(args.interval)
    sampler.start()
    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
             object_store_memory=args.object_store_mib * MIB)
    ray.data.DataContext.get_current().enable_progress_bars = False
    seconds["ray_start"] = time.perf_counter() - t0
    options = {"query_max_length": 16, "passage_max_length": 32}
    try:
        sampler.phase = "mine"
        t0 = time.perf_counter()
        mining = mine_negatives(data, "train", work / "candidates", source=args.source,
                                model=str(tiny), depth=args.depth,
                                num_negatives=args.num_negatives, fmt="parquet",
                                concurrency=args.concurrency, batch_size=256,
                                student_options=options, seed=args.seed,
                                index_kind=args.mining_index, cache_dir=str(work / "store"))
        seconds["mine"] = time.perf_counter() - t0

        sampler.phase = "score"
        t0 = time.perf_counter()
        scoring = score_candidate_groups(work / "candidates", work / "scored",
                                         LexicalOverlapTeacher, num_shards=4,
                                         concurrency=args.concurrency, batch_size=256,
                                         groups_per_batch=64, cache=None)
        seconds["score"] = time.perf_counter() - t0

        sampler.phase = "train"
        recipe = recipe_from_dict({
            "name": f"scale-{size}", "storage": str(work / "storage"),
            "student": {"model": str(tiny), **options},
            "tracking": {"enabled": False}, "test_split": None,
            "stages": [{"name": "kl", "data": {"dataset": str(data), "candidates":
                                               str(work / "scored")},
                        "loss": {"name": "kl"}, "eval": {"split": None},
                        "train": {"batch_size": args.batch_size, "epochs": 1, "lr": 1e-4,
                                  "num_workers": 1, "cpus_per_worker": 1,
                                  "log_every": 50, "seed": args.seed}}]})
        runner = RecipeRunner(recipe, echo=lambda msg: print(msg, file=sys.stderr))
        stage = runner.stages[0]
        t0 = time.perf_counter()
        _, steps = runner.train(0, stage, str(tiny), str(work / "scored"),
                                runner.stage_dir(0, stage), None)
        seconds["train"] = time.perf_counter() - t0
        sampler.phase = "recall"
        recall = (ray.get(ray.remote(index_recall).remote(
            work / "store", str(tiny), data, args.recall_queries, args.depth,
            args.mining_index, options)) if args.recall_queries and args.source != "bm25"
            else None)
    finally:
        sampler.stop()
        ray.shutdown()
    pairs = mining.positives + mining.negatives
    busy = sum(seconds[p] for p in PHASES)
    result = {
        "size": size, "queries": info["queries"], "groups": mining.groups, "pairs": pairs,
        "scored_pairs": scoring.pairs, "steps": steps, "seconds": seconds, "recall": recall,
        "mining_seconds": mining.seconds,
        "s_per_1k_pairs": busy / (pairs / 1000), "peaks": sampler.overall(),
        "phase_peaks": {p: sampler.peaks.get(p, {}) for p in ("setup", *PHASES)},
    }
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return result


def index_recall(store_dir: Path, model: str, data: Path, count: int, depth: int, kind: str,
                 options: dict) -> dict:
    """Recall@depth of the `kind` index mining used against exact flat search, over the stored
    vectors, for the first `count` training queries (run in a Ray task)."""
    import numpy as np

    from raykd.data.beir import BeirDataset
    from raykd.index.faiss_index import resolve_kind
    from raykd.index.store import EmbeddingStore
    from raykd.students import BiEncoder

    (folder,) = [p for p in Path(store_dir).iterdir() if EmbeddingStore.exists(p)]
    store = EmbeddingStore.load(folder, mmap=True)
    texts = list(BeirDataset.from_dir(data).queries("train").values())[:count]
    vectors = BiEncoder.from_pretrained(model, **options).encode_queries(texts, batch_size=256)
    index = store.index(kind)
    found = index.search(vectors, depth)[1]
    exact = store.index("flat").search(vectors, depth)[1]
    recall = float(np.mean([len(set(a) & set(b)) / len(a)
                            for a, b in zip(exact, found, strict=True)]))
    return {"kind": resolve_kind(kind, len(store.pids)), "nlist": getattr(index, "nlist", None),
            "nprobe": getattr(index, "nprobe", None), "queries": len(texts), "depth": depth,
            "recall": recall}


# ------------------------------------------------------------------ the table


def print_table(results: list[dict]) -> None:
    first, last = results[0], results[-1]
    heads = [f"{r['size']:,} passages" for r in results]
    ratio_head = f"{last['size'] // 1000}k / {first['size'] // 1000}k"
    print("| | " + " | ".join(heads) + f" | {ratio_head} |")
    print("| --- |" + " --- |" * (len(results) + 1))

    def line(name, get, fmt="{:.0f}", ratio=True):
        values = [get(r) for r in results]
        tail = f" {values[-1] / values[0]:.2f} |" if ratio and values[0] else " |"
        print(f"| {name} | " + " | ".join(fmt.format(v) for v in values) + " |" + tail)

    line("queries = groups", lambda r: r["groups"], "{:,}")
    line("pairs", lambda r: r["pairs"], "{:,}")
    line("peak RSS, driver (MiB)", lambda r: r["peaks"]["driver"])
    line("peak RSS, largest Ray worker (MiB)", lambda r: r["peaks"]["worker_max"])
    line("peak RSS, all Ray workers (MiB)", lambda r: r["peaks"]["workers_sum"])
    line("peak RSS, raylet + GCS + other Ray (MiB)", lambda r: r["peaks"]["ray_system"])
    for phase in PHASES:
        line(f"driver peak in {phase} (MiB)", lambda r, p=phase: r["phase_peaks"][p]["driver"])
        line(f"largest worker in {phase} (MiB)",
             lambda r, p=phase: r["phase_peaks"][p]["worker_max"])
    for phase in PHASES:
        line(f"{phase} (s)", lambda r, p=phase: r["seconds"][p], "{:.1f}")
    for part, name in (("dense", "encoding + index + search"), ("texts", "passage texts"),
                       ("write", "groups written")):
        line(f"mining: {name} (s)", lambda r, p=part: r["mining_seconds"].get(p, 0.0), "{:.1f}")
    line("mine + score + train per 1k pairs (s)", lambda r: r["s_per_1k_pairs"], "{:.2f}")
    for phase in PHASES:
        line(f"{phase} per 1k pairs (s)",
             lambda r, p=phase: r["seconds"][p] / (r["pairs"] / 1000), "{:.2f}")
    line("generation (s, not timed above)", lambda r: r["seconds"]["generate"], "{:.1f}",
         ratio=False)
    if all(r.get("recall") for r in results):
        print("| mining index | " + " | ".join(
            f"{r['recall']['kind']}, nlist {r['recall']['nlist']}, nprobe {r['recall']['nprobe']}"
            if r["recall"]["kind"] == "ivf" else "flat" for r in results) + " | |")
        line(f"recall@{results[0]['recall']['depth']} against flat "
             f"({results[0]['recall']['queries']} queries)", lambda r: r["recall"]["recall"],
             "{:.3f}", ratio=False)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(run_size(args, args.child)))
        return
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    make_tiny_encoder(out / "tiny_encoder")
    results = []
    forwarded, given = [], list(argv if argv is not None else sys.argv[1:])
    while given:  # the child gets every option but the sizes
        item = given.pop(0)
        if item == "--sizes":
            given.pop(0)
        elif item != "--quick" and not item.startswith("--sizes="):
            forwarded.append(item)
    for size in args.sizes:
        print(f"[scale] {size:,} passages ...", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, __file__, *forwarded, "--child", str(size)],
                              stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"size {size} failed (exit {proc.returncode})")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        (out / f"result-{size}.json").write_text(json.dumps(result, indent=2))
        results.append(result)
        print(f"[scale] {size:,}: {json.dumps(result)}", file=sys.stderr, flush=True)
    import psutil

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}; "
          f"source={args.source}, 1 query per {args.passages_per_query} passages, "
          f"1+{args.num_negatives} candidates per group")
    print_table(results)


if __name__ == "__main__":
    main()
