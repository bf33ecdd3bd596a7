"""The teacher-scoring stage: candidate groups in, the same groups with `teacher_scores` out.

Three layers, each usable alone:

- `TeacherScorer`: the `Dataset.map_batches` callable class. Each actor builds its teacher once
  (from a picklable zero-argument `make_teacher`), flattens a batch of groups into pairs, looks
  them up in the score cache, sorts the missing pairs by passage length and scores them in
  sub-batches of the teacher batch size, writes the new scores to the cache, and returns every
  group with `teacher_scores` plus per-row counters (`pairs_scored`, `pairs_cached`,
  `teacher_calls`) for the driver to add up.
- `score_dataset(groups_ds, make_teacher, fingerprint, ...)`: the lazy Ray Data pipeline (an
  actor pool of `concurrency` actors, `num_gpus` each).
- `score_candidate_groups(input_path, output_dir, make_teacher, ...)`: the job. Groups go to
  `num_shards` deterministic shards by a stable hash of the qid; each shard becomes one parquet
  file, written to a temporary name and renamed once all its groups have arrived, and recorded in
  `_manifest.yaml`. A rerun skips committed shards, and the teacher work of an interrupted shard
  is mostly in the cache. At the end every shard is checked against the input: exactly one
  finite score per input (qid, pid), none lost, none duplicated (`ScoreAlignmentError` names
  the keys otherwise).

Teachers that override `Teacher.score_groups` (ensemble, precomputed: they normalise or align
per group) are scored a whole group at a time; a group is served from the cache only when all
of its candidates are.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import yaml

from raykd.data.records import CANDIDATE_GROUP_SCHEMA
from raykd.errors import RaykdError
from raykd.storage import is_uri
from raykd.teachers.base import Teacher
from raykd.teachers.cache import (
    ScoreCache,
    atomic_write_bytes,
    cache_enabled,
    candidate_key,
    list_files,
    open_cache,
    pair_hash,
    read_bytes,
    resolve_filesystem,
    stable_hash64,
)

log = logging.getLogger(__name__)

COUNTER_COLUMNS = ("pairs_scored", "pairs_cached", "teacher_calls")
MANIFEST = "_manifest.yaml"
MANIFEST_VERSION = 1
_MASK64 = (1 << 64) - 1

MakeTeacher = Callable[[], Teacher]


class ScoreAlignmentError(RaykdError, RuntimeError):
    """Scored output that does not hold exactly one finite score per input (qid, pid)."""


def is_groupwise(teacher: Teacher) -> bool:
    """True when the teacher's scores depend on the whole group (it overrides `score_groups`)."""
    flag = getattr(teacher, "groupwise", None)
    if flag is not None:
        return bool(flag)
    return type(teacher).score_groups is not Teacher.score_groups


def shard_of(qid: str, num_shards: int) -> int:
    """Deterministic shard of a query: the same in every process, run and input order."""
    return stable_hash64(qid) % num_shards


# ------------------------------------------------------------------ the actor


