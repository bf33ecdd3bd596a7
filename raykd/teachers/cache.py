"""Persistent teacher-score cache: parquet parts keyed by (teacher fingerprint, qid, candidate key).

Layout (a local folder or any pyarrow filesystem URI, e.g. ``s3://bucket/cache``)::

    <root>/<fingerprint>/_format.json              {"version": 1, "num_buckets": 16}
    <root>/<fingerprint>/bucket=007/part-<ns>-<uuid>.parquet
                                                   qid: string, key: string, h: uint64, score: float32

- The candidate key is the pid, or ``sha1:<hex of the text>`` for a candidate without a stable pid
  (a dark example: kind ``dark_mix``/``dark_mask`` or a pid starting with ``dark:``).
- A row lives in the bucket ``stable_hash64(qid) % num_buckets``: a reader loads only the
  buckets of the qids it is asked about, lazily, and keeps them as two compact numpy arrays
  (sorted 64-bit key hashes, float32 scores: 12 bytes a pair) with a bound on resident pairs.
- Writers only ever add parts, each written to a hidden temporary name and renamed into place,
  so a reader sees whole parts or nothing, from any process and across reruns. `compact()`
  merges each bucket's parts into one (run it when no job is writing).
- Keys are matched by a 64-bit hash of ``qid\\x1fkey``; the strings are stored too, for inspection.
  A collision needs ~4e9 pairs under one fingerprint to become likely. No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raykd.storage import is_uri

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DARK_PID_PREFIX = "dark:"
TEXT_KEY_PREFIX = "sha1:"
TEXT_KEYED_KINDS = frozenset({"dark_mix", "dark_mask"})
PART_SCHEMA = pa.schema([
    pa.field("qid", pa.string(), nullable=False),
    pa.field("key", pa.string(), nullable=False),
    pa.field("h", pa.uint64(), nullable=False),
    pa.field("score", pa.float32(), nullable=False),
])
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")


def stable_hash64(text: str) -> int:
    """A 64-bit hash of a string that is the same in every process and Python version."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def pair_hash(qid: str, key: str) -> int:
    """The 64-bit identity of a (qid, candidate key) pair."""
    return stable_hash64(f"{qid}\x1f{key}")


def candidate_key(pid: str, text: str, kind: str | None = None) -> str:
    """The cache key of a candidate: its pid, or the sha1 of its text when the pid is not stable
    (dark examples, whose text is generated and whose pid may be reused across runs)."""
    if (kind is not None and kind in TEXT_KEYED_KINDS) or pid.startswith(DARK_PID_PREFIX):
        return TEXT_KEY_PREFIX + hashlib.sha1(text.encode("utf-8")).hexdigest()
    return pid


def resolve_filesystem(location: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a local path or a URI such as ``s3://bucket/prefix``."""
    location = os.fspath(location)
    if is_uri(location):
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), os.path.abspath(location)


