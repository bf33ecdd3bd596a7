"""Candidate generation: BM25 / dense / union mining, seeded negative sampling, group writing."""

from raykd.negatives.candidates import (
    MiningReport,
    fill_texts,
    mine_from_spec,
    mine_negatives,
    plan_groups,
    refresh_negatives,
    write_candidate_groups,
)
from raykd.negatives.mining import (
    SOURCES,
    bm25_rankings,
    dense_rankings,
    fetch_passage_texts,
    mine_rankings,
    union_rankings,
)
from raykd.negatives.sampling import NegativeSampler, interleave_rankings, query_rng

__all__ = [
    "SOURCES",
    "MiningReport",
    "NegativeSampler",
    "bm25_rankings",
    "dense_rankings",
    "fetch_passage_texts",
    "fill_texts",
    "interleave_rankings",
    "mine_from_spec",
    "mine_negatives",
    "mine_rankings",
    "plan_groups",
    "query_rng",
    "refresh_negatives",
    "union_rankings",
    "write_candidate_groups",
]
