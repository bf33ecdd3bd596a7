"""Does the sweep's dev probe rank students as full dev retrieval does? (issue 15, item 4)

The probe (`raykd.train.probe`, a sweep's metric) re-ranks BM25's top-`depth` of a seeded
sample of dev queries with the student; the stage-end evaluation retrieves from the whole
corpus. This script takes every finished run under `outputs/` whose last stage left its full
dev run file (`stages/*/eval-dev/run.trec`, the top 1000 of each of the 100 dev queries),
computes each probe from that file (the student's own scores of the probe's candidates; a
candidate outside its top 1000 ranks last, below every retrieved one, as the student would
rank it), and reports the rank correlation between the probe and full dev nDCG@10 over the
runs, and over the better half of them (the close calls a sweep makes), for the sweep's
probe and larger, deeper ones. The run files were scored at the evaluation's lengths; a
probe in training scores at the student's training lengths.

    python bench/probe_vs_dev.py                       # probes 50x20 (the sweep's), 100x20, 100x100
    python bench/probe_vs_dev.py --probes 50:20,100:30

Results: `outputs/bench/probe_vs_dev.json`. Nothing is encoded or trained: a few seconds.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "outputs" / "bench" / "probe_vs_dev.json"


def probe_value(run: dict, candidates: dict, qrels: dict) -> float:
    """nDCG@10 of the student's order of each query's candidates (missing ones last)."""
    from raykd.eval.metrics import evaluate_run

    reranked = {}
    for qid, pids in candidates.items():
        scores = run.get(qid, {})
        floor = min(scores.values(), default=0.0) - 1.0
        # candidates the student did not retrieve: below every retrieved one, in BM25's order
        reranked[qid] = {p: scores.get(p, floor - i * 1e-6) for i, p in enumerate(pids)}
    return evaluate_run({q: qrels[q] for q in candidates}, reranked, ("nDCG@10",))["nDCG@10"]


def dev_runs(outputs: Path) -> dict[str, Path]:
    """run name -> its last stage's full dev run file, for every finished run."""
    from raykd.pipeline.files import last_stage_run

    found = {}
    for results in sorted(outputs.glob("*/results.json")):
        run = last_stage_run(results.parent, "dev")
        if run is not None:
            found[results.parent.name] = run
    return found


def correlations(probe: list[float], full: list[float]) -> dict:
    from scipy.stats import kendalltau, spearmanr

    rho, p_rho = spearmanr(probe, full)
    tau, p_tau = kendalltau(probe, full)
    return {"spearman": float(rho), "spearman_p": float(p_rho), "kendall": float(tau),
            "kendall_p": float(p_tau)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--probes", default="50:20,100:20,100:100",
                   help="comma-separated QUERIES:DEPTH probes (50:20 is the sweep's default)")
    p.add_argument("--outputs", default=str(ROOT / "outputs"), help="the runs' root folder")
    args = p.parse_args(argv)
    try:
        probes = [tuple(int(x) for x in item.split(":")) for item in args.probes.split(",")]
        if any(len(pr) != 2 or min(pr) < 1 for pr in probes):
            raise ValueError
    except ValueError:
        p.error(f"--probes takes QUERIES:DEPTH pairs of positive integers, got {args.probes!r}")

    from raykd.data.beir import BeirDataset
    from raykd.datasets import scifact_dir
    from raykd.eval.metrics import evaluate_run, read_trec_run
    from raykd.negatives.first_stage import first_stage
    from raykd.train.probe import probe_sample

    runs = dev_runs(Path(args.outputs))
    if len(runs) < 3:
        p.error(f"{len(runs)} finished run(s) with a dev run file under {args.outputs}; "
                "a correlation needs at least 3")
    dataset = BeirDataset.from_dir(scifact_dir())
    qrels, queries = dataset.qrels("dev"), dataset.queries("dev")
    deepest = max(depth for _, depth in probes)
    every = probe_sample(qrels, queries, None)
    bm25 = first_stage(dataset, "dev", depth=deepest, source="bm25",
                       queries={q: queries[q] for q in every}).rankings["bm25"]
    loaded = {name: read_trec_run(path) for name, path in runs.items()}
    full = {name: evaluate_run(qrels, run, ("nDCG@10",))["nDCG@10"]
            for name, run in loaded.items()}
    record = {"runs": {name: {"full_dev": full[name], "probes": {}} for name in runs},
              "probes": {}}
    print(f"{len(runs)} runs; full dev nDCG@10 from {min(full.values()):.4f} to "
          f"{max(full.values()):.4f}\n")
    ranked = sorted(full, key=full.get, reverse=True)
    top = set(ranked[:len(ranked) // 2])  # the close calls a sweep has to make
    print(f"| probe (BM25 top-depth, dev queries) | Spearman vs full dev, all {len(runs)} runs "
          f"| Kendall | Spearman, the top {len(top)} runs | share of candidates ranked last "
          "(outside a student's top 1000) |")
    print("| --- | --- | --- | --- | --- |")
    for count, depth in probes:
        label = f"{count}x{depth}"
        sample = probe_sample(qrels, queries, count)  # the sweep's seeded draw
        candidates = {q: list(bm25[q])[:depth] for q in sample}
        values, missing = [], 0
        for name, run in loaded.items():
            value = probe_value(run, candidates, qrels)
            record["runs"][name]["probes"][label] = value
            values.append(value)
            missing += sum(p not in run.get(q, {}) for q, pids in candidates.items()
                           for p in pids)
        stats = correlations(values, [full[name] for name in loaded])
        best = correlations([v for v, name in zip(values, loaded, strict=True) if name in top],
                            [full[name] for name in loaded if name in top])
        record["probes"][label] = {**stats, "top_half": best, "queries": len(sample),
                                   "depth": depth, "missing_candidates": missing}
        print(f"| {len(sample)} queries x {depth} | {stats['spearman']:.3f} "
              f"(p = {stats['spearman_p']:.1e}) | {stats['kendall']:.3f} | "
              f"{best['spearman']:.3f} (p = {best['spearman_p']:.1e}) | "
              f"{missing / (len(loaded) * sum(map(len, candidates.values()))):.1%} |")
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    RECORD.write_text(json.dumps(record, indent=2, default=lambda v: None if
                                 isinstance(v, float) and math.isnan(v) else v) + "\n")
    print(f"\nrecord: {RECORD}")


if __name__ == "__main__":
    main()
