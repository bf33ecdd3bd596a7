"""First-stage candidates shared by re-ranking and cross-encoder training.

    stage = first_stage(dataset, "dev", depth=100, model="minilm", cache_dir="outputs/...")
    stage.union["q1"]        # BM25 top-100 and dense top-100 interleaved, deduplicated

BM25 comes from `bm25_rankings`. Dense retrieval reads the corpus vectors of the bi-encoder
from the shared embedding store (`raykd.index.store`; encoded on a Ray Data actor pool the
first time), so a second split, a rerun, an evaluation or a bi-encoder teacher with the same
encoder pays only for its queries.

`union` here is the set union of the sources' top-`depth` lists (up to 2 x depth candidates
per query, in round-robin order, BM25 first at each rank), unlike `union_rankings`, which cuts
the interleave at `depth`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from raykd.errors import ConfigError
from raykd.negatives.mining import Rankings, bm25_rankings, dense_rankings
from raykd.negatives.sampling import interleave_rankings

log = logging.getLogger(__name__)

FIRST_STAGE_SOURCES = ("bm25", "dense", "union")
DEFAULT_EMBEDDING_CACHE = "outputs/embedding_cache"


@dataclass
class FirstStage:
    """One split's first-stage rankings (`bm25`, `dense`, `union`, whichever were asked for)."""

    split: str
    depth: int
    rankings: dict[str, Rankings]
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def union(self) -> Rankings:
        return self.rankings["union"]

    def get(self, source: str) -> Rankings:
        if source not in self.rankings:
            raise ConfigError("first_stage.source",
                              f"{source!r} was not computed; have {sorted(self.rankings)}")
        return self.rankings[source]


def first_stage(dataset, split: str, *, depth: int = 100, source: str = "union",
                model: str = "minilm", query_max_length: int = 64,
                passage_max_length: int = 256,
                cache_dir: str | os.PathLike = DEFAULT_EMBEDDING_CACHE,
                concurrency: int = 2, num_gpus: float = 0.0, batch_size: int = 64,
                queries: Mapping[str, str] | None = None) -> FirstStage:
    """BM25 and/or dense top-`depth` for the queries of `split` (`dataset`: a `BeirDataset`),
    plus their set union when `source="union"`. Dense needs Ray (`raykd.runtime.init_ray`)."""
    if source not in FIRST_STAGE_SOURCES:
        raise ConfigError("first_stage.source", f"{source!r} is not one of {FIRST_STAGE_SOURCES}")
    if depth < 1:
        raise ConfigError("first_stage.depth", f"must be >= 1, got {depth}")
    queries = dict(queries if queries is not None else dataset.queries(split))
    qids = list(queries)
    out = FirstStage(split, depth, {})
    if source in ("bm25", "union"):
        start = time.perf_counter()
        out.rankings["bm25"] = bm25_rankings(dataset.corpus_path, queries, depth)
        out.seconds["bm25"] = time.perf_counter() - start
    if source in ("dense", "union"):
        start = time.perf_counter()
        out.rankings["dense"] = dense_rankings(
            dataset.corpus_path, queries, model, depth, concurrency=concurrency,
            num_gpus=num_gpus, batch_size=batch_size, cache_dir=str(cache_dir),
            student_options={"query_max_length": query_max_length,
                             "passage_max_length": passage_max_length})
        out.seconds["dense"] = time.perf_counter() - start
    if source == "union":
        out.rankings["union"] = {q: interleave_rankings([out.rankings["bm25"].get(q, []),
                                                         out.rankings["dense"].get(q, [])])
                                 for q in qids}
    return out
