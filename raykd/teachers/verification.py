"""Exactly-once checks of scored output against its input: every input (qid, pid) has one
finite score, none lost, none duplicated; `ScoreAlignmentError` names the keys otherwise.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raykd.errors import ScoreAlignmentError
from raykd.teachers.cache import (
    pair_hash,
    resolve_filesystem,
)
from raykd.teachers.shards import (
    PAIR_DIGEST_MASK,
    ShardExpect,
    expected_by_shard,
    input_files,
    keep_shards,
    shard_name,
)

log = logging.getLogger(__name__)



def _shard_keys(files, num_shards, shard) -> Counter:
    from raykd.data.ray_datasets import groups_dataset

    ds = groups_dataset(files).select_columns(["qid", "pids"]).map_batches(
        keep_shards, fn_kwargs={"num_shards": num_shards, "shards": [shard]},
        batch_format="pyarrow", zero_copy_batch=True)
    keys: Counter = Counter()
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        for qid, pids in zip(batch.column("qid").to_pylist(), batch.column("pids").to_pylist(),
                             strict=True):
            keys.update((qid, p) for p in pids)
    return keys


def _describe_keys(keys, limit: int = 10) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(f"({q!r}, {p!r})" for q, p in keys[:limit]) + more


def verify_scored_shards(input_path, output_dir, num_shards: int,
                         expected: dict[int, ShardExpect] | None = None) -> list[str]:
    """Check that the shards under `output_dir` hold exactly one finite score per input
    (qid, pid): none lost, none duplicated, none foreign. Returns the shard paths.
    Raises ScoreAlignmentError naming the offending keys."""
    files = input_files(input_path) if not isinstance(input_path, list) else input_path
    if expected is None:
        expected = expected_by_shard(files, num_shards)
    fs, folder = resolve_filesystem(output_dir)
    folder = folder.rstrip("/")
    paths, problems = [], []
    for shard in range(num_shards):
        path = f"{folder}/{shard_name(shard, num_shards)}"
        paths.append(path)
        if fs.get_file_info(path).type != pafs.FileType.File:
            problems.append(f"shard {shard}: {path} is missing")
            continue
        table = pq.read_table(path, columns=["qid", "pids", "teacher_scores"], filesystem=fs)
        got = ShardExpect()
        keys: Counter = Counter()
        bad_scores = []
        for qid, pids, scores in zip(table.column("qid").to_pylist(),
                                     table.column("pids").to_pylist(),
                                     table.column("teacher_scores").to_pylist(), strict=True):
            if scores is None or len(scores) != len(pids) or not np.isfinite(scores).all():
                bad_scores.append(qid)
            keys.update((qid, p) for p in pids)
            got.add(len(pids), sum(pair_hash(qid, p) for p in pids) & PAIR_DIGEST_MASK)
        exp = expected[shard]
        if bad_scores:
            problems.append(f"shard {shard}: groups without one finite score per pid: "
                            f"{sorted(bad_scores)[:10]}")
        if (got.groups, got.pairs, got.digest) != (exp.groups, exp.pairs, exp.digest):
            want = _shard_keys(files, num_shards, shard)
            lost = set(want) - set(keys)
            foreign = set(keys) - set(want)
            doubled = {k for k, c in keys.items() if c > want.get(k, 0) and k in want}
            detail = []
            if lost:
                detail.append(f"missing {len(lost)}: {_describe_keys(lost)}")
            if doubled:
                detail.append(f"duplicated {len(doubled)}: {_describe_keys(doubled)}")
            if foreign:
                detail.append(f"not in the input {len(foreign)}: {_describe_keys(foreign)}")
            problems.append(f"shard {shard} ({path}): " + ("; ".join(detail) or
                            f"{got.groups} groups / {got.pairs} pairs, expected "
                            f"{exp.groups} / {exp.pairs}"))
    if problems:
        raise ScoreAlignmentError("scored output does not match its input:\n  "
                                  + "\n  ".join(problems))
    return paths


def scored_pairs(output_dir) -> dict[tuple[str, str], float]:
    """{(qid, pid): score} of a scored output folder (small outputs; for tests and checks)."""
    out: dict[tuple[str, str], float] = {}
    for path in sorted(Path(output_dir).glob("shard-*.parquet")):
        table = pq.read_table(path, columns=["qid", "pids", "teacher_scores"])
        for qid, pids, scores in zip(*(table.column(c).to_pylist()
                                       for c in ("qid", "pids", "teacher_scores")), strict=True):
            for p, s in zip(pids, scores, strict=True):
                if (qid, p) in out:
                    raise ScoreAlignmentError(f"({qid!r}, {p!r}) is scored twice in {output_dir}")
                out[(qid, p)] = s
    return out

