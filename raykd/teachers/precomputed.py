"""Precomputed teacher: scores read from a file and aligned by key, never by line order.

Formats (`format`, else inferred from the file name):

* `hofstatter_ids` (`score_pos<TAB>score_neg<TAB>qid<TAB>pid_pos<TAB>pid_neg`): each line gives
  (qid, pid_pos) -> score_pos and (qid, pid_neg) -> score_neg;
* `hofstatter_text` (`score_pos<TAB>score_neg<TAB>query<TAB>passage_pos<TAB>passage_neg`): keyed
  by (hash of query text, hash of passage text), so loose text pairs can be looked up too;
* `jsonl` / `parquet`: candidate groups carrying `teacher_scores`, keyed by (qid, pid).

A key repeated with a different score (beyond `tolerance`) is a `DataError` naming both lines;
a key that is asked for but absent is a `MissingScoreError` (a `KeyError`) naming the qid, the
pid and the file. Nothing is ever silently zero.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from raykd.errors import ConfigError, DataError, RaykdError
from raykd.teachers.base import Teacher, stable_hash

FORMATS = ("hofstatter_ids", "hofstatter_text", "jsonl", "parquet")


class MissingScoreError(RaykdError, KeyError):
    """A (qid, pid) with no score in a precomputed teacher file."""

    def __init__(self, qid, pid, path, detail: str = ""):
        self.qid, self.pid, self.path, self.detail = qid, pid, str(path), detail
        self.message = (f"no teacher score for qid {qid!r}, pid {pid!r} in {self.path}"
                        + (f" ({detail})" if detail else ""))
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message

    def __reduce__(self):
        return (type(self), (self.qid, self.pid, self.path, self.detail))


def text_key(query: str, passage: str) -> bytes:
    """The key of a text pair: 16-byte blake2b digests of query and passage, concatenated."""
    return (hashlib.blake2b(query.encode("utf-8"), digest_size=16).digest()
            + hashlib.blake2b(passage.encode("utf-8"), digest_size=16).digest())


def infer_format(path: str | os.PathLike) -> str:
    name = Path(path).name.lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".jsonl", ".jsonl.gz", ".json")):
        return "jsonl"
    raise ConfigError("teacher.format", f"cannot tell the format of {path} from its name; set "
                                        f"it to one of {FORMATS}")


def _records(path: Path, fmt: str) -> Iterator[dict]:
    """Validated rows (Hofstatter) or groups, through the data layer's public readers."""
    if fmt.startswith("hofstatter"):
        from raykd.data.teacher_scores import iter_hofstatter

        return iter_hofstatter(path, form="text" if fmt == "hofstatter_text" else "ids")
    from raykd.data.groups import iter_groups_jsonl, iter_groups_parquet

    reader = iter_groups_parquet if fmt == "parquet" else iter_groups_jsonl
    # A repeated qid is fine as long as its scores agree: the key-level check below decides.
    return reader(path, check_unique=False)


def _physical_line(path: Path, fmt: str, record: int) -> int:
    """The 1-based line (parquet: row) of the `record`-th record; blank lines hold none."""
    if fmt == "parquet":
        return record
    from raykd.data.lines import iter_raw_lines, open_binary

    with open_binary(path) as fobj:
        for n, (line, _) in enumerate(iter_raw_lines(fobj, path), start=1):
            if n == record:
                return line
    return record


