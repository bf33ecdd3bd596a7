"""BEIR layout: ``corpus.jsonl[.gz]``, ``queries.jsonl``, ``qrels/{split}.tsv``.

- corpus line: ``{"_id": str, "title": str (optional), "text": str}``; read as
  ``{"pid", "title", "text"}``. A document is empty when both title and text are blank.
- queries line: ``{"_id": str, "text": str}``. Any ``metadata`` key (SciFact keeps its evidence
  labels there) is ignored and never becomes text.
- qrels: header ``query-id<TAB>corpus-id<TAB>score`` then rows; CRLF endings are accepted.
"""

from __future__ import annotations

import json
from collections.abc import Container, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from raykd.data.lines import (
    iter_raw_lines,
    open_binary,
    open_for_write,
    parse_json_object,
    split_columns,
)
from raykd.data.skips import resolve_policy
from raykd.data.validation import (
    EMPTY_TEXT,
    MALFORMED,
    MISSING_FIELD,
    DuplicateChecker,
    check_known_id,
    data_error,
    require_fields,
    require_id,
    require_int,
    require_text,
)
from raykd.errors import DataError

QRELS_HEADER = ("query-id", "corpus-id", "score")


# ---------------------------------------------------------------- corpus


def corpus_records(fobj, path, policy, check_unique: bool = True) -> Iterator[dict]:
    """Parse an open BEIR corpus (bytes) into ``{"pid", "title", "text"}`` rows."""
    seen = DuplicateChecker("pid") if check_unique else None
    for line, raw in iter_raw_lines(fobj, path):
        try:
            obj = parse_json_object(raw, path, line)
            require_fields(obj, ("_id", "text"), path, line)
            pid = require_id(obj["_id"], path, line, "_id")
            title = obj.get("title")
            title = "" if title is None else require_text(title, path, line, "title", True)
            text = require_text(obj["text"], path, line, "text", allow_empty=True)
            if not text.strip() and not title.strip():
                raise data_error(path, line, "text", "empty text (and no title)", EMPTY_TEXT)
            if seen is not None:
                seen.check(pid, path, line, "_id")
        except DataError as err:
            policy.handle(err)
            continue
        yield {"pid": pid, "title": title, "text": text}


def iter_corpus(path, on_error="raise", report=None, check_unique: bool = True) -> Iterator[dict]:
    """Stream a BEIR ``corpus.jsonl`` or ``corpus.jsonl.gz`` as ``{"pid", "title", "text"}``.

    Constant memory apart from the duplicate check (one entry per pid; ``check_unique=False``
    turns it off).
    """
    policy = resolve_policy(on_error, report, path)
    with open_binary(path) as fobj:
        yield from corpus_records(fobj, path, policy, check_unique)
    policy.finish()


def write_corpus(path, rows: Iterable[Mapping]) -> int:
    """Write ``{"pid"|"_id", "title", "text"}`` rows as BEIR JSONL (``.gz`` compresses).

    Returns the number of rows written.
    """
    n = 0
    seen = DuplicateChecker("pid")
    with open_for_write(path) as out:
        for n, row in enumerate(rows, start=1):
            pid = row["pid"] if "pid" in row else row.get("_id")
            pid = require_id(pid, path, n, "pid")
            title = row.get("title")
            title = "" if title is None else require_text(title, path, n, "title", True)
            text = require_text(row.get("text"), path, n, "text", allow_empty=bool(title.strip()))
            seen.check(pid, path, n, "pid")
            obj = {"_id": pid, "title": title, "text": text}
            out.write(json.dumps(obj, ensure_ascii=False) + "\n")
    return n


# ---------------------------------------------------------------- queries


def queries_records(
    fobj, path, policy, check_unique: bool = True
) -> Iterator[tuple[int, str, str]]:
    seen = DuplicateChecker("qid") if check_unique else None
    for line, raw in iter_raw_lines(fobj, path):
        try:
            obj = parse_json_object(raw, path, line)
            require_fields(obj, ("_id", "text"), path, line)
            qid = require_id(obj["_id"], path, line, "_id")
            text = require_text(obj["text"], path, line, "text")
            if seen is not None:
                seen.check(qid, path, line, "_id")
        except DataError as err:
            policy.handle(err)
            continue
        yield line, qid, text


def read_queries(path, on_error="raise", report=None) -> dict[str, str]:
    """BEIR ``queries.jsonl`` as ``{qid: text}`` (``metadata`` is ignored)."""
    policy = resolve_policy(on_error, report, path)
    with open_binary(path) as fobj:
        queries = {qid: text for _, qid, text in queries_records(fobj, path, policy)}
    policy.finish()
    return queries


def write_queries(path, mapping: Mapping[str, str]) -> int:
    n = 0
    with open_for_write(path) as out:
        for n, (qid, text) in enumerate(mapping.items(), start=1):
            obj = {
                "_id": require_id(qid, path, n, "_id"),
                "text": require_text(text, path, n, "text"),
            }
            out.write(json.dumps(obj, ensure_ascii=False) + "\n")
    return n


# ---------------------------------------------------------------- qrels