class TeacherScorer:
    """`map_batches` callable class: scores the candidate groups of a pyarrow batch.

    Args:
        make_teacher: picklable zero-argument callable that builds the teacher (called once per
            actor), e.g. `functools.partial(build_teacher, spec, corpus_path)`.
        fingerprint: the teacher's fingerprint as the driver knows it; the built teacher must
            agree (a mismatch would poison the cache). None trusts the built teacher.
        cache: a cache folder / URI (or None for no cache); the fingerprint picks the subfolder.
        batch_size: pairs per teacher call (pairs are sorted by passage length first).
        torch_threads: intra-op threads for torch in this actor (None leaves torch's default).
    """

    def __init__(self, make_teacher: MakeTeacher, fingerprint: str | None = None,
                 cache: str | None = None, batch_size: int = 32,
                 torch_threads: int | None = None, cache_options: Mapping | None = None,
                 sort_by_length: bool = True):
        self._make_teacher = make_teacher
        self._torch_threads = torch_threads
        self.teacher: Teacher | None = None
        self.fingerprint = fingerprint
        self.batch_size = int(batch_size)
        self.sort_by_length = sort_by_length
        self.groupwise = False
        if fingerprint is None or not cache_enabled(cache):
            self._build_teacher()
        # With a known fingerprint and a cache, the model loads on the first miss only: a
        # rerun served entirely from the cache never loads it.
        self.cache: ScoreCache | None = open_cache(cache, self.fingerprint,
                                                   **dict(cache_options or {}))

    def _build_teacher(self) -> Teacher:
        teacher = self._make_teacher()
        if self._torch_threads and "torch" in sys.modules:  # only teachers that run torch
            sys.modules["torch"].set_num_threads(int(self._torch_threads))
        own = teacher.fingerprint
        if self.fingerprint is not None and own != self.fingerprint:
            raise ValueError(f"the teacher built in this actor has fingerprint {own!r}, but the "
                             f"job scores for {self.fingerprint!r}; refusing to mix their scores")
        self.teacher, self.fingerprint = teacher, own
        self.groupwise = is_groupwise(teacher)
        return teacher

    def _all_from_cache(self, groups) -> list[np.ndarray] | None:
        """Every group's scores when the cache holds all of them, else None."""
        flat = self.cache.lookup([g["qid"] for g in groups for _ in g["keys"]],
                                 [k for g in groups for k in g["keys"]])
        if np.isnan(flat).any():
            return None
        bounds = np.cumsum([0] + [len(g["keys"]) for g in groups])
        return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def __call__(self, batch: pa.Table) -> pa.Table:
        if not isinstance(batch, pa.Table):
            batch = pa.Table.from_pydict(batch) if isinstance(batch, dict) else pa.table(batch)
        groups = _group_rows(batch)
        served = None
        if self.teacher is None:
            served = self._all_from_cache(groups)
            if served is None:
                self._build_teacher()
        if served is not None:
            scores, scored = served, [0] * len(groups)
            cached = [len(g["keys"]) for g in groups]
            calls = [0] * len(groups)
        else:
            calls_before = self.teacher.forward_calls
            if self.groupwise:
                scores, scored, cached = self._score_whole_groups(groups)
            else:
                scores, scored, cached = self._score_pairs(groups)
            calls = [0] * len(groups)
            if groups:
                calls[0] = self.teacher.forward_calls - calls_before
        out = batch.drop_columns([c for c in ("teacher_scores", *COUNTER_COLUMNS)
                                  if c in batch.column_names])
        out = out.append_column("teacher_scores", pa.array(
            [s.astype(np.float64).tolist() for s in scores], pa.list_(pa.float64())))
        for name, values in zip(COUNTER_COLUMNS, (scored, cached, calls), strict=True):
            out = out.append_column(name, pa.array(values, pa.int64()))
        return out

    # -- pair-level teachers: flatten, dedupe, look up, bucket by length, score the rest

    def _score_pairs(self, groups):
        index: dict[tuple[str, str], int] = {}
        owner: list[int] = []  # the group that first asked for each unique pair
        u_qid, u_key, u_query, u_text = [], [], [], []
        slots = []
        for g, group in enumerate(groups):
            row = []
            for key, text in zip(group["keys"], group["texts"], strict=True):
                pair = (group["qid"], key)
                if pair not in index:
                    index[pair] = len(u_key)
                    owner.append(g)
                    u_qid.append(group["qid"])
                    u_key.append(key)
                    u_query.append(group["query"])
                    u_text.append(text)
                row.append(index[pair])
            slots.append(row)
        values = (self.cache.lookup(u_qid, u_key) if self.cache is not None
                  else np.full(len(u_key), np.nan, dtype=np.float32))
        missing = np.flatnonzero(np.isnan(values))
        if self.sort_by_length:
            missing = missing[np.argsort([-len(u_text[i]) for i in missing], kind="stable")]
        for start in range(0, len(missing), self.batch_size):
            idx = missing[start:start + self.batch_size]
            values[idx] = self.teacher.score([u_query[i] for i in idx], [u_text[i] for i in idx])
        if self.cache is not None and len(missing):
            self.cache.put([u_qid[i] for i in missing], [u_key[i] for i in missing],
                           values[missing])
        scored = np.bincount(np.asarray(owner, dtype=np.int64)[missing],
                             minlength=len(groups)).tolist() if len(missing) else [0] * len(groups)
        scores = [values[np.asarray(row, dtype=np.int64)] for row in slots]
        cached = [len(row) - n for row, n in zip(slots, scored, strict=True)]
        return scores, scored, cached

    # -- group-level teachers: a group is cached only when all of it is

    def _score_whole_groups(self, groups):
        n = len(groups)
        scores: list[np.ndarray | None] = [None] * n
        if self.cache is not None and groups:
            flat_q = [g["qid"] for g in groups for _ in g["keys"]]
            flat_k = [k for g in groups for k in g["keys"]]
            flat = self.cache.lookup(flat_q, flat_k)
            start = 0
            for i, g in enumerate(groups):
                part = flat[start:start + len(g["keys"])]
                start += len(g["keys"])
                if not np.isnan(part).any():
                    scores[i] = part
        todo = [i for i in range(n) if scores[i] is None]
        if todo:
            result = self.teacher.score_groups([groups[i] for i in todo])
            for i, s in zip(todo, result, strict=True):
                s = np.asarray(s, dtype=np.float32)
                if s.shape != (len(groups[i]["keys"]),) or not np.isfinite(s).all():
                    raise RuntimeError(f"{self.teacher.kind} teacher returned bad scores for "
                                       f"qid {groups[i]['qid']!r}: shape {s.shape}")
                scores[i] = s
            if self.cache is not None:
                self.cache.put([groups[i]["qid"] for i in todo for _ in groups[i]["keys"]],
                               [k for i in todo for k in groups[i]["keys"]],
                               np.concatenate([scores[i] for i in todo]))
        todo_set = set(todo)
        scored = [len(g["keys"]) if i in todo_set else 0 for i, g in enumerate(groups)]
        cached = [len(g["keys"]) - s for g, s in zip(groups, scored, strict=True)]
        return scores, scored, cached


