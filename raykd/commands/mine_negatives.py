"""Mine hard negatives for a split and write candidate groups.

    raykd mine-negatives                                    # SciFact train, BM25 top-100
    raykd mine-negatives --negatives-from union --model minilm --num-negatives 15
    raykd mine-negatives --negatives-from dense --sampling hardest --depth 50 \\
        --out outputs/negatives/scifact-train-dense.parquet
    raykd mine-negatives --negatives-from student --model outputs/prod/stage1/student \\
        --sampling window --window 5 100 --num-shards 4 --format parquet

A group holds a query's positives first, then its negatives. Prints counts (groups, positives,
negatives, queries skipped, recall of the top-k) and timings; writes the groups plus a
`.mining.yaml` record of the parameters next to them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from raykd.commands import describe
from raykd.datasets import scifact_dir
from raykd.errors import one_line_errors
from raykd.index.faiss_index import DEFAULT_NPROBE, FLAT_BELOW, INDEX_KINDS
from raykd.negatives import SOURCES, mine_negatives
from raykd.negatives.sampling import SAMPLINGS
from raykd.runtime import add_verbose_argument, init_ray, setup_logging

PROG = "raykd mine-negatives"


def parse_args(argv=None, prog: str = PROG) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=describe(__doc__, PROG, prog),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(scifact_dir()), help="a BEIR-layout dataset folder")
    p.add_argument("--split", default="train", help="qrels split whose queries get groups")
    p.add_argument("--negatives-from", choices=SOURCES, default="bm25",
                   help="bm25, dense (--model), union (both, interleaved) or student (--model)")
    p.add_argument("--model", default="minilm",
                   help="dense retriever: 'minilm' (bundled), a student folder or an HF path")
    p.add_argument("--depth", type=int, default=100, help="retrieval depth to sample from")
    p.add_argument("--num-negatives", type=int, default=7, help="negatives per query")
    p.add_argument("--sampling", choices=SAMPLINGS, default="random")
    p.add_argument("--window", type=int, nargs=2, default=(0, 100), metavar=("START", "END"),
                   help="rank window [START, END) for --sampling window")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--rel", type=int, default=1, help="lowest qrels grade that is a positive")
    p.add_argument("--num-shards", type=int, default=1, help="files to write (needs a folder)")
    p.add_argument("--format", choices=("jsonl", "jsonl.gz", "parquet"), default=None,
                   help="output format when --out is a folder (default jsonl)")
    p.add_argument("--mining-index", choices=INDEX_KINDS, default="auto",
                   help="dense search: flat (exact), ivf, or auto (flat below "
                        f"{FLAT_BELOW:,} passages, ivf above)")
    p.add_argument("--mining-nprobe", type=int, default=None,
                   help=f"IVF lists visited per query (default {DEFAULT_NPROBE})")
    p.add_argument("--concurrency", type=int, default=2, help="corpus encoder actors")
    p.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per encoder actor")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--passage-max-length", type=int, default=256, help="passage max length (dense)")
    p.add_argument("--out", default=None,
                   help="a .jsonl[.gz]/.parquet file or a folder (default: "
                        "outputs/negatives/<data>-<split>-<source>.jsonl)")
    add_verbose_argument(p)
    return p.parse_args(argv)


@one_line_errors()
def main(argv=None, prog: str = PROG):
    args = parse_args(argv, prog)
    setup_logging(verbose_flag=args.verbose)
    out = args.out or (f"outputs/negatives/{Path(args.data).name}-{args.split}-{args.negatives_from}"
                       + (".jsonl" if args.num_shards == 1 and not args.format else ""))
    if args.negatives_from != "bm25":
        init_ray()
    start = time.perf_counter()
    report = mine_negatives(
        args.data, args.split, out, source=args.negatives_from, model=args.model, depth=args.depth,
        num_negatives=args.num_negatives, sampling=args.sampling, window=tuple(args.window),
        seed=args.seed, min_rel=args.rel, num_shards=args.num_shards, fmt=args.format,
        concurrency=args.concurrency, num_gpus=args.num_gpus, batch_size=args.batch_size,
        student_options={"passage_max_length": args.passage_max_length},
        index_kind=args.mining_index, nprobe=args.mining_nprobe)
    wall = time.perf_counter() - start
    print(f"\n{Path(args.data).name} {args.split} / {args.negatives_from} "
          f"(depth {args.depth}, {args.sampling}, seed {args.seed}):")
    print(f"  {report.summary()}")
    print("  timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in report.seconds.items())
          + f", wall {wall:.1f}s")
    print("  written: " + ", ".join(report.outputs))
    return report