def iter_qrels_rows(path, on_error="raise", report=None) -> Iterator[tuple[int, str, str, int]]:
    """``(line, qid, pid, score)`` for every qrels row; duplicate (qid, pid) pairs are errors."""
    policy = resolve_policy(on_error, report, path)
    seen = DuplicateChecker("qrels pair")
    with open_binary(path) as fobj:
        first = True
        for line, raw in iter_raw_lines(fobj, path):
            try:
                values = split_columns(raw, path, line, QRELS_HEADER)
                if first:
                    first = False
                    if tuple(v.strip() for v in values) == QRELS_HEADER:
                        continue
                    if not values[2].strip().lstrip("-").isdigit():
                        raise data_error(
                            path,
                            line,
                            None,
                            f"expected the header {' '.join(QRELS_HEADER)} (tab-separated)",
                            MALFORMED,
                        )
                qid = require_id(values[0], path, line, "query-id")
                pid = require_id(values[1], path, line, "corpus-id")
                score = require_int(values[2], path, line, "score")
                seen.check((qid, pid), path, line, "corpus-id")
            except DataError as err:
                policy.handle(err)
                continue
            yield line, qid, pid, score
    policy.finish()


def read_qrels(path, on_error="raise", report=None) -> dict[str, dict[str, int]]:
    """BEIR qrels TSV as ``{qid: {pid: score}}``."""
    qrels: dict[str, dict[str, int]] = {}
    for _, qid, pid, score in iter_qrels_rows(path, on_error, report):
        qrels.setdefault(qid, {})[pid] = score
    return qrels


def write_qrels(path, qrels: Mapping[str, Mapping[str, int]]) -> int:
    n = 0
    with open_for_write(path) as out:
        out.write("\t".join(QRELS_HEADER) + "\n")
        for qid, docs in qrels.items():
            for pid, score in docs.items():
                n += 1
                require_id(qid, path, n, "query-id")
                require_id(pid, path, n, "corpus-id")
                score = require_int(score, path, n, "score")
                if any(c in qid + pid for c in "\t\r\n"):
                    raise data_error(
                        path, n, "query-id", "ids cannot hold tabs or line breaks", MALFORMED
                    )
                out.write(f"{qid}\t{pid}\t{score}\n")
    return n


def check_qrels_ids(
    qrels_path,
    corpus_ids: Container[str] | None = None,
    query_ids: Container[str] | None = None,
    corpus_name: str = "corpus",
    queries_name: str = "queries",
) -> None:
    """Raise DataError (qrels file, line, field) for the first qid or pid not in the given sets."""
    for line, qid, pid, _ in iter_qrels_rows(qrels_path):
        check_known_id(qid, query_ids, qrels_path, line, "query-id", queries_name)
        check_known_id(pid, corpus_ids, qrels_path, line, "corpus-id", corpus_name)


# ---------------------------------------------------------------- dataset folder


@dataclass
class BeirDataset:
    """A BEIR folder: ``corpus.jsonl[.gz]``, ``queries.jsonl``, ``qrels/{split}.tsv``."""

    root: Path
    corpus_path: Path
    queries_path: Path
    _queries: dict[str, str] | None = field(default=None, init=False, repr=False, compare=False)
    _corpus_ids: set[str] | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_dir(cls, root) -> BeirDataset:
        root = Path(root)
        if not root.is_dir():
            raise data_error(
                root, None, None, "not a BEIR folder (no such directory)", MISSING_FIELD
            )
        corpus = next(
            (root / n for n in ("corpus.jsonl", "corpus.jsonl.gz") if (root / n).is_file()), None
        )
        if corpus is None:
            raise data_error(
                root, None, "corpus", "no corpus.jsonl or corpus.jsonl.gz", MISSING_FIELD
            )
        queries = root / "queries.jsonl"
        if not queries.is_file():
            raise data_error(root, None, "queries", "no queries.jsonl", MISSING_FIELD)
        return cls(root=root, corpus_path=corpus, queries_path=queries)

    def splits(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "qrels").glob("*.tsv"))

    def qrels_path(self, split: str) -> Path:
        path = self.root / "qrels" / f"{split}.tsv"
        if not path.is_file():
            available = ", ".join(self.splits()) or "none"
            raise data_error(
                path,
                None,
                None,
                f"no qrels for split {split!r}; available splits: {available}",
                MISSING_FIELD,
            )
        return path

    def qrels(self, split: str) -> dict[str, dict[str, int]]:
        return read_qrels(self.qrels_path(split))

    def all_queries(self) -> dict[str, str]:
        if self._queries is None:
            self._queries = read_queries(self.queries_path)
        return self._queries

    def queries(self, split: str) -> dict[str, str]:
        """The queries judged in ``split`` (in qrels order); a qid missing from queries.jsonl
        is a DataError naming the qrels file and line."""
        path = self.qrels_path(split)
        everything = self.all_queries()
        out: dict[str, str] = {}
        for line, qid, _, _ in iter_qrels_rows(path):
            if qid not in out:
                check_known_id(
                    qid, everything, path, line, "query-id", f"queries file {self.queries_path}"
                )
                out[qid] = everything[qid]
        return out

    def iter_corpus(self, on_error="raise", report=None) -> Iterator[dict]:
        return iter_corpus(self.corpus_path, on_error, report)

    def corpus_ids(self) -> set[str]:
        if self._corpus_ids is None:
            self._corpus_ids = {row["pid"] for row in iter_corpus(self.corpus_path)}
        return self._corpus_ids

    def check_qrels_against_corpus(self, split: str) -> None:
        """DataError naming the qrels file and line for the first corpus-id not in the corpus."""
        check_qrels_ids(
            self.qrels_path(split),
            corpus_ids=self.corpus_ids(),
            corpus_name=f"corpus {self.corpus_path}",
        )


__all__ = [
    "QRELS_HEADER",
    "BeirDataset",
    "check_qrels_ids",
    "iter_corpus",
    "iter_qrels_rows",
    "read_qrels",
    "read_queries",
    "write_corpus",
    "write_qrels",
    "write_queries",
]
