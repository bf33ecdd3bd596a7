"""raykd's data layer: readers, writers and validation for BEIR, MS MARCO, teacher-score TSV,
candidate groups (JSONL / parquet), and Ray Data builders.

Every bad input is a :class:`raykd.errors.DataError` naming file, line and field; with
``on_error="skip"`` rows are left out and counted in a :class:`SkipReport`, never dropped
silently. The Ray Data builders (``corpus_dataset``, ``queries_dataset``, ``groups_dataset``)
are imported on first use so that importing ``raykd.data`` does not import Ray.
"""

from __future__ import annotations

from raykd.data import beir, msmarco
from raykd.data.beir import BeirDataset, iter_corpus, write_corpus
from raykd.data.groups import (
    iter_groups,
    iter_groups_jsonl,
    iter_groups_parquet,
    read_groups_parquet,
    write_groups_jsonl,
    write_groups_parquet,
)
from raykd.data.msmarco import iter_collection, iter_triples, write_collection, write_triples
from raykd.data.parquet import iter_corpus_parquet, write_corpus_parquet
from raykd.data.records import (
    CANDIDATE_GROUP_SCHEMA,
    CORPUS_SCHEMA,
    KINDS,
    QUERIES_SCHEMA,
    normalize_group,
    passage_text,
    validate_group,
)
from raykd.data.skips import ErrorPolicy, SkippedRow, SkippedRowsWarning, SkipReport
from raykd.data.teacher_scores import iter_hofstatter, write_hofstatter
from raykd.data.validation import REASONS, DuplicateChecker

_RAY_NAMES = ("corpus_dataset", "queries_dataset", "groups_dataset", "check_unique_ids")


def __getattr__(name: str):
    if name in _RAY_NAMES:
        from raykd.data import ray_datasets

        return getattr(ray_datasets, name)
    raise AttributeError(f"module 'raykd.data' has no attribute {name!r}")


__all__ = [
    "CANDIDATE_GROUP_SCHEMA",
    "CORPUS_SCHEMA",
    "KINDS",
    "QUERIES_SCHEMA",
    "REASONS",
    "BeirDataset",
    "DuplicateChecker",
    "ErrorPolicy",
    "SkipReport",
    "SkippedRow",
    "SkippedRowsWarning",
    "beir",
    "check_unique_ids",
    "corpus_dataset",
    "groups_dataset",
    "iter_collection",
    "iter_corpus",
    "iter_corpus_parquet",
    "iter_groups",
    "iter_groups_jsonl",
    "iter_groups_parquet",
    "iter_hofstatter",
    "iter_triples",
    "msmarco",
    "normalize_group",
    "passage_text",
    "queries_dataset",
    "read_groups_parquet",
    "validate_group",
    "write_collection",
    "write_corpus",
    "write_corpus_parquet",
    "write_groups_jsonl",
    "write_groups_parquet",
    "write_hofstatter",
    "write_triples",
]
