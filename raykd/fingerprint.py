"""Stable identities: hashes of configs and of model weights (cache keys, fingerprints)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from functools import lru_cache
from pathlib import Path


def stable_hash(obj) -> str:
    """sha256 of a JSON-serialisable object (sorted keys), 16 hex characters."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
_WEIGHTS_CACHE: dict[tuple, str] = {}
_WEIGHTS_LOCK = threading.Lock()


def weights_sha256(folder: str | os.PathLike) -> str:
    """sha256 over the bytes of every `*.safetensors` / `*.bin` file under a model folder.

    Files are visited in sorted relative-path order and each path is hashed with its bytes, so
    renaming or moving a shard changes the hash. The result is cached per folder and per
    (file, size, mtime) listing: a second teacher over the same folder costs a `stat` per file.
    """
    root = Path(folder).resolve()
    files = sorted({p for pattern in WEIGHT_PATTERNS for p in root.rglob(pattern) if p.is_file()})
    listing = tuple((p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                    for p in files)
    key = (str(root), listing)
    with _WEIGHTS_LOCK:
        if key in _WEIGHTS_CACHE:
            return _WEIGHTS_CACHE[key]
    digest = hashlib.sha256()
    for path, (rel, _, _) in zip(files, listing, strict=True):
        digest.update(rel.encode("utf-8") + b"\0")
        with open(path, "rb") as fobj:
            for chunk in iter(lambda: fobj.read(1 << 22), b""):
                digest.update(chunk)
    value = digest.hexdigest()
    with _WEIGHTS_LOCK:
        _WEIGHTS_CACHE[key] = value
    return value


@lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime: float) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (memoised per path, size and modification time)."""
    stat = Path(path).stat()
    return _file_sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime)


def text_hash(text: str) -> int:
    """64-bit hash of a passage text (the embedding store's lookup key)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")
