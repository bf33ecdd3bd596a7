"""Choose an ensemble teacher's weights on dev from its members' re-ranking runs, without
scoring anything again.

    python jobs/rerank.py --teacher bm25 --split dev --name bm25
    python jobs/rerank.py --teacher bench/recipes/teachers/li_ft.yaml --split dev --name li-ft
    python bench/fuse_runs.py --split dev \
        bm25=outputs/rerank/bm25-dev/run.trec li-ft=outputs/rerank/li-ft-dev/run.trec \
        --grid 0,0.5,1,1.5,2

Every member's run must re-rank the same candidates (the same first stage and depth, as
`jobs/rerank.py` writes them). Each combination is what an ensemble teacher
(`kind: ensemble`, `normalization: zscore`, those `weights`) would score: the members' scores
z-scored per query (`raykd.teachers.ensemble.zscore`), weighted and summed. Prints nDCG@10 and
RR@10 per combination, best first; weights that differ only by a common factor rank alike, so
the grid fixes the first member's weight at each grid value and normalises nothing.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from raykd.data.beir import BeirDataset
from raykd.datasets import scifact_dir
from raykd.eval.metrics import evaluate_run, read_trec_run
from raykd.teachers.ensemble import zscore


def fuse(runs: list[dict[str, dict[str, float]]], weights: list[float]) -> dict:
    """sum_i w_i * zscore_q(run_i) per query, over the candidates every run scored."""
    fused = {}
    for qid in runs[0]:
        pids = [p for p in runs[0][qid] if all(p in run.get(qid, {}) for run in runs)]
        total = np.zeros(len(pids))
        for run, w in zip(runs, weights, strict=True):
            total += w * zscore(np.array([run[qid][p] for p in pids]))
        fused[qid] = dict(zip(pids, total.tolist(), strict=True))
    return fused


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("members", nargs="+", help="name=path/to/run.trec, one per member")
    p.add_argument("--split", default="dev")
    p.add_argument("--data", default=None, help="a BEIR-layout folder (default: bundled SciFact)")
    p.add_argument("--grid", default="0,0.5,1,1.5,2", help="weights tried per member")
    p.add_argument("--top", type=int, default=15, help="combinations printed")
    p.add_argument("--out", default=None, help="write every combination's metrics (JSON)")
    args = p.parse_args(argv)

    names, runs = [], []
    for item in args.members:
        name, _, path = item.partition("=")
        if not path or not Path(path).is_file():
            p.error(f"member {item!r}: expected name=path/to/run.trec of an existing file")
        names.append(name)
        runs.append(read_trec_run(path))
    dataset = BeirDataset.from_dir(args.data or scifact_dir())
    qrels = dataset.qrels(args.split)
    grid = [float(x) for x in args.grid.split(",")]

    rows = []
    for weights in itertools.product(grid, repeat=len(runs)):
        if not any(weights):
            continue
        metrics = evaluate_run(qrels, fuse(runs, list(weights)), ["nDCG@10", "RR@10"])
        rows.append({"weights": list(weights), **metrics})
    rows.sort(key=lambda r: -r["nDCG@10"])
    print(f"{args.split}: {len(rows)} combinations of {', '.join(names)}")
    for row in rows[: args.top]:
        w = " / ".join(f"{x:g}" for x in row["weights"])
        print(f"  {w:>20}  nDCG@10 {row['nDCG@10']:.4f}  RR@10 {row['RR@10']:.4f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"members": names, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
