"""The resumable sharded output of teacher scoring: groups go to `num_shards` deterministic
shards by a stable hash of the qid; each shard becomes one parquet file, written to a temporary
name and renamed once all its groups have arrived, and recorded in `_manifest.yaml` with the
teacher fingerprint and the input's signature. A rerun skips committed shards.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import yaml

from raykd.data.records import CANDIDATE_GROUP_SCHEMA
from raykd.errors import ScoreAlignmentError
from raykd.storage import is_uri
from raykd.teachers.cache import (
    atomic_write_bytes,
    pair_hash,
    read_bytes,
    stable_hash64,
)

log = logging.getLogger(__name__)


MANIFEST = "_manifest.yaml"


MANIFEST_VERSION = 1


PAIR_DIGEST_MASK = (1 << 64) - 1


def shard_of(qid: str, num_shards: int) -> int:
    """Deterministic shard of a query: the same in every process, run and input order."""
    return stable_hash64(qid) % num_shards


@dataclass
class ShardExpect:
    groups: int = 0
    pairs: int = 0
    digest: int = 0

    def add(self, pairs: int, digest: int) -> None:
        self.groups += 1
        self.pairs += pairs
        self.digest = (self.digest + digest) & PAIR_DIGEST_MASK


def key_summary(batch: pa.Table, num_shards: int) -> pa.Table:
    """Per group: its shard, candidate count, a digest of its (qid, pid) keys, a repeated pid."""
    qids = batch.column("qid").to_pylist()
    pidss = batch.column("pids").to_pylist()
    shards, pairs, digests, dups = [], [], [], []
    for qid, pids in zip(qids, pidss, strict=True):
        shards.append(shard_of(qid, num_shards))
        pairs.append(len(pids))
        digests.append(sum(pair_hash(qid, p) for p in pids) & PAIR_DIGEST_MASK)
        repeated = [p for p, c in Counter(pids).items() if c > 1]
        dups.append(repeated[0] if repeated else None)
    return pa.table({"qid": qids, "shard": pa.array(shards, pa.int64()),
                     "pairs": pa.array(pairs, pa.int64()), "digest": pa.array(digests, pa.uint64()),
                     "dup_pid": pa.array(dups, pa.string())})


def keep_shards(batch: pa.Table, num_shards: int, shards: list[int]) -> pa.Table:
    wanted = set(shards)
    mask = [shard_of(q, num_shards) in wanted for q in batch.column("qid").to_pylist()]
    return batch.filter(pa.array(mask, pa.bool_()))


def input_files(input_path) -> list[str]:
    """The candidate-group files of a file, a folder (its .jsonl[.gz]/.parquet files, hidden
    and underscore-prefixed names left out) or a list of them, sorted, absolute."""
    from raykd.data.ray_datasets import file_format

    items = [input_path] if isinstance(input_path, (str, os.PathLike)) else list(input_path)
    out: list[str] = []
    for item in items:
        text = os.fspath(item)
        if is_uri(text):
            out.append(text)
            continue
        path = Path(text).resolve()
        if path.is_dir():
            found = sorted(str(p) for p in path.iterdir() if p.is_file()
                           and not p.name.startswith((".", "_"))
                           and file_format(p) in ("jsonl", "parquet"))
            if not found:
                raise FileNotFoundError(f"{path}: no candidate-group files (.jsonl[.gz], "
                                        ".parquet)")
            out.extend(found)
        elif path.is_file():
            out.append(str(path))
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    if not out:
        raise ValueError("no input paths")
    return out


def input_signature(files: list[str]) -> list[dict]:
    out = []
    for f in files:
        size = os.path.getsize(f) if "://" not in f and os.path.exists(f) else None
        out.append({"path": f, "bytes": size})
    return out


def expected_by_shard(files: list[str], num_shards: int) -> dict[int, ShardExpect]:
    """One streaming pass over the input: per-shard group/pair counts and key digests."""
    from raykd.data.ray_datasets import groups_dataset

    summary = groups_dataset(files).select_columns(["qid", "pids"]).map_batches(
        key_summary, fn_kwargs={"num_shards": num_shards}, batch_format="pyarrow",
        zero_copy_batch=True)
    expected = {s: ShardExpect() for s in range(num_shards)}
    seen: set[str] = set()
    for batch in summary.iter_batches(batch_size=None, batch_format="pyarrow"):
        for qid, shard, pairs, digest, dup in zip(*(batch.column(c).to_pylist() for c in
                                                     ("qid", "shard", "pairs", "digest",
                                                      "dup_pid")), strict=True):
            if qid in seen:
                raise ScoreAlignmentError(f"qid {qid!r} appears in more than one input group; "
                                          "scores are keyed by (qid, pid), so it is ambiguous")
            if dup is not None:
                raise ScoreAlignmentError(f"group {qid!r} lists pid {dup!r} twice; scores are "
                                          "keyed by (qid, pid), so it is ambiguous")
            seen.add(qid)
            expected[shard].add(pairs, digest)
    return expected


class ShardWriter:
    """Buffers one shard's rows into a hidden temporary parquet file; `commit` renames it."""

    def __init__(self, fs: pafs.FileSystem, folder: str, name: str, flush_rows: int = 512):
        self.fs, self.final = fs, f"{folder}/{name}"
        self.tmp = f"{folder}/.{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.flush_rows = flush_rows
        self.rows = 0
        self.qids: set[str] = set()
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._stream = None
        self._writer = None

    def add(self, table: pa.Table) -> None:
        self._buffer.append(table)
        self._buffered += table.num_rows
        self.rows += table.num_rows
        if self._buffered >= self.flush_rows:
            self._flush()

    def _flush(self) -> None:
        if self._writer is None:
            self._stream = self.fs.open_output_stream(self.tmp)
            self._writer = pq.ParquetWriter(self._stream, CANDIDATE_GROUP_SCHEMA)
        if self._buffer:
            self._writer.write_table(pa.concat_tables(self._buffer))
        self._buffer, self._buffered = [], 0

    def commit(self) -> str:
        self._flush()
        if self.rows == 0:
            self._writer.write_table(CANDIDATE_GROUP_SCHEMA.empty_table())
        self._writer.close()
        self._stream.close()
        self.fs.move(self.tmp, self.final)
        return self.final

    def abort(self) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
                self._stream.close()
            self.fs.delete_file(self.tmp)
        except (OSError, FileNotFoundError):
            pass


def shard_name(shard: int, num_shards: int) -> str:
    return f"shard-{shard:05d}-of-{num_shards:05d}.parquet"


def read_manifest(fs, folder: str) -> dict | None:
    raw = read_bytes(fs, f"{folder}/{MANIFEST}")
    return None if raw is None else yaml.safe_load(raw.decode("utf-8"))


def write_manifest(fs, folder: str, manifest: dict) -> None:
    atomic_write_bytes(fs, f"{folder}/{MANIFEST}",
                       yaml.safe_dump(manifest, sort_keys=False).encode("utf-8"))


def to_output_schema(table: pa.Table) -> pa.Table:
    cols = []
    for f in CANDIDATE_GROUP_SCHEMA:
        if f.name in table.column_names:
            cols.append(table.column(f.name).cast(f.type))
        else:
            cols.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=CANDIDATE_GROUP_SCHEMA)

