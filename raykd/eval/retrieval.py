"""Evaluate a dense student or BM25 by full retrieval over a BEIR-layout dataset."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from raykd.data.beir import BeirDataset
from raykd.data.records import passage_text
from raykd.eval.metrics import DEFAULT_MEASURES, evaluate_run, run_from_results, write_trec_run

log = logging.getLogger(__name__)


@dataclass
class RetrievalResult:
    """A run, its metrics and how long each part took."""

    name: str
    split: str
    metrics: dict[str, float]
    run: dict[str, dict[str, float]] = field(repr=False)
    seconds: dict[str, float] = field(default_factory=dict)

    def save(self, out_dir: str | Path) -> Path:
        """Write `run.trec` and `metrics.json` under `out_dir`."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_trec_run(out / "run.trec", self.run, tag=self.name)
        (out / "metrics.json").write_text(json.dumps(
            {"name": self.name, "split": self.split, "metrics": self.metrics,
             "seconds": self.seconds}, indent=2) + "\n")
        return out


def dense_retrieval(model_path: str, dataset: BeirDataset, split: str = "test", *, k: int = 1000,
                    concurrency: int = 2, num_gpus: float = 0.0, batch_size: int = 64,
                    index_kind: str = "flat", student_options: dict | None = None,
                    measures=DEFAULT_MEASURES, rel: int = 1, name: str = "dense",
                    cache_dir: str | None = None) -> RetrievalResult:
    """Encode the corpus on a Ray Data actor pool (or read it from `cache_dir`), index it
    with faiss, search the split's queries."""
    from raykd.index.search import corpus_index
    from raykd.students import BiEncoder

    timings = {}
    start = time.perf_counter()
    queries = dataset.queries(split)
    qids = sorted(queries)
    query_model = BiEncoder.from_pretrained(model_path, **(student_options or {}))
    index = corpus_index(model_path, str(dataset.corpus_path), student_options=student_options,
                         concurrency=concurrency, num_gpus=num_gpus, batch_size=batch_size,
                         index_kind=index_kind, cache_dir=cache_dir)
    timings["encode_index"] = time.perf_counter() - start
    start = time.perf_counter()
    query_vectors = query_model.encode_queries([queries[q] for q in qids], batch_size=batch_size)
    scores, ids = index.search(query_vectors, k)
    timings["search"] = time.perf_counter() - start
    run = run_from_results(qids, scores, ids)
    metrics = evaluate_run(dataset.qrels(split), run, measures, rel)
    return RetrievalResult(name, split, metrics, run, timings)


def bm25_retrieval(dataset: BeirDataset, split: str = "test", *, k: int = 1000,
                   k1: float = 1.5, b: float = 0.75, measures=DEFAULT_MEASURES, rel: int = 1,
                   name: str = "bm25") -> RetrievalResult:
    """BM25 (bm25s, English stopwords, Snowball stemmer) over title + text."""
    from raykd.index.bm25 import BM25Index

    start = time.perf_counter()
    queries = dataset.queries(split)
    qids = sorted(queries)
    index = BM25Index(k1=k1, b=b).index(
        (row["pid"], passage_text(row["title"], row["text"])) for row in dataset.iter_corpus())
    timings = {"index": time.perf_counter() - start}
    start = time.perf_counter()
    scores, ids = index.search([queries[q] for q in qids], k)
    timings["search"] = time.perf_counter() - start
    run = run_from_results(qids, scores, ids)
    metrics = evaluate_run(dataset.qrels(split), run, measures, rel)
    return RetrievalResult(name, split, metrics, run, timings)


def format_table(results: list[RetrievalResult]) -> str:
    """A plain-text metrics table, one row per result."""
    names = list(results[0].metrics)
    header = f"{'system':<28} {'split':<6} " + " ".join(f"{n:>9}" for n in names)
    rows = [header, "-" * len(header)]
    for r in results:
        rows.append(f"{r.name:<28} {r.split:<6} " + " ".join(f"{r.metrics[n]:>9.4f}" for n in names))
    return "\n".join(rows)