def _group_rows(batch: pa.Table) -> list[dict]:
    cols = {name: batch.column(name).to_pylist()
            for name in ("qid", "query", "pids", "texts") if name in batch.column_names}
    missing = {"qid", "query", "pids", "texts"} - set(cols)
    if missing:
        raise ValueError(f"candidate groups need columns {sorted(missing)}")
    kinds = (batch.column("kinds").to_pylist() if "kinds" in batch.column_names
             else [None] * batch.num_rows)
    groups = []
    for qid, query, pids, texts, kind in zip(cols["qid"], cols["query"], cols["pids"],
                                             cols["texts"], kinds, strict=True):
        kind = kind or [None] * len(pids)
        groups.append({"qid": qid, "query": query, "pids": pids, "texts": texts,
                       "keys": [candidate_key(p, t, k)
                                for p, t, k in zip(pids, texts, kind, strict=True)]})
    return groups


# ------------------------------------------------------------------ the pipeline


def score_dataset(groups_ds, make_teacher: MakeTeacher, fingerprint: str | None = None, *,
                  concurrency: int = 1, num_gpus: float = 0.0, num_cpus: float | None = None,
                  batch_size: int = 32, groups_per_batch: int = 64, cache: str | None = None,
                  cache_options: Mapping | None = None, torch_threads: int | None = None,
                  ray_remote_args: Mapping | None = None):
    """A lazy dataset of the groups with `teacher_scores` and the counter columns.

    `concurrency` actors each hold one teacher (`num_gpus` GPUs and `num_cpus` CPUs apiece;
    CPU-only actors take 1 CPU and that many torch threads unless `torch_threads` says).
    `ray_remote_args` reach the actors (e.g. `max_restarts`, `max_task_retries`).
    """
    if num_cpus is None:
        num_cpus = 1.0
    if torch_threads is None and not num_gpus:
        torch_threads = max(1, int(num_cpus))
    kwargs = {"make_teacher": make_teacher, "fingerprint": fingerprint,
              "cache": None if isinstance(cache, ScoreCache) else cache,
              "batch_size": batch_size, "torch_threads": torch_threads,
              "cache_options": dict(cache_options or {})}
    if isinstance(cache, ScoreCache):
        kwargs["cache"] = cache.root
        kwargs["cache_options"] = {"num_buckets": cache.num_buckets,
                                   "refresh_seconds": cache.refresh_seconds,
                                   "max_resident_pairs": cache.max_resident_pairs,
                                   **kwargs["cache_options"]}
    remote_args = dict(ray_remote_args or {})
    if num_gpus:
        remote_args["num_gpus"] = num_gpus
    import ray.data

    return groups_ds.map_batches(
        TeacherScorer, fn_constructor_kwargs=kwargs, batch_size=groups_per_batch,
        batch_format="pyarrow", zero_copy_batch=True,
        compute=ray.data.ActorPoolStrategy(size=concurrency), num_cpus=num_cpus, **remote_args)


