"""Top-k candidate mining: BM25 (bm25s), dense (Ray Data encoding + faiss), and their union.

Rankings are ``{qid: [pid, ...]}``, best first, `depth` long at most. The corpus is streamed:
BM25 builds its sparse index in a Ray actor, dense mining streams the corpus vectors from a Ray
Data actor pool to the embedding store on disk and searches them with faiss (flat, or IVF on a
large corpus) in an actor (`raykd.negatives.rankers`), and passage texts are fetched afterwards
for the chosen pids only.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Literal

from raykd.data.ray_datasets import iter_corpus_rows
from raykd.data.records import passage_text
from raykd.negatives.rankers import (
    SOURCES,
    Rankings,
    bm25_ranker,
    open_ranker,
    query_chunks,
    union_rankings,
)

log = logging.getLogger(__name__)

Source = Literal["bm25", "dense", "union", "student"]
QUERY_CHUNK = 1024  # queries per search call, and per streamed mining chunk
__all__ = ["SOURCES", "Rankings", "union_rankings", "bm25_rankings", "dense_rankings",
           "mine_rankings", "fetch_passage_texts", "corpus_path_of"]


def bm25_rankings(corpus_path, queries: Mapping[str, str], depth: int, *, k1: float = 1.5,
                  b: float = 0.75, use_ray: bool | None = None) -> Rankings:
    """BM25 top-`depth` per query (English stopwords, Snowball stemmer, title + text).

    bm25s holds the whole tokenised corpus and its postings in memory; with Ray running (or
    `use_ray`) that happens in a Ray actor on this node, not in the driver."""
    with bm25_ranker(corpus_path, depth, k1=k1, b=b, use_ray=use_ray) as rank:
        return rank(queries)


def dense_rankings(corpus_path, queries: Mapping[str, str], model: str, depth: int,
                   **dense_options) -> Rankings:
    """Dense top-`depth` per query (`raykd.negatives.rankers.dense_ranker`: the corpus encoded
    on a Ray Data actor pool, searched with faiss in an actor), queries sent `QUERY_CHUNK` at a
    time."""
    return mine_rankings("dense", corpus_path, queries, depth, model=model, **dense_options)


def mine_rankings(source: Source, corpus_path, queries: Mapping[str, str], depth: int, *,
                  model: str | None = "minilm", timings: dict | None = None,
                  k1: float = 1.5, b: float = 0.75, **dense_options) -> Rankings:
    """Rankings of every query from `source` (`raykd.negatives.rankers.open_ranker`):
    ``bm25``, ``dense`` (`model`), ``union`` of both, or ``student``. Mining at corpus scale
    streams chunks instead (`raykd.negatives.candidates`)."""
    out: Rankings = {}
    with open_ranker(source, corpus_path, depth, model=model, timings=timings, k1=k1, b=b,
                     **dense_options) as rank:
        for chunk in query_chunks(queries, QUERY_CHUNK):
            out.update(rank(chunk))
    return out


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
