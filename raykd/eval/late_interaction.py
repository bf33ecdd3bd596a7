"""Full late-interaction retrieval of a BEIR split: faiss over token vectors, then exact MaxSim
(the twin of `raykd.eval.retrieval.dense_retrieval`)."""

from __future__ import annotations

import time

from raykd.eval.metrics import DEFAULT_MEASURES, evaluate_run
from raykd.eval.retrieval import RetrievalResult
from raykd.index.late_interaction import TokenIndexKind, corpus_token_index, retrieve


def late_interaction_retrieval(model_path: str, dataset, split: str = "test", *, k: int = 1000,
                               concurrency: int = 2, num_gpus: float = 0.0, batch_size: int = 32,
                               student_options: dict | None = None, measures=None, rel: int = 1,
                               name: str = "late_interaction", cache_dir: str | None = None,
                               depth: int | None = None, index_kind: TokenIndexKind = "auto"):
    """Full late-interaction retrieval of a BEIR split (faiss over token vectors, then exact
    MaxSim), as a `RetrievalResult` with the same metrics as `dense_retrieval`."""
    timings = {}
    start = time.perf_counter()
    index, encoder = corpus_token_index(model_path, str(dataset.corpus_path), student_options,
                                        cache_dir=cache_dir, concurrency=concurrency,
                                        num_gpus=num_gpus, batch_size=batch_size,
                                        kind=index_kind)
    index.faiss_index()
    timings["encode_index"] = time.perf_counter() - start
    start = time.perf_counter()
    queries = dataset.queries(split)
    ranked = retrieve(index, encoder, {q: queries[q] for q in sorted(queries)}, k, depth=depth)
    timings["search"] = time.perf_counter() - start
    run = {qid: dict(pairs) for qid, pairs in ranked.items()}
    metrics = evaluate_run(dataset.qrels(split), run, measures or DEFAULT_MEASURES, rel)
    return RetrievalResult(name, split, metrics, run, timings)