# ------------------------------------------------------------------ the job


@dataclass
class ScoringReport:
    """What `score_candidate_groups` did."""

    output_dir: str
    fingerprint: str
    num_shards: int
    shards_skipped: int = 0
    shards_written: int = 0
    groups: int = 0
    pairs: int = 0
    pairs_scored: int = 0
    pairs_cached: int = 0
    teacher_calls: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    shard_files: list[str] = field(default_factory=list)

    @property
    def pairs_processed(self) -> int:
        return self.pairs_scored + self.pairs_cached

    @property
    def pairs_per_second(self) -> float:
        secs = self.seconds.get("score", 0.0)
        return self.pairs_processed / secs if secs > 0 else 0.0

    def summary(self) -> str:
        hit = self.pairs_cached / self.pairs_processed if self.pairs_processed else 0.0
        return (f"{self.groups} groups / {self.pairs} pairs in {self.num_shards} shards "
                f"({self.shards_written} written, {self.shards_skipped} already done); "
                f"this run: {self.pairs_scored} pairs scored by the teacher in "
                f"{self.teacher_calls} calls, {self.pairs_cached} from the cache "
                f"({hit:.1%}), {self.pairs_per_second:.1f} pairs/s")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["pairs_per_second"] = self.pairs_per_second
        return out


@dataclass
class _ShardExpect:
    groups: int = 0
    pairs: int = 0
    digest: int = 0

    def add(self, pairs: int, digest: int) -> None:
        self.groups += 1
        self.pairs += pairs
        self.digest = (self.digest + digest) & _MASK64


def _key_summary(batch: pa.Table, num_shards: int) -> pa.Table:
    """Per group: its shard, candidate count, a digest of its (qid, pid) keys, a repeated pid."""
    qids = batch.column("qid").to_pylist()
    pidss = batch.column("pids").to_pylist()
    shards, pairs, digests, dups = [], [], [], []
    for qid, pids in zip(qids, pidss, strict=True):
        shards.append(shard_of(qid, num_shards))
        pairs.append(len(pids))
        digests.append(sum(pair_hash(qid, p) for p in pids) & _MASK64)
        repeated = [p for p, c in Counter(pids).items() if c > 1]
        dups.append(repeated[0] if repeated else None)
    return pa.table({"qid": qids, "shard": pa.array(shards, pa.int64()),
                     "pairs": pa.array(pairs, pa.int64()), "digest": pa.array(digests, pa.uint64()),
                     "dup_pid": pa.array(dups, pa.string())})


def _keep_shards(batch: pa.Table, num_shards: int, shards: list[int]) -> pa.Table:
    wanted = set(shards)
    mask = [shard_of(q, num_shards) in wanted for q in batch.column("qid").to_pylist()]
    return batch.filter(pa.array(mask, pa.bool_()))


def _input_files(input_path) -> list[str]:
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


def _input_signature(files: list[str]) -> list[dict]:
    out = []
    for f in files:
        size = os.path.getsize(f) if "://" not in f and os.path.exists(f) else None
        out.append({"path": f, "bytes": size})
    return out


def _expected_by_shard(files: list[str], num_shards: int) -> dict[int, _ShardExpect]:
    """One streaming pass over the input: per-shard group/pair counts and key digests."""
    from raykd.data.ray_datasets import groups_dataset

    summary = groups_dataset(files).select_columns(["qid", "pids"]).map_batches(
        _key_summary, fn_kwargs={"num_shards": num_shards}, batch_format="pyarrow",
        zero_copy_batch=True)
    expected = {s: _ShardExpect() for s in range(num_shards)}
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


class _ShardWriter:
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


def _read_manifest(fs, folder: str) -> dict | None:
    raw = read_bytes(fs, f"{folder}/{MANIFEST}")
    return None if raw is None else yaml.safe_load(raw.decode("utf-8"))


def _write_manifest(fs, folder: str, manifest: dict) -> None:
    atomic_write_bytes(fs, f"{folder}/{MANIFEST}",
                       yaml.safe_dump(manifest, sort_keys=False).encode("utf-8"))


