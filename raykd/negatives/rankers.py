"""First-stage rankers that answer one chunk of queries at a time, their index built once.

    with open_ranker("union", corpus_path, depth=100, model="minilm") as rank:
        for chunk in query_chunks(queries, 1024):
            rankings = rank(chunk)            # {qid: [pid, ...]} for this chunk only

BM25 keeps its bm25s index in an actor (in the driver without Ray); dense encodes the corpus
into the embedding store and searches it with faiss in an actor (`raykd.index.search`), flat
or IVF (`index_kind`, ``auto`` by corpus size). A query's ranking does not depend on the chunk
it comes in, so chunked and whole-set rankings are equal.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from itertools import islice

from raykd.data.ray_datasets import iter_corpus_rows
from raykd.data.records import passage_text
from raykd.errors import ConfigError
from raykd.negatives.sampling import interleave_rankings

SOURCES = ("bm25", "dense", "union", "student")
Rankings = dict[str, list[str]]
Ranker = Callable[[Mapping[str, str]], Rankings]


def query_chunks(queries: Mapping[str, str], size: int) -> Iterator[dict[str, str]]:
    """`queries` in order, `size` at a time."""
    if size < 1:
        raise ConfigError("chunk", f"must be >= 1, got {size}")
    items = iter(queries.items())
    while chunk := dict(islice(items, size)):
        yield chunk


def union_rankings(*rankings: Rankings, depth: int) -> Rankings:
    """Per query, the round-robin interleave of the sources' rankings, deduplicated, cut at
    `depth`."""
    qids = list(dict.fromkeys(q for r in rankings for q in r))
    return {q: interleave_rankings([r.get(q, []) for r in rankings], depth) for q in qids}


class BM25Searcher:
    """The bm25s index of a corpus (English stopwords, Snowball stemmer, title + text); a Ray
    actor when Ray runs, so the tokenised corpus and its postings stay out of the driver."""

    def __init__(self, corpus_path: str, k1: float = 1.5, b: float = 0.75):
        from raykd.index.bm25 import BM25Index

        self.index = BM25Index(k1=k1, b=b).index(
            ((row["pid"], passage_text(row["title"], row["text"]))
             for row in iter_corpus_rows(corpus_path)), show_progress=False)

    def rankings(self, queries: Mapping[str, str], depth: int) -> Rankings:
        qids = list(queries)
        if not qids:
            return {}
        _, ids = self.index.search([queries[q] for q in qids], depth, show_progress=False)
        return {q: list(row) for q, row in zip(qids, ids, strict=True)}


@contextmanager
def bm25_ranker(corpus_path, depth: int, *, k1: float = 1.5, b: float = 0.75,
                use_ray: bool | None = None) -> Iterator[Ranker]:
    """BM25 top-`depth` per query of each chunk."""
    import ray

    if not (ray.is_initialized() if use_ray is None else use_ray):
        searcher = BM25Searcher(str(corpus_path), k1, b)
        yield lambda queries: searcher.rankings(dict(queries), depth)
        return
    from raykd.index.search import on_this_node

    # No CPU reserved: it lives while the dense ranker's encoding pool needs the CPUs.
    actor = ray.remote(num_cpus=0)(BM25Searcher).options(
        scheduling_strategy=on_this_node()).remote(str(corpus_path), k1, b)
    try:
        yield lambda queries: ray.get(actor.rankings.remote(dict(queries), depth))
    finally:
        ray.kill(actor)


@contextmanager
def dense_ranker(corpus_path, model: str, depth: int, *, concurrency: int = 2,
                 num_gpus: float = 0.0, batch_size: int = 64,
                 student_options: dict | None = None, index_kind: str = "auto",
                 nprobe: int | None = None, cache_dir: str | None = None,
                 searcher=None) -> Iterator[Ranker]:
    """Dense top-`depth` per query of each chunk: the corpus encoded by a Ray Data actor pool
    into the embedding store (reused from `cache_dir` when the same model encoded the same
    corpus; a temporary one otherwise), searched in an actor: the driver holds neither the
    vectors nor the index. `searcher`: the search actor's `SearcherPlacement` (default: 1 CPU
    on this node)."""
    import tempfile

    from raykd.index.search import store_searcher
    from raykd.index.store import corpus_embeddings
    from raykd.students import resolve_model

    model_path = resolve_model(model)
    with tempfile.TemporaryDirectory(prefix="raykd-mining-") as tmp:
        _, folder = corpus_embeddings(model_path, str(corpus_path),
                                      student_options=student_options,
                                      cache_dir=cache_dir or tmp, concurrency=concurrency,
                                      num_gpus=num_gpus, batch_size=batch_size, load=False)
        with store_searcher(folder, model_path, student_options=student_options,
                            index_kind=index_kind, nprobe=nprobe, batch_size=batch_size,
                            num_gpus=num_gpus, placement=searcher) as search:
            def rank(queries: Mapping[str, str]) -> Rankings:
                qids = list(queries)
                if not qids:
                    return {}
                _, ids = search([queries[q] for q in qids], depth)
                return {q: list(row) for q, row in zip(qids, ids, strict=True)}

            yield rank


@contextmanager
def _timed(ranker, timings: dict, key: str) -> Iterator[Ranker]:
    """A ranker whose set-up and calls add up in ``timings[key]`` (seconds)."""
    start = time.perf_counter()
    with ranker as rank:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - start

        def timed(queries: Mapping[str, str]) -> Rankings:
            began = time.perf_counter()
            try:
                return rank(queries)
            finally:
                timings[key] += time.perf_counter() - began

        yield timed


def _check_index(index_kind: str, nprobe: int | None) -> None:
    """Dense index settings checked before any corpus is encoded."""
    from raykd.index.faiss_index import INDEX_KINDS

    if index_kind not in INDEX_KINDS:
        raise ConfigError("data.mining_index", f"{index_kind!r} is not one of {INDEX_KINDS}")
    if nprobe is not None and nprobe < 1:
        raise ConfigError("data.mining_nprobe", f"must be >= 1, got {nprobe}")


@contextmanager
def open_ranker(source: str, corpus_path, depth: int, *, model: str | None = "minilm",
                timings: dict | None = None, k1: float = 1.5, b: float = 0.75,
                **dense_options) -> Iterator[Ranker]:
    """A ranker for `source`: ``bm25``, ``dense`` (`model`), ``union`` of both (BM25 first at
    each rank), or ``student`` (dense with the student in `model`); seconds per source
    (``bm25``, ``dense``) add up in `timings`."""
    if source not in SOURCES:
        raise ConfigError("data.negatives_from", f"{source!r} is not one of {SOURCES}")
    if source in ("dense", "union", "student") and not model:
        raise ConfigError("data.negatives_model", f"source {source!r} needs a model")
    _check_index(dense_options.get("index_kind", "auto"), dense_options.get("nprobe"))
    timings = {} if timings is None else timings
    with ExitStack() as stack:
        rankers = []
        if source in ("bm25", "union"):
            rankers.append(stack.enter_context(
                _timed(bm25_ranker(corpus_path, depth, k1=k1, b=b), timings, "bm25")))
        if source in ("dense", "union", "student"):
            rankers.append(stack.enter_context(
                _timed(dense_ranker(corpus_path, model, depth, **dense_options), timings,
                       "dense")))
        if len(rankers) == 1:
            yield rankers[0]
        else:
            yield lambda queries: union_rankings(*(r(queries) for r in rankers), depth=depth)