class PrecomputedTeacher(Teacher):
    """Looks scores up by (qid, pid) (or by text hashes for `hofstatter_text`)."""

    kind = "precomputed"

    def __init__(self, path: str | os.PathLike, format: str | None = None,
                 tolerance: float = 1e-4):
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError("teacher.path", f"{self.path} is not a file")
        self.format = format or infer_format(self.path)
        if self.format not in FORMATS:
            raise ConfigError("teacher.format", f"{self.format!r} is not one of {FORMATS}")
        self.tolerance = float(tolerance)
        self.by_text = self.format == "hofstatter_text"
        self._scores: dict = {}
        for record, key, score in self._entries():
            self._add(key, score, record)

    # ---- loading ------------------------------------------------------------------------

    def _entries(self) -> Iterator[tuple[int, object, float]]:
        """(record number, key, score) for every score in the file, in file order."""
        for n, row in enumerate(_records(self.path, self.format), start=1):
            if self.format.startswith("hofstatter"):
                if self.by_text:
                    yield n, text_key(row["query"], row["passage_pos"]), row["score_pos"]
                    yield n, text_key(row["query"], row["passage_neg"]), row["score_neg"]
                else:
                    yield n, (row["qid"], row["pid_pos"]), row["score_pos"]
                    yield n, (row["qid"], row["pid_neg"]), row["score_neg"]
                continue
            if row.get("teacher_scores") is None:
                raise DataError(self.path, _physical_line(self.path, self.format, n),
                                "teacher_scores",
                                "a precomputed teacher needs teacher_scores in every group")
            for pid, score in zip(row["pids"], row["teacher_scores"], strict=True):
                yield n, (row["qid"], pid), float(score)

    def _add(self, key, score: float, record: int) -> None:
        old = self._scores.setdefault(key, score)
        if old != score and abs(old - score) > self.tolerance * max(1.0, abs(old)):
            first = next(n for n, k, _ in self._entries() if k == key)
            line = _physical_line(self.path, self.format, record)
            raise DataError(self.path, line, None,
                            f"{self._describe_key(key)} has score {score!r} here but {old!r} at "
                            f"line {_physical_line(self.path, self.format, first)}")

    def _describe_key(self, key) -> str:
        if isinstance(key, tuple):
            return f"(qid {key[0]!r}, pid {key[1]!r})"
        return f"the (query, passage) text pair with hash {key.hex()[:16]}"

    def __len__(self) -> int:
        return len(self._scores)

    # ---- the Teacher interface ----------------------------------------------------------

    def describe(self) -> dict:
        stat = self.path.stat()
        return {
            "kind": self.kind,
            "format": self.format,
            "file": stable_hash([str(self.path.resolve()), stat.st_size, stat.st_mtime_ns]),
        }

    def lookup(self, qid, pid, query: str | None = None, text: str | None = None) -> float:
        """One score; raises MissingScoreError naming the qid, pid and file."""
        if self.by_text:
            if query is None or text is None:
                raise MissingScoreError(qid, pid, self.path, "a hofstatter_text file is keyed "
                                                             "by query and passage text")
            key = text_key(query, text)
            detail = (f"query {query[:60]!r} with passage {text[:60]!r}: this text pair is not "
                      f"in the file")
        else:
            key = (str(qid), str(pid))
            detail = ""
        try:
            return self._scores[key]
        except KeyError:
            raise MissingScoreError(qid, pid, self.path, detail) from None

    def score_groups(self, groups: Sequence[dict]) -> list[np.ndarray]:
        out = []
        for group in groups:
            pids, texts = group.get("pids"), group.get("texts")
            if pids is None:  # loose pairs grouped by an ensemble: text keys only
                if not self.by_text:
                    self._needs_keys()
                pids = [None] * len(texts)
            if texts is None:
                texts = [None] * len(pids)
            out.append(np.asarray(
                [self.lookup(group.get("qid"), pid, group.get("query"), text)
                 for pid, text in zip(pids, texts, strict=True)], dtype=np.float32))
        self.forward_calls += 1
        return out

    def _needs_keys(self):
        raise ConfigError("teacher.kind", f"a precomputed teacher over {self.format} scores "
                                          f"(qid, pid) keys, not loose text pairs: call "
                                          f"score_groups with groups that carry qid and pids "
                                          f"({self.path})")

    def _score(self, queries: list[str], passages: list[str]) -> np.ndarray:
        if not self.by_text:
            self._needs_keys()
        self.forward_calls += 1
        return np.asarray([self.lookup(None, None, q, p)
                           for q, p in zip(queries, passages, strict=True)], dtype=np.float32)