def atomic_write_bytes(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write `data` to a hidden temporary sibling, then rename it onto `path`."""
    parent, name = path.rsplit("/", 1)
    tmp = f"{parent}/.{name}.tmp-{uuid.uuid4().hex[:12]}"
    with fs.open_output_stream(tmp) as out:
        out.write(data)
    fs.move(tmp, path)


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes | None:
    """File contents, or None when it does not exist."""
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as src:
        return src.read()


def list_files(fs: pafs.FileSystem, folder: str, prefix: str = "", suffix: str = "") -> list[str]:
    """Sorted full paths of the plain files in `folder` (none when it does not exist)."""
    for attempt in range(5):
        try:
            infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
            break
        except FileNotFoundError:
            # pyarrow's local listing races another process creating `folder` (it fails to
            # open it, then finds it exists and raises): the folder is new, so list it again.
            if attempt == 4:
                raise
            time.sleep(0.01 * (attempt + 1))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File
                  and i.base_name.startswith(prefix) and i.base_name.endswith(suffix))


@dataclass
class _Bucket:
    hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    parts: set[str] = field(default_factory=set)
    refreshed_at: float = 0.0

    def merge(self, hashes: np.ndarray, scores: np.ndarray) -> None:
        if not len(hashes):
            return
        all_h = np.concatenate([self.hashes, hashes.astype(np.uint64)])
        all_s = np.concatenate([self.scores, scores.astype(np.float32)])
        uniq, first = np.unique(all_h, return_index=True)  # keeps the earliest score of a key
        self.hashes, self.scores = uniq, all_s[first]

    def get(self, hashes: np.ndarray) -> np.ndarray:
        out = np.full(len(hashes), np.nan, dtype=np.float32)
        if not len(self.hashes) or not len(hashes):
            return out
        pos = np.searchsorted(self.hashes, hashes)
        pos_clipped = np.minimum(pos, len(self.hashes) - 1)
        hit = self.hashes[pos_clipped] == hashes
        out[hit] = self.scores[pos_clipped[hit]]
        return out


class ScoreCache:
    """Teacher scores of one fingerprint, shared by every process that can reach `root`.

    `lookup(qids, keys)` returns float32 scores with NaN for misses; `put(qids, keys, scores)`
    appends a part per bucket touched. `refresh_seconds` bounds how often a bucket already in
    memory is re-listed to pick up parts other processes wrote since (on a miss only).
    `max_resident_pairs` bounds memory: least recently used buckets are dropped beyond it.
    """

    def __init__(self, root: str | os.PathLike, fingerprint: str, *, num_buckets: int = 16,
                 refresh_seconds: float = 30.0, max_resident_pairs: int = 50_000_000):
        if not fingerprint or not _SAFE_NAME.match(fingerprint):
            raise ValueError(f"fingerprint {fingerprint!r} cannot name a cache folder "
                             "(letters, digits and ._=+- only)")
        if num_buckets < 1:
            raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
        self.root = os.fspath(root)
        self.fingerprint = fingerprint
        self.refresh_seconds = float(refresh_seconds)
        self.max_resident_pairs = int(max_resident_pairs)
        self.fs, base = resolve_filesystem(self.root)
        self.base = f"{base.rstrip('/')}/{fingerprint}"
        self.num_buckets = self._init_format(num_buckets)
        self._buckets: OrderedDict[int, _Bucket] = OrderedDict()

    def __reduce__(self):  # ship the settings, never the loaded arrays
        return (_rebuild_cache, (self.root, self.fingerprint, self.num_buckets,
                                 self.refresh_seconds, self.max_resident_pairs))

    def __repr__(self) -> str:
        return f"ScoreCache({self.root!r}, {self.fingerprint!r}, num_buckets={self.num_buckets})"

    # ---- format -------------------------------------------------------------------------

    def _init_format(self, num_buckets: int) -> int:
        path = f"{self.base}/_format.json"
        raw = read_bytes(self.fs, path)
        if raw is None:
            self.fs.create_dir(self.base, recursive=True)
            atomic_write_bytes(self.fs, path, json.dumps(
                {"version": FORMAT_VERSION, "num_buckets": num_buckets}).encode())
            raw = read_bytes(self.fs, path)  # a concurrent creator may have won: use theirs
        meta = json.loads(raw)
        if meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path}: cache format version {meta.get('version')}, "
                             f"this raykd reads {FORMAT_VERSION}")
        return int(meta["num_buckets"])

    def bucket_of(self, qid: str) -> int:
        return stable_hash64(qid) % self.num_buckets

    def _bucket_dir(self, bucket: int) -> str:
        return f"{self.base}/bucket={bucket:03d}"

    # ---- reading ------------------------------------------------------------------------

    def _list_parts(self, bucket: int) -> list[str]:
        return list_files(self.fs, self._bucket_dir(bucket), "part-", ".parquet")

    def _load_new_parts(self, bucket: int, state: _Bucket) -> None:
        for _attempt in range(3):
            new = [p for p in self._list_parts(bucket) if p not in state.parts]
            try:
                tables = [pq.read_table(p, columns=["h", "score"], filesystem=self.fs) for p in new]
            except (FileNotFoundError, OSError):  # compacted away between listing and reading
                continue
            for path, table in zip(new, tables, strict=True):
                state.merge(table.column("h").to_numpy(), table.column("score").to_numpy())
                state.parts.add(path)
            break
        state.refreshed_at = time.monotonic()

    def _bucket(self, bucket: int, keep: set[int]) -> _Bucket:
        state = self._buckets.get(bucket)
        if state is None:
            state = _Bucket()
            self._load_new_parts(bucket, state)
            self._buckets[bucket] = state
            self._evict(keep | {bucket})
        self._buckets.move_to_end(bucket)
        return state

    def _evict(self, keep: set[int]) -> None:
        resident = sum(len(b.hashes) for b in self._buckets.values())
        for bucket in list(self._buckets):
            if resident <= self.max_resident_pairs:
                break
            if bucket not in keep:
                resident -= len(self._buckets.pop(bucket).hashes)

    def lookup(self, qids: Sequence[str], keys: Sequence[str]) -> np.ndarray:
        """Cached scores of aligned (qid, key) pairs; NaN where there is none."""
        out = np.full(len(qids), np.nan, dtype=np.float32)
        if not len(qids):
            return out
        hashes = np.fromiter((pair_hash(q, k) for q, k in zip(qids, keys, strict=True)),
                             np.uint64, len(qids))
        buckets = np.fromiter((self.bucket_of(q) for q in qids), np.int64, len(qids))
        wanted = set(np.unique(buckets).tolist())
        for bucket in sorted(wanted):
            idx = np.flatnonzero(buckets == bucket)
            state = self._bucket(bucket, wanted)
            found = state.get(hashes[idx])
            stale = time.monotonic() - state.refreshed_at >= self.refresh_seconds
            if np.isnan(found).any() and stale:
                self._load_new_parts(bucket, state)
                found = state.get(hashes[idx])
            out[idx] = found
        return out

    # ---- writing ------------------------------------------------------------------------

    def put(self, qids: Sequence[str], keys: Sequence[str], scores: Sequence[float]) -> int:
        """Append scores (one atomically written part per bucket touched); returns parts written."""
        scores = np.asarray(scores, dtype=np.float32)
        if not (len(qids) == len(keys) == len(scores)):
            raise ValueError(f"{len(qids)} qids, {len(keys)} keys, {len(scores)} scores")
        if not len(qids):
            return 0
        if not np.isfinite(scores).all():
            raise ValueError("refusing to cache a non-finite teacher score")
        qids, keys = [str(q) for q in qids], [str(k) for k in keys]
        hashes = np.fromiter((pair_hash(q, k) for q, k in zip(qids, keys, strict=True)),
                             np.uint64, len(qids))
        buckets = np.fromiter((self.bucket_of(q) for q in qids), np.int64, len(qids))
        written = 0
        for bucket in np.unique(buckets).tolist():
            idx = np.flatnonzero(buckets == bucket)
            table = pa.table({"qid": [qids[i] for i in idx], "key": [keys[i] for i in idx],
                              "h": hashes[idx], "score": scores[idx]}, schema=PART_SCHEMA)
            path = self._write_part(bucket, table)
            state = self._buckets.get(bucket)
            if state is not None:  # our own write is visible to us at once
                state.merge(hashes[idx], scores[idx])
                state.parts.add(path)
            written += 1
        return written

    def _write_part(self, bucket: int, table: pa.Table) -> str:
        folder = self._bucket_dir(bucket)
        self.fs.create_dir(folder, recursive=True)
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:12]}.parquet"
        tmp = f"{folder}/.{name}.tmp"
        with self.fs.open_output_stream(tmp) as out:
            pq.write_table(table, out)
        self.fs.move(tmp, f"{folder}/{name}")
        return f"{folder}/{name}"

    # ---- maintenance --------------------------------------------------------------------

    def stats(self) -> dict:
        """Parts and distinct pairs on storage (reads every part's key hashes)."""
        parts = pairs = 0
        for bucket in range(self.num_buckets):
            state = _Bucket()
            self._load_new_parts(bucket, state)
            parts += len(state.parts)
            pairs += len(state.hashes)
        return {"fingerprint": self.fingerprint, "parts": parts, "pairs": pairs,
                "num_buckets": self.num_buckets}

    def compact(self) -> int:
        """Merge each bucket's parts into one (duplicates dropped); returns parts removed.

        Safe against concurrent readers (they re-list when a part vanishes) and writers (only
        the parts listed before merging are removed)."""
        removed = 0
        for bucket in range(self.num_buckets):
            parts = self._list_parts(bucket)
            if len(parts) < 2:
                continue
            table = pa.concat_tables(pq.read_table(p, filesystem=self.fs, schema=PART_SCHEMA)
                                     for p in parts)
            _, first = np.unique(table.column("h").to_numpy(), return_index=True)
            self._write_part(bucket, table.take(pa.array(np.sort(first))))
            for path in parts:
                self.fs.delete_file(path)
            removed += len(parts) - 1
        self._buckets.clear()
        return removed


def _rebuild_cache(root, fingerprint, num_buckets, refresh_seconds, max_resident_pairs):
    return ScoreCache(root, fingerprint, num_buckets=num_buckets,
                      refresh_seconds=refresh_seconds, max_resident_pairs=max_resident_pairs)


def cache_enabled(location) -> bool:
    """False for None, '' and 'none' (no cache), True for a location or a ScoreCache."""
    return not (location is None
                or (isinstance(location, str) and location.lower() in ("", "none")))


def open_cache(location, fingerprint: str, **options) -> ScoreCache | None:
    """A ScoreCache at `location` (None or '' or 'none' disables caching)."""
    if not cache_enabled(location):
        return None
    if isinstance(location, ScoreCache):
        if location.fingerprint != fingerprint:
            raise ValueError(f"cache is for {location.fingerprint!r}, scores are {fingerprint!r}")
        return location
    return ScoreCache(location, fingerprint, **options)
