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
SEARCH_CHUNK = 1024  # queries per call to a search actor
RUN_FILE = "run.trec"  # a saved evaluation's ranking, beside its metrics.json


@dataclass
class RetrievalResult:
    """A run, its metrics and how long each part took."""

    name: str
    split: str
    metrics: dict[str, float]
    run: dict[str, dict[str, float]] = field(repr=False)
    seconds: dict[str, float] = field(default_factory=dict)

    def save(self, out_dir: str | Path) -> Path:
        """Write `run.trec` (RUN_FILE) and `metrics.json` under `out_dir`."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_trec_run(out / RUN_FILE, self.run, tag=self.name)
        (out / "metrics.json").write_text(json.dumps(
            {"name": self.name, "split": self.split, "metrics": self.metrics,
             "seconds": self.seconds}, indent=2) + "\n")
        return out


def dense_retrieval(model_path: str, dataset: BeirDataset, split: str = "test", *, k: int = 1000,
                    concurrency: int = 2, num_gpus: float = 0.0, batch_size: int = 64,
                    index_kind: str = "flat", student_options: dict | None = None,
                    measures=DEFAULT_MEASURES, rel: int = 1, name: str = "dense",
                    cache_dir: str | None = None, searcher=None,
                    in_actor: bool | None = None) -> RetrievalResult:
    """Encode the corpus on a Ray Data actor pool (or read it from `cache_dir`), index it
    with faiss (`index_kind`; ``auto``: flat below `FLAT_BELOW` passages, IVF above), search
    the split's queries. `in_actor` (default: with `cache_dir`, a corpus of `FLAT_BELOW`
    passages or more) indexes and searches in a `StoreSearcher` actor placed by `searcher`,
    as mining does, so the driver never holds the index; a flat index ranks the same there."""
    from raykd.index.faiss_index import FLAT_BELOW, resolve_kind
    from raykd.index.store import corpus_embeddings, store_size

    timings = {}
    start = time.perf_counter()
    queries = dataset.queries(split)
    qids = sorted(queries)
    texts = [queries[q] for q in qids]
    encode = dict(student_options=student_options, concurrency=concurrency, num_gpus=num_gpus,
                  batch_size=batch_size)
    if cache_dir is None:
        if in_actor:
            raise ValueError("dense_retrieval(in_actor=True) needs a cache_dir for the store")
        scores, ids = _search_here(model_path, dataset, texts, k, index_kind, encode, timings,
                                   start)
    else:
        _, folder = corpus_embeddings(model_path, str(dataset.corpus_path), cache_dir=cache_dir,
                                      load=False, **encode)
        size = store_size(folder)
        kind = resolve_kind(index_kind, size)
        if in_actor if in_actor is not None else size >= FLAT_BELOW:
            scores, ids = _search_in_actor(model_path, folder, texts, k, kind, encode,
                                           searcher, timings, start)
        else:
            scores, ids = _search_here(model_path, dataset, texts, k, kind,
                                       dict(encode, cache_dir=cache_dir), timings, start)
    timings["search"] = time.perf_counter() - start - timings["encode_index"]
    run = run_from_results(qids, scores, ids)
    metrics = evaluate_run(dataset.qrels(split), run, measures, rel)
    return RetrievalResult(name, split, metrics, run, timings)


def _search_here(model_path, dataset, texts, k, kind, encode, timings, start):
    """Index and search in this process (a small corpus): (scores, pids per query)."""
    from raykd.index.search import corpus_index
    from raykd.students import BiEncoder

    query_model = BiEncoder.from_pretrained(model_path, **(encode["student_options"] or {}))
    index = corpus_index(model_path, str(dataset.corpus_path), index_kind=kind, **encode)
    timings["encode_index"] = time.perf_counter() - start
    vectors = query_model.encode_queries(texts, batch_size=encode["batch_size"])
    return index.search(vectors, k)


def _search_in_actor(model_path, folder, texts, k, kind, encode, searcher, timings, start):
    """Index and search in a `StoreSearcher` actor, queries sent `SEARCH_CHUNK` at a time."""
    import numpy as np

    from raykd.index.search import store_searcher

    scores, ids = [], []
    with store_searcher(folder, model_path, student_options=encode["student_options"],
                        index_kind=kind, batch_size=encode["batch_size"],
                        num_gpus=encode["num_gpus"], placement=searcher) as search:
        timings["encode_index"] = time.perf_counter() - start
        for i in range(0, len(texts), SEARCH_CHUNK):
            part_scores, part_ids = search(texts[i:i + SEARCH_CHUNK], k)
            scores.append(part_scores)
            ids.extend(part_ids)
    return np.concatenate(scores) if scores else np.zeros((0, k), np.float32), ids


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
