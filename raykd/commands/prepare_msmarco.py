"""MS MARCO files -> a BEIR folder, candidate groups and teacher scores.

    raykd prepare-msmarco --raw msmarco/ --out /data/msmarco \\
        --run msmarco/run.bm25.train.tsv \\
        --teacher-scores msmarco/bert_cat_ensemble_msmarcopassage_train_scores_ids.tsv
    raykd prepare-msmarco --raw msmarco/ --out /data/msmarco-10k --max-queries 10000 \\
        --max-dev-queries 500 --max-passages 1000000 --triples msmarco/qidpidtriples.train.full.2.tsv

`--raw` holds collection.tsv, queries.train.tsv, queries.dev.small.tsv, qrels.train.tsv and
qrels.dev.small.tsv (each may be .gz); `--run` (BM25 top-1000: `qid pid rank`, TREC, or
top1000's `qid pid query passage`), `--triples` (the id triples) and `--teacher-scores` (a
Hofstatter id-form score file) each give a candidate folder. Writes a BEIR folder for
`data.dataset` (corpus.jsonl, queries.jsonl, qrels/train.tsv, qrels/dev.tsv), candidate groups
for `data.candidates` (candidates/bm25, candidates/triples, candidates/scored) and, from the
score file, teacher/scores.tsv for a `precomputed` teacher (format hofstatter_ids). Streaming;
a rerun skips the parts that are done (same inputs and options); a bad input line stops the
job with one line naming file, line and field. No Ray: it runs where it is started.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from raykd.commands import describe
from raykd.data.msmarco import RUN_COLUMNS
from raykd.data.msmarco_prepare import OFFICIAL_NAMES, PrepareOptions, prepare_msmarco
from raykd.errors import one_line_errors
from raykd.runtime import add_verbose_argument, setup_logging

PROG = "raykd prepare-msmarco"


def parse_args(argv=None, prog: str = PROG) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=describe(__doc__, PROG, prog),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--raw", required=True, help="the folder of the official MS MARCO files")
    p.add_argument("--out", required=True, help="the output folder (a BEIR dataset and more)")
    for name, official in OFFICIAL_NAMES.items():
        p.add_argument(f"--{name.replace('_', '-')}", default=None,
                       help=f"another path for {official} (default: --raw/{official}[.gz])")
    p.add_argument("--run", default=None, help="a first-stage run of the train queries (BM25)")
    p.add_argument("--run-format", choices=("auto", *RUN_COLUMNS), default="auto")
    p.add_argument("--triples", default=None, help="id triples: qid pid_pos pid_neg")
    p.add_argument("--teacher-scores", default=None,
                   help="Hofstatter id-form scores: pos_score neg_score qid pid_pos pid_neg")
    p.add_argument("--max-queries", type=int, default=None,
                   help="keep the first N train queries of qrels.train.tsv")
    p.add_argument("--max-dev-queries", type=int, default=None,
                   help="keep the first N dev queries of qrels.dev.small.tsv")
    p.add_argument("--max-passages", type=int, default=None,
                   help="corpus size: every passage the kept queries and candidates use, then "
                        "the first others up to N")
    p.add_argument("--depth", type=int, default=1000, help="run ranks to draw negatives from")
    p.add_argument("--num-negatives", type=int, default=15, help="negatives per query")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--join-chunk", type=int, default=2_000_000,
                   help="candidate passages looked up per pass over the collection (memory)")
    p.add_argument("--part-groups", type=int, default=50_000, help="groups per parquet part")
    p.add_argument("--progress-every", type=float, default=30.0,
                   help="seconds between progress lines")
    add_verbose_argument(p)
    return p.parse_args(argv)


@one_line_errors()
def main(argv=None, prog: str = PROG):
    args = parse_args(argv, prog)
    setup_logging(verbose_flag=args.verbose)
    paths = {name: getattr(args, name) for name in OFFICIAL_NAMES if getattr(args, name)}
    optional = {name: Path(getattr(args, name)) if getattr(args, name) else None
                for name in ("run", "triples", "teacher_scores")}
    options = PrepareOptions.from_raw(
        args.raw, args.out, **paths, **optional, run_format=args.run_format,
        max_queries=args.max_queries, max_dev_queries=args.max_dev_queries,
        max_passages=args.max_passages, depth=args.depth, num_negatives=args.num_negatives,
        seed=args.seed, join_chunk=args.join_chunk, part_groups=args.part_groups)
    start = time.perf_counter()
    report = prepare_msmarco(options, progress_every=args.progress_every)
    print(f"\n[raykd] MS MARCO prepared in {time.perf_counter() - start:.1f}s -> {args.out}")
    for part, counts in report.counts.items():
        print(f"  {part:<14} " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"  ran: {', '.join(report.ran) or 'nothing'}; already done: "
          f"{', '.join(report.skipped) or 'nothing'}")
    return report