def _to_output_schema(table: pa.Table) -> pa.Table:
    cols = []
    for f in CANDIDATE_GROUP_SCHEMA:
        if f.name in table.column_names:
            cols.append(table.column(f.name).cast(f.type))
        else:
            cols.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=CANDIDATE_GROUP_SCHEMA)


def remote_fingerprint(make_teacher: MakeTeacher) -> str:
    """The fingerprint of the teacher `make_teacher` builds, built in a Ray worker (so the
    driver needs neither the model nor its dependencies)."""
    import ray

    @ray.remote(num_cpus=1)
    def _fp(factory):
        return factory().fingerprint

    return ray.get(_fp.remote(make_teacher))


def score_candidate_groups(input_path, output_dir, make_teacher: MakeTeacher,
                           fingerprint: str | None = None, *, num_shards: int = 8,
                           concurrency: int = 1, num_gpus: float = 0.0,
                           num_cpus: float | None = None, batch_size: int = 32,
                           groups_per_batch: int = 64, cache: str | None = None,
                           cache_options: Mapping | None = None,
                           torch_threads: int | None = None,
                           ray_remote_args: Mapping | None = None,
                           overwrite: bool = False, compact_cache: bool = True,
                           ) -> ScoringReport:
    """Score every candidate group under `input_path` into `num_shards` parquet files.

    Resumable: committed shards (in the manifest and on storage) are skipped; a fingerprint,
    shard count or input that differs from the manifest's is an error unless `overwrite`.
    Verifies the whole output against the input at the end (`ScoreAlignmentError`).
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    t0 = time.perf_counter()
    files = _input_files(input_path)
    if fingerprint is None:
        fingerprint = remote_fingerprint(make_teacher)
    fs, folder = resolve_filesystem(output_dir)
    folder = folder.rstrip("/")
    fs.create_dir(folder, recursive=True)
    report = ScoringReport(str(output_dir), fingerprint, num_shards)
    signature = _input_signature(files)
    manifest = _read_manifest(fs, folder)
    fresh = {"version": MANIFEST_VERSION, "fingerprint": fingerprint, "num_shards": num_shards,
             "input": signature, "shards": {}}
    if manifest is not None and not overwrite:
        for key in ("fingerprint", "num_shards", "input"):
            if manifest.get(key) != fresh[key]:
                raise ValueError(
                    f"{output_dir} holds scores made with {key}={manifest.get(key)!r}, not "
                    f"{fresh[key]!r}; use a new output folder or overwrite=True")
    if manifest is None or overwrite:
        manifest = fresh
        for stale in list_files(fs, folder, "shard-", ".parquet"):
            fs.delete_file(stale)
    for stale in list_files(fs, folder, ".shard-"):  # temporaries of an interrupted run
        fs.delete_file(stale)

    expected = _expected_by_shard(files, num_shards)
    report.seconds["count"] = time.perf_counter() - t0
    report.groups = sum(e.groups for e in expected.values())
    report.pairs = sum(e.pairs for e in expected.values())
    present = set(list_files(fs, folder, "shard-", ".parquet"))
    done = {int(s) for s, meta in manifest["shards"].items()
            if f"{folder}/{meta['file']}" in present}
    manifest["shards"] = {s: m for s, m in manifest["shards"].items() if int(s) in done}
    pending = [s for s in range(num_shards) if s not in done]
    report.shards_skipped = len(done)

    def commit(shard: int, writer: _ShardWriter) -> None:
        writer.commit()
        exp = expected[shard]
        manifest["shards"][shard] = {"file": shard_name(shard, num_shards), "groups": exp.groups,
                                     "pairs": exp.pairs, "digest": f"{exp.digest:016x}"}
        _write_manifest(fs, folder, manifest)
        report.shards_written += 1
        log.info("committed shard %d/%d (%d groups, %d pairs)", shard + 1, num_shards,
                 exp.groups, exp.pairs)

    _write_manifest(fs, folder, manifest)
    t1 = time.perf_counter()
    writers = {s: _ShardWriter(fs, folder, shard_name(s, num_shards)) for s in pending}
    try:
        for shard in [s for s in pending if expected[s].groups == 0]:
            commit(shard, writers.pop(shard))
        if writers:
            _run_pipeline(files, list(writers), num_shards, writers, expected, commit, report,
                          make_teacher, fingerprint, concurrency=concurrency, num_gpus=num_gpus,
                          num_cpus=num_cpus, batch_size=batch_size,
                          groups_per_batch=groups_per_batch, cache=cache,
                          cache_options=cache_options, torch_threads=torch_threads,
                          ray_remote_args=ray_remote_args)
    finally:
        for writer in writers.values():
            writer.abort()
    report.seconds["score"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    report.shard_files = verify_scored_shards(files, output_dir, num_shards, expected)
    report.seconds["verify"] = time.perf_counter() - t2
    cache_store = open_cache(cache, fingerprint, **dict(cache_options or {}))
    if compact_cache and cache_store is not None and report.pairs_scored:
        cache_store.compact()
    report.seconds["total"] = time.perf_counter() - t0
    return report


def _run_pipeline(files, shards, num_shards, writers, expected, commit, report, make_teacher,
                  fingerprint, **score_kwargs) -> None:
    from raykd.data.ray_datasets import groups_dataset

    ds = groups_dataset(files)
    if len(shards) < num_shards:
        ds = ds.map_batches(_keep_shards, fn_kwargs={"num_shards": num_shards, "shards": shards},
                            batch_format="pyarrow", zero_copy_batch=True)
    scored = score_dataset(ds, make_teacher, fingerprint, **score_kwargs)
    for batch in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
        if batch.num_rows == 0:
            continue
        for name in COUNTER_COLUMNS:
            total = pc.sum(batch.column(name)).as_py() or 0
            setattr(report, name, getattr(report, name) + int(total))
        rows = _to_output_schema(batch)
        qids = rows.column("qid").to_pylist()
        shard_ids = np.fromiter((shard_of(q, num_shards) for q in qids), np.int64, len(qids))
        for shard in np.unique(shard_ids).tolist():
            writer = writers.get(shard)
            if writer is None:
                raise ScoreAlignmentError(f"the scorer returned qid(s) of shard {shard}, which "
                                          "was not being scored (already committed or unknown)")
            idx = np.flatnonzero(shard_ids == shard)
            for i in idx:
                if qids[i] in writer.qids:
                    raise ScoreAlignmentError(f"qid {qids[i]!r} came back twice from the scorer")
                writer.qids.add(qids[i])
            writer.add(rows.take(pa.array(idx)))
            if writer.rows == expected[shard].groups:
                commit(shard, writers.pop(shard))
    if writers:
        lost = {s: expected[s].groups - w.rows for s, w in writers.items()}
        raise ScoreAlignmentError(f"the scorer lost groups: missing per shard {lost}")


# ------------------------------------------------------------------ verification


def _shard_keys(files, num_shards, shard) -> Counter:
    from raykd.data.ray_datasets import groups_dataset

    ds = groups_dataset(files).select_columns(["qid", "pids"]).map_batches(
        _keep_shards, fn_kwargs={"num_shards": num_shards, "shards": [shard]},
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
                         expected: dict[int, _ShardExpect] | None = None) -> list[str]:
    """Check that the shards under `output_dir` hold exactly one finite score per input
    (qid, pid): none lost, none duplicated, none foreign. Returns the shard paths.
    Raises ScoreAlignmentError naming the offending keys."""
    files = _input_files(input_path) if not isinstance(input_path, list) else input_path
    if expected is None:
        expected = _expected_by_shard(files, num_shards)
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
        got = _ShardExpect()
        keys: Counter = Counter()
        bad_scores = []
        for qid, pids, scores in zip(table.column("qid").to_pylist(),
                                     table.column("pids").to_pylist(),
                                     table.column("teacher_scores").to_pylist(), strict=True):
            if scores is None or len(scores) != len(pids) or not np.isfinite(scores).all():
                bad_scores.append(qid)
            keys.update((qid, p) for p in pids)
            got.add(len(pids), sum(pair_hash(qid, p) for p in pids) & _MASK64)
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


__all__ = [
    "COUNTER_COLUMNS",
    "ScoreAlignmentError",
    "ScoringReport",
    "TeacherScorer",
    "is_groupwise",
    "remote_fingerprint",
    "score_candidate_groups",
    "score_dataset",
    "scored_pairs",
    "shard_of",
    "verify_scored_shards",
]
