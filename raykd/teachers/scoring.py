"""The teacher-scoring stage: candidate groups in, the same groups with `teacher_scores` out.

- `TeacherScorer`: the `Dataset.map_batches` callable class. Each actor builds its teacher once
  (from a picklable zero-argument `make_teacher`), flattens a batch of groups into pairs, looks
  them up in the score cache, sorts the missing pairs by passage length and scores them in
  sub-batches of the teacher batch size, writes the new scores to the cache, and returns every
  group with `teacher_scores` plus per-row counters (`pairs_scored`, `pairs_cached`,
  `teacher_calls`) for the driver to add up.
- `score_dataset(groups_ds, make_teacher, fingerprint, ...)`: the lazy Ray Data pipeline (an
  actor pool of `concurrency` actors, `num_gpus` each).
- `score_candidate_groups(input_path, output_dir, make_teacher, ...)`: the job, over the
  resumable sharded output of `raykd.teachers.shards` and checked at the end by
  `raykd.teachers.verification` (exactly one finite score per input pair).

Teachers that override `Teacher.score_groups` (ensemble, precomputed: they normalise or align
per group) are scored a whole group at a time; a group is served from the cache only when all
of its candidates are.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raykd.errors import ScoreAlignmentError
from raykd.progress import Progress
from raykd.teachers.base import Teacher
from raykd.teachers.cache import (
    ScoreCache,
    cache_enabled,
    candidate_key,
    list_files,
    open_cache,
    resolve_filesystem,
)
from raykd.teachers.shards import (
    MANIFEST_VERSION,
    ShardWriter,
    expected_by_shard,
    input_files,
    input_signature,
    keep_shards,
    read_manifest,
    shard_name,
    shard_of,
    to_output_schema,
    write_manifest,
)
from raykd.teachers.verification import verify_scored_shards

log = logging.getLogger(__name__)


COUNTER_COLUMNS = ("pairs_scored", "pairs_cached", "teacher_calls")


MakeTeacher = Callable[[], Teacher]


def is_groupwise(teacher: Teacher) -> bool:
    """True when the teacher's scores depend on the whole group (it overrides `score_groups`)."""
    flag = getattr(teacher, "groupwise", None)
    if flag is not None:
        return bool(flag)
    return type(teacher).score_groups is not Teacher.score_groups


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

    from raykd.runtime import fit_actor_pool

    return groups_ds.map_batches(
        TeacherScorer, fn_constructor_kwargs=kwargs, batch_size=groups_per_batch,
        batch_format="pyarrow", zero_copy_batch=True,
        compute=ray.data.ActorPoolStrategy(
            size=fit_actor_pool(concurrency, num_cpus, "teacher scoring")),
        num_cpus=num_cpus, **remote_args)


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
    files = input_files(input_path)
    if fingerprint is None:
        fingerprint = remote_fingerprint(make_teacher)
    fs, folder = resolve_filesystem(output_dir)
    folder = folder.rstrip("/")
    fs.create_dir(folder, recursive=True)
    report = ScoringReport(str(output_dir), fingerprint, num_shards)
    signature = input_signature(files)
    manifest = read_manifest(fs, folder)
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

    expected = expected_by_shard(files, num_shards)
    report.seconds["count"] = time.perf_counter() - t0
    report.groups = sum(e.groups for e in expected.values())
    report.pairs = sum(e.pairs for e in expected.values())
    present = set(list_files(fs, folder, "shard-", ".parquet"))
    done = {int(s) for s, meta in manifest["shards"].items()
            if f"{folder}/{meta['file']}" in present}
    manifest["shards"] = {s: m for s, m in manifest["shards"].items() if int(s) in done}
    pending = [s for s in range(num_shards) if s not in done]
    report.shards_skipped = len(done)

    def commit(shard: int, writer: ShardWriter) -> None:
        writer.commit()
        exp = expected[shard]
        manifest["shards"][shard] = {"file": shard_name(shard, num_shards), "groups": exp.groups,
                                     "pairs": exp.pairs, "digest": f"{exp.digest:016x}"}
        write_manifest(fs, folder, manifest)
        report.shards_written += 1
        log.debug("committed shard %d/%d (%d groups, %d pairs)", shard + 1, num_shards,
                 exp.groups, exp.pairs)

    write_manifest(fs, folder, manifest)
    t1 = time.perf_counter()
    writers = {s: ShardWriter(fs, folder, shard_name(s, num_shards)) for s in pending}
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
        ds = ds.map_batches(keep_shards, fn_kwargs={"num_shards": num_shards, "shards": shards},
                            batch_format="pyarrow", zero_copy_batch=True)
    scored = score_dataset(ds, make_teacher, fingerprint, **score_kwargs)
    progress = Progress("teacher scoring", total=sum(expected[s].groups for s in shards),
                        unit="groups")
    for batch in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
        if batch.num_rows == 0:
            continue
        progress.update(batch.num_rows)
        for name in COUNTER_COLUMNS:
            total = pc.sum(batch.column(name)).as_py() or 0
            setattr(report, name, getattr(report, name) + int(total))
        rows = to_output_schema(batch)
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
    progress.close()

