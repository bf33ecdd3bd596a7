"""Candidate groups (the contract in records.py) as JSONL (one group per line, ``.gz`` allowed)
or parquet (CANDIDATE_GROUP_SCHEMA). Every group is validated on read and on write; a repeated
qid is an error naming both lines unless ``check_unique=False``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from raykd.data.lines import iter_raw_lines, open_binary, open_for_write, parse_json_object
from raykd.data.parquet import parquet_rows, write_parquet_rows
from raykd.data.records import CANDIDATE_GROUP_SCHEMA, OPTIONAL_GROUP_FIELDS, normalize_group
from raykd.data.skips import resolve_policy
from raykd.data.validation import DuplicateChecker
from raykd.errors import DataError


def groups_jsonl_records(fobj, path, policy, check_unique: bool = True) -> Iterator[dict]:
    seen = DuplicateChecker("qid") if check_unique else None
    for line, raw in iter_raw_lines(fobj, path):
        try:
            group = normalize_group(parse_json_object(raw, path, line), path, line)
            if seen is not None:
                seen.check(group["qid"], path, line, "qid")
        except DataError as err:
            policy.handle(err)
            continue
        yield group


def groups_parquet_records(source, path, policy, check_unique: bool = True) -> Iterator[dict]:
    seen = DuplicateChecker("qid") if check_unique else None
    rows = parquet_rows(source, path, CANDIDATE_GROUP_SCHEMA, optional=OPTIONAL_GROUP_FIELDS)
    for rowno, row in rows:
        try:
            group = normalize_group(row, path, rowno)
            if seen is not None:
                seen.check(group["qid"], path, rowno, "qid")
        except DataError as err:
            policy.handle(err)
            continue
        yield group


def iter_groups_jsonl(
    path, on_error="raise", report=None, check_unique: bool = True
) -> Iterator[dict]:
    """Stream validated candidate groups from JSONL."""
    policy = resolve_policy(on_error, report, path)
    with open_binary(path) as fobj:
        yield from groups_jsonl_records(fobj, path, policy, check_unique)
    policy.finish()


def iter_groups_parquet(
    path, on_error="raise", report=None, check_unique: bool = True
) -> Iterator[dict]:
    """Stream validated candidate groups from a parquet file (a generator, batch by batch)."""
    policy = resolve_policy(on_error, report, path)
    yield from groups_parquet_records(path, path, policy, check_unique)
    policy.finish()


read_groups_parquet = iter_groups_parquet


def iter_groups(path, on_error="raise", report=None, check_unique: bool = True) -> Iterator[dict]:
    """JSONL or parquet groups, chosen by the file name (``.parquet`` or ``.jsonl[.gz]``)."""
    if Path(path).suffix == ".parquet":
        return iter_groups_parquet(path, on_error, report, check_unique)
    return iter_groups_jsonl(path, on_error, report, check_unique)


def _validated(path, groups: Iterable[Mapping]) -> Iterator[dict]:
    seen = DuplicateChecker("qid")
    for n, group in enumerate(groups, start=1):
        out = normalize_group(group, path, n)
        seen.check(out["qid"], path, n, "qid")
        yield out


def write_groups_jsonl(path, groups: Iterable[Mapping]) -> int:
    """Validate and write groups, one JSON object per line; returns the count."""
    n = 0
    with open_for_write(path) as out:
        for group in _validated(path, groups):
            out.write(json.dumps(group, ensure_ascii=False, allow_nan=False) + "\n")
            n += 1
    return n


def write_groups_parquet(path, groups: Iterable[Mapping]) -> int:
    """Validate and write groups with CANDIDATE_GROUP_SCHEMA; returns the count."""
    return write_parquet_rows(path, _validated(path, groups), CANDIDATE_GROUP_SCHEMA)
