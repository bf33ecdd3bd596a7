"""Top-k candidate mining: BM25 (bm25s), dense (Ray Data encoding + faiss), and their union.

Rankings are ``{qid: [pid, ...]}``, best first, `depth` long at most. The corpus is streamed:
BM25 builds its sparse index in a Ray task, dense mining streams the corpus vectors from a Ray Data
actor pool to the embedding store on disk and searches them with faiss in an actor, and passage
texts are fetched afterwards for the chosen pids only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Literal

from raykd.data.ray_datasets import iter_corpus_rows
from raykd.data.records import passage_text
from raykd.errors import ConfigError
from raykd.negatives.sampling import interleave_rankings

log = logging.getLogger(__name__)

Source = Literal["bm25", "dense", "union", "student"]
SOURCES = ("bm25", "dense", "union", "student")
Rankings = dict[str, list[str]]


def bm25_rankings(corpus_path, queries: Mapping[str, str], depth: int, *, k1: float = 1.5,
                  b: float = 0.75, use_ray: bool | None = None) -> Rankings:
    """BM25 top-`depth` per query (English stopwords, Snowball stemmer, title + text).

    bm25s holds the whole tokenised corpus and its postings in memory; with Ray running (or
    `use_ray`) that happens in a Ray task on this node, not in the driver."""
    if use_ray is None:
        import ray

        use_ray = ray.is_initialized()
    if not use_ray:
        return _bm25_rankings(str(corpus_path), dict(queries), depth, k1, b)
    import ray

    from raykd.index.search import on_this_node

    task = ray.remote(num_cpus=1)(_bm25_rankings).options(scheduling_strategy=on_this_node())
    return ray.get(task.remote(str(corpus_path), dict(queries), depth, k1, b))


def _bm25_rankings(corpus_path: str, queries: dict[str, str], depth: int, k1: float,
                   b: float) -> Rankings:
    from raykd.index.bm25 import BM25Index

    index = BM25Index(k1=k1, b=b).index(
        ((row["pid"], passage_text(row["title"], row["text"]))
         for row in iter_corpus_rows(corpus_path)), show_progress=False)
    qids = list(queries)
    if not qids:
        return {}
    _, ids = index.search([queries[q] for q in qids], depth, show_progress=False)
    return {q: list(row) for q, row in zip(qids, ids, strict=True)}


def dense_rankings(corpus_path, queries: Mapping[str, str], model: str, depth: int, *,
                   concurrency: int = 2, num_gpus: float = 0.0, batch_size: int = 64,
                   student_options: dict | None = None, index_kind: str = "flat",
                   cache_dir: str | None = None) -> Rankings:
    """Dense top-`depth` per query: the corpus encoded by a Ray Data actor pool into the
    embedding store (reused from `cache_dir` when the same model encoded the same corpus; a
    temporary one otherwise), searched with faiss in an actor (`raykd.index.search.search_store`):
    the driver holds neither the vectors nor the index."""
    import tempfile

    from raykd.index.search import search_store
    from raykd.index.store import corpus_embeddings
    from raykd.students import resolve_model

    model_path = resolve_model(model)
    with tempfile.TemporaryDirectory(prefix="raykd-mining-") as tmp:
        _, folder = corpus_embeddings(model_path, str(corpus_path),
                                      student_options=student_options,
                                      cache_dir=cache_dir or tmp, concurrency=concurrency,
                                      num_gpus=num_gpus, batch_size=batch_size, load=False)
        qids = list(queries)
        if not qids:
            return {}
        ids = search_store(folder, model_path, [queries[q] for q in qids], depth,
                           student_options=student_options, index_kind=index_kind,
                           batch_size=batch_size, num_gpus=num_gpus)
    return {q: list(row) for q, row in zip(qids, ids, strict=True)}


def union_rankings(*rankings: Rankings, depth: int) -> Rankings:
    """Per query, the round-robin interleave of the sources' rankings, deduplicated, cut at
    `depth`."""
    qids = list(dict.fromkeys(q for r in rankings for q in r))
    return {q: interleave_rankings([r.get(q, []) for r in rankings], depth) for q in qids}


def mine_rankings(source: Source, corpus_path, queries: Mapping[str, str], depth: int, *,
                  model: str | None = "minilm", timings: dict | None = None,
                  k1: float = 1.5, b: float = 0.75, **dense_options) -> Rankings:
    """Rankings from `source`: ``bm25``, ``dense`` (`model`), ``union`` of both (BM25 first at
    each rank), or ``student`` (dense with the student in `model`)."""
    if source not in SOURCES:
        raise ConfigError("data.negatives_from", f"{source!r} is not one of {SOURCES}")
    if source in ("dense", "union", "student") and not model:
        raise ConfigError("data.negatives_model", f"source {source!r} needs a model")
    timings = {} if timings is None else timings
    out = []
    if source in ("bm25", "union"):
        start = time.perf_counter()
        out.append(bm25_rankings(corpus_path, queries, depth, k1=k1, b=b))
        timings["bm25"] = time.perf_counter() - start
    if source in ("dense", "union", "student"):
        start = time.perf_counter()
        out.append(dense_rankings(corpus_path, queries, model, depth, **dense_options))
        timings["dense"] = time.perf_counter() - start
    return out[0] if len(out) == 1 else union_rankings(*out, depth=depth)


def _keep_pids(batch, pids: frozenset):
    import pyarrow as pa

    mask = [p in pids for p in batch.column("pid").to_pylist()]
    return batch.filter(pa.array(mask, pa.bool_()))


def fetch_passage_texts(corpus_path, pids: Collection[str], *, use_ray: bool | None = None
                        ) -> dict[str, str]:
    """``{pid: passage_text(title, text)}`` for the wanted pids only, from a corpus stream.

    With Ray running, read tasks filter the corpus in parallel and only the wanted rows reach
    the driver; otherwise the corpus file is streamed here. Pids not in the corpus are absent.
    """
    wanted = frozenset(str(p) for p in pids)
    if not wanted:
        return {}
    if use_ray is None:
        import ray

        use_ray = ray.is_initialized()
    texts: dict[str, str] = {}
    if use_ray:
        from raykd.data.ray_datasets import corpus_dataset

        ds = corpus_dataset(corpus_path).map_batches(
            _keep_pids, fn_kwargs={"pids": wanted}, batch_format="pyarrow", zero_copy_batch=True)
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for pid, title, text in zip(*(batch.column(c).to_pylist()
                                          for c in ("pid", "title", "text")), strict=True):
                texts[pid] = passage_text(title, text)
    else:
        for row in iter_corpus_rows(corpus_path):
            if row["pid"] in wanted:
                texts[row["pid"]] = passage_text(row["title"], row["text"])
    return texts


def corpus_path_of(data) -> Path:
    """The corpus file of a BEIR folder or a `BeirDataset`."""
    return Path(getattr(data, "corpus_path", data))
