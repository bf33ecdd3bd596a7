"""Evaluate a student (default: the bundled MiniLM) or BM25 by full retrieval.

    raykd evaluate                              # all-MiniLM-L6-v2 zero-shot on SciFact test
    raykd evaluate --model bm25                 # BM25 baseline
    raykd evaluate --model outputs/adam/student --split dev
    raykd evaluate --data /path/to/beir/nfcorpus --split test --rel 1
    raykd evaluate --late-interaction --similarity l2 --mask-punctuation \\
        --query-max-length 64                   # MiniLM token vectors, MaxSim

Checks the split's qrels against the corpus before any work (a judged passage missing from the
corpus is one line naming the qrels file and the id, exit 2). Prints a metrics table and
writes `run.trec` and `metrics.json` to `--out`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from raykd.commands import describe
from raykd.data.beir import BeirDataset
from raykd.datasets import scifact_dir
from raykd.errors import one_line_errors
from raykd.eval.late_interaction import late_interaction_retrieval
from raykd.eval.retrieval import bm25_retrieval, dense_retrieval, format_table
from raykd.runtime import add_verbose_argument, init_ray, setup_logging
from raykd.students import resolve_model

PROG = "raykd evaluate"


def parse_args(argv=None, prog: str = PROG) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=describe(__doc__, PROG, prog),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm",
                   help="'minilm' (bundled), 'bm25', a student folder or an HF encoder path")
    p.add_argument("--data", default=str(scifact_dir()), help="a BEIR-layout dataset folder")
    p.add_argument("--split", default="test", help="qrels split to evaluate (default: test)")
    p.add_argument("--passage-max-length", type=int, default=256, help="passage max length in tokens")
    p.add_argument("--query-max-length", type=int, default=256, help="query max length in tokens")
    p.add_argument("--k", type=int, default=1000, help="retrieval depth")
    p.add_argument("--index", choices=("flat", "ivf"), default="flat", help="faiss index kind")
    p.add_argument("--rel", type=int, default=1, help="minimum relevance for binary measures")
    p.add_argument("--concurrency", type=int, default=2, help="encoder actors")
    p.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per encoder actor")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--late-interaction", action="store_true",
                   help="score by MaxSim over token vectors (faiss over the corpus tokens, then "
                        "exact MaxSim), as CollectiveKD's student, instead of one vector a text")
    p.add_argument("--similarity", choices=("cosine", "l2", "dot"), default=None,
                   help="late interaction: token similarity (default: the model's own)")
    p.add_argument("--mask-punctuation", action="store_true",
                   help="late interaction: drop punctuation tokens from passages")
    p.add_argument("--embedding-cache", default="outputs/embedding_cache",
                   help="reuse corpus embeddings of the same model ('' to disable)")
    p.add_argument("--out", default=None, help="output folder (default: outputs/evaluate/<name>-<split>)")
    add_verbose_argument(p)
    return p.parse_args(argv)


def load_dataset(data: str, split: str) -> BeirDataset:
    """The dataset, its split's qrels checked against the corpus before any work: a bad folder,
    a missing split or a judged passage absent from the corpus is one line (the file and the
    first such id) and exit 2."""
    dataset = BeirDataset.from_dir(data)
    dataset.check_qrels_against_corpus(split)
    return dataset


@one_line_errors()
def main(argv=None, prog: str = PROG) -> dict:
    args = parse_args(argv, prog)
    if (args.similarity or args.mask_punctuation) and not args.late_interaction:
        raise SystemExit("error: --similarity and --mask-punctuation need --late-interaction")
    setup_logging(verbose_flag=args.verbose)
    dataset = load_dataset(args.data, args.split)
    start = time.perf_counter()
    if args.model == "bm25":
        result = bm25_retrieval(dataset, args.split, k=args.k, rel=args.rel)
    else:
        init_ray()
        name = "minilm-zero-shot" if args.model == "minilm" else Path(args.model).name
        options = {"passage_max_length": args.passage_max_length,
                   "query_max_length": args.query_max_length}
        common = dict(k=args.k, concurrency=args.concurrency, num_gpus=args.num_gpus,
                      batch_size=args.batch_size, rel=args.rel,
                      cache_dir=args.embedding_cache or None)
        if args.late_interaction:
            if args.similarity:
                options["similarity"] = args.similarity
            if args.mask_punctuation:
                options["mask_punctuation"] = True
            result = late_interaction_retrieval(
                resolve_model(args.model), dataset, args.split, name=f"{name}-late-interaction",
                student_options=options, **common)
        else:
            result = dense_retrieval(resolve_model(args.model), dataset, args.split, name=name,
                                     index_kind=args.index, student_options=options, **common)
    wall = time.perf_counter() - start
    out = Path(args.out or f"outputs/evaluate/{result.name}-{args.split}")
    result.seconds["wall"] = wall
    result.save(out)
    print(f"\n{Path(args.data).name} {args.split}: {len(result.run)} queries, wall {wall:.0f}s")
    print(format_table([result]))
    print(f"\nrun and metrics written to {out}/")
    return result.metrics

