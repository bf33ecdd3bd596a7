"""IR metrics with ir_measures, and TREC run files."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import ir_measures

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Mapping[str, float]]

DEFAULT_MEASURES = ("nDCG@10", "RR@10", "R@100", "R@1000")


def parse_measures(names: Iterable[str], rel: int = 1) -> list:
    """ir_measures objects; binary measures (RR, R, AP, P) get `rel` when it is not 1."""
    measures = []
    for name in names:
        if rel != 1 and "(" not in name and name.split("@")[0] in {"RR", "R", "AP", "P"}:
            base, _, cutoff = name.partition("@")
            name = f"{base}(rel={rel})" + (f"@{cutoff}" if cutoff else "")
        measures.append(ir_measures.parse_measure(name))
    return measures


def evaluate_run(qrels: Qrels, run: Run, measures: Iterable[str] = DEFAULT_MEASURES,
                 rel: int = 1) -> dict[str, float]:
    """Aggregate metrics over the queries of `qrels` (a query missing from `run` scores 0).

    Keys are the measure names as given (e.g. "RR@10"), whatever the relevance level.
    """
    names = list(measures)
    parsed = parse_measures(names, rel)
    qrels = {q: dict(d) for q, d in qrels.items()}
    run = {q: dict(d) for q, d in run.items() if q in qrels}
    per_query = {str(m): {} for m in parsed}
    for metric in ir_measures.iter_calc(parsed, qrels, run):
        per_query[str(metric.measure)][metric.query_id] = metric.value
    out = {}
    for name, measure in zip(names, parsed, strict=False):
        values = per_query[str(measure)]
        out[name] = sum(values.get(q, 0.0) for q in qrels) / max(len(qrels), 1)
    return out


def run_from_results(qids: list[str], scores, ids: list[list[str]]) -> dict[str, dict[str, float]]:
    """A run dict from aligned search results."""
    return {q: {pid: float(s) for pid, s in zip(row_ids, row_scores, strict=False)}
            for q, row_scores, row_ids in zip(qids, scores, ids, strict=False)}


def write_trec_run(path: str | os.PathLike, run: Run, tag: str = "raykd") -> None:
    """`qid Q0 docid rank score tag`, ranked by score then docid (descending), as trec_eval sorts."""
    with open(path, "w", encoding="utf-8") as out:
        for qid in sorted(run):
            ranked = sorted(run[qid].items(), key=lambda kv: (-kv[1], _neg_key(kv[0])))
            for rank, (pid, score) in enumerate(ranked, start=1):
                out.write(f"{qid} Q0 {pid} {rank} {score:.6f} {tag}\n")


def _neg_key(pid: str):
    # Tie-break on docid descending, like trec_eval.
    return (*(-ord(c) for c in pid), 1)


def read_trec_run(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    for r in ir_measures.read_trec_run(str(path)):
        run.setdefault(r.query_id, {})[r.doc_id] = r.score
    return run
