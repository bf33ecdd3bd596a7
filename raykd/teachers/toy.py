"""Tiny deterministic teachers for tests and benchmarks of the scoring machinery only.

They have no model and no use as relevance labels; they exist so the scoring stage, the score
cache and their failure handling can be exercised in milliseconds, inside Ray workers (which can
import `raykd` but not the test suite).

- `LexicalOverlapTeacher`: score = number of distinct query words found in the passage.
- `HashTeacher`: score = a deterministic pseudo-random value in [-1, 1) per (query, passage).
- `GroupwiseOverlapTeacher`: overlap z-normalised within each candidate group, so it overrides
  `score_groups` (like `ensemble` and `precomputed`) and must be scored group by group.
- `FlakyOverlapTeacher`: `LexicalOverlapTeacher` whose process exits on its Nth `score` call,
  once per marker file: a restarted actor finds the marker and carries on (fault injection).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence

import numpy as np

from raykd.teachers.base import Teacher

_WORD = re.compile(r"\w+")


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


class LexicalOverlapTeacher(Teacher):
    """Test-only teacher: count of distinct query words present in the passage (+ `bias`)."""

    kind = "toy_overlap"

    def __init__(self, bias: float = 0.0):
        super().__init__()
        self.bias = float(bias)

    def describe(self) -> dict:
        return {"kind": self.kind, "bias": self.bias}

    def _score(self, queries: list[str], passages: list[str]) -> np.ndarray:
        self.forward_calls += 1
        return np.asarray([len(_words(q) & _words(p)) + self.bias
                           for q, p in zip(queries, passages, strict=True)], dtype=np.float32)


class HashTeacher(Teacher):
    """Test-only teacher: a stable pseudo-random score in [-1, 1) per (query, passage, salt)."""

    kind = "toy_hash"

    def __init__(self, salt: str = ""):
        super().__init__()
        self.salt = salt

    def describe(self) -> dict:
        return {"kind": self.kind, "salt": self.salt}

    def _score(self, queries: list[str], passages: list[str]) -> np.ndarray:
        self.forward_calls += 1
        out = np.empty(len(queries), dtype=np.float32)
        for i, (q, p) in enumerate(zip(queries, passages, strict=True)):
            digest = hashlib.blake2b(f"{self.salt}\x1f{q}\x1f{p}".encode(), digest_size=8).digest()
            out[i] = int.from_bytes(digest, "little") / 2**63 - 1.0
        return out


class GroupwiseOverlapTeacher(LexicalOverlapTeacher):
    """Test-only group-level teacher: overlap z-normalised per group (depends on the whole list)."""

    kind = "toy_groupwise"

    def score_groups(self, groups: Sequence[dict]) -> list[np.ndarray]:
        out = []
        for group in groups:
            raw = self.score([group["query"]] * len(group["texts"]), group["texts"])
            out.append(((raw - raw.mean()) / (raw.std() + 1.0)).astype(np.float32))
        return out


class FlakyOverlapTeacher(LexicalOverlapTeacher):
    """Test-only: `LexicalOverlapTeacher` that kills its own process on the `crash_on_call`-th
    `score` call, the first time only: it creates `marker` (exclusively) before exiting, and a
    process that finds the marker never crashes. Same fingerprint as `LexicalOverlapTeacher`,
    since a crash does not change any score."""

    kind = LexicalOverlapTeacher.kind

    def __init__(self, marker: str, crash_on_call: int = 2, bias: float = 0.0):
        super().__init__(bias)
        self.marker, self.crash_on_call = str(marker), int(crash_on_call)
        self._calls = 0

    def _score(self, queries: list[str], passages: list[str]) -> np.ndarray:
        self._calls += 1
        if self._calls == self.crash_on_call:
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                os._exit(1)
        return super()._score(queries, passages)
