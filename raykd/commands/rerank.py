"""Evaluate a teacher by re-ranking first-stage candidates (or another run's top).

    raykd rerank --teacher ensemble --split dev         # BM25 + MiniLM, z-score
    raykd rerank --teacher bm25 --split test
    raykd rerank --teacher cross_encoder --model outputs/teachers/cross-encoder-minilm \\
        --split dev --cascade 20 --cascade-run outputs/rerank/ensemble-dev/run.trec
    raykd rerank --teacher outputs/teachers/cross-encoder-minilm/teacher.yaml --split dev
    raykd rerank --teacher my_teacher.yaml --data /path/to/beir/nfcorpus --depth 50

Candidates: the union of BM25 top-`--depth` and dense (`--first-stage-model`, default MiniLM)
top-`--depth` per query; with `--cascade K --cascade-run RUN`, only the top K of RUN are
re-ranked (the rest of RUN follows). Teacher scores go through the Ray Data scoring stage and
the score cache (`--cache`), so a rerun costs no teacher call. Writes `run.trec` and
`metrics.json` under `--out` (default outputs/rerank/<name>-<split>/) and prints nDCG@10,
RR@10, R@100, R@depth, the candidate recall and the wall time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from raykd.commands import describe
from raykd.data.beir import BeirDataset
from raykd.datasets import scifact_dir
from raykd.errors import one_line_errors
from raykd.eval.rerank import (
    DEFAULT_EMBEDDING_CACHE,
    DEFAULT_SCORE_CACHE,
    TEACHER_PRESETS,
    check_rerank_options,
    rerank,
    resolve_teacher,
)
from raykd.eval.retrieval import format_table
from raykd.runtime import add_verbose_argument, init_ray, setup_logging

PROG = "raykd rerank"


def parse_args(argv=None, prog: str = PROG) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=describe(__doc__, PROG, prog),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="ensemble",
                   help=f"a preset {TEACHER_PRESETS}, a TeacherSpec YAML/JSON file or a "
                        "bundled spec's name (raykd/recipes/teachers/: bm25_contrastive)")
    p.add_argument("--model", default=None,
                   help="model of a preset (cross_encoder: required; bi_encoder/ensemble: "
                        "default minilm)")
    p.add_argument("--query-max-length", type=int, default=64, help="preset teachers")
    p.add_argument("--passage-max-length", type=int, default=256, help="preset teachers")
    p.add_argument("--batch-size", type=int, default=32, help="pairs per teacher call (presets)")
    p.add_argument("--data", default=str(scifact_dir()), help="a BEIR-layout dataset folder")
    p.add_argument("--split", default="dev", help="qrels split (default: dev)")
    p.add_argument("--depth", type=int, default=100,
                   help="first-stage depth per source (BM25 and dense)")
    p.add_argument("--first-stage-model", default="minilm", help="dense first-stage bi-encoder")
    p.add_argument("--cascade", type=int, default=None, metavar="K",
                   help="re-rank only the top K of --cascade-run")
    p.add_argument("--cascade-run", default=None, help="TREC run whose top K is re-ranked")
    p.add_argument("--name", default=None, help="run name (default: from the teacher)")
    p.add_argument("--out", default=None, help="default: outputs/rerank/<name>-<split>")
    p.add_argument("--cache", default=DEFAULT_SCORE_CACHE,
                   help="score cache folder or URI ('none' disables)")
    p.add_argument("--embedding-cache", default=DEFAULT_EMBEDDING_CACHE,
                   help="stored corpus embeddings of the dense first stage")
    p.add_argument("--concurrency", type=int, default=2, help="teacher actors")
    p.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per teacher actor")
    p.add_argument("--num-cpus", type=float, default=None, help="CPUs per teacher actor")
    p.add_argument("--groups-per-batch", type=int, default=8, help="queries per actor call")
    p.add_argument("--num-shards", type=int, default=4, help="scored shards (resume unit)")
    p.add_argument("--rel", type=int, default=1, help="minimum relevance grade")
    add_verbose_argument(p)
    return p.parse_args(argv)


@one_line_errors()
def main(argv=None, prog: str = PROG):
    args = parse_args(argv, prog)
    setup_logging(verbose_flag=args.verbose)
    # Every option is checked before Ray or any model starts.
    spec = resolve_teacher(args.teacher, args.model, query_max_length=args.query_max_length,
                           passage_max_length=args.passage_max_length,
                           batch_size=args.batch_size)
    check_rerank_options(args.depth, args.cascade_run, args.cascade, args.concurrency,
                         args.num_shards, args.groups_per_batch)
    dataset = BeirDataset.from_dir(args.data)
    dataset.qrels_path(args.split)  # a missing split fails here, naming the available ones
    init_ray()
    start = time.perf_counter()
    from raykd.eval.rerank import teacher_name

    name = args.name or (teacher_name(spec) if args.teacher not in ("ensemble", "bm25")
                         else args.teacher)
    if args.cascade and not args.name:
        name = f"{name}-cascade{args.cascade}"
    out = Path(args.out or f"outputs/rerank/{name}-{args.split}")
    result = rerank(dataset, args.split, spec, depth=args.depth,
                    first_stage_model=args.first_stage_model, cascade_run=args.cascade_run,
                    cascade_k=args.cascade, name=name, work_dir=out / "work",
                    score_cache=None if args.cache.lower() == "none" else args.cache,
                    embedding_cache=args.embedding_cache, concurrency=args.concurrency,
                    num_gpus=args.num_gpus, num_cpus=args.num_cpus,
                    groups_per_batch=args.groups_per_batch, num_shards=args.num_shards,
                    rel=args.rel, echo=print)
    wall = time.perf_counter() - start
    result.seconds["wall"] = wall
    result.save(out)
    print(f"\n{Path(args.data).name} {args.split}: {len(result.run)} queries, "
          f"{result.info['protocol']}; {result.info['pairs']} pairs "
          f"({result.info['pairs_scored']} scored, {result.info['pairs_cached']} cached); "
          f"wall {wall:.0f}s")
    print(format_table([result]))
    print(f"\nrun and metrics written to {out}/")
    return result

