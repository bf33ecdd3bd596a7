"""MS MARCO TSV files (METHODS.md 6.2).

- ``collection.tsv``: ``pid<TAB>passage``; read as ``{"pid", "title": "", "text"}`` so it has the
  same shape as a BEIR corpus row.
- ``queries.*.tsv``: ``qid<TAB>query``.
- qrels: ``qid 0 pid rel`` (TREC style; tabs or spaces; the second column is not used).
- triples: text ``query<TAB>pos<TAB>neg`` or ids ``qid<TAB>pid_pos<TAB>pid_neg``, read as
  ``{"query", "passage_pos", "passage_neg"}`` or ``{"qid", "pid_pos", "pid_neg"}``.
- runs (a first-stage ranking, e.g. BM25 top-1000): ``msmarco`` ``qid<TAB>pid<TAB>rank``,
  ``trec`` ``qid Q0 pid rank score tag``, or ``top1000`` ``qid<TAB>pid<TAB>query<TAB>passage``
  (its rank is the order of the query's lines); read as ``(line, qid, pid, rank)``.

Every file may be ``.gz``. Readers are generators except the small queries/qrels dicts.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator, Mapping

from raykd.data.lines import iter_raw_lines, open_binary, open_for_write, split_columns
from raykd.data.skips import resolve_policy
from raykd.data.validation import (
    BAD_VALUE,
    MALFORMED,
    MISSING_FIELD,
    DuplicateChecker,
    check_known_id,
    check_tsv_value,
    data_error,
    require_finite,
    require_id,
    require_int,
    require_text,
)
from raykd.errors import DataError

COLLECTION_COLUMNS = ("pid", "text")
QUERIES_COLUMNS = ("qid", "query")
QRELS_COLUMNS = ("qid", "iteration", "pid", "rel")
TRIPLE_COLUMNS = {
    "text": ("query", "passage_pos", "passage_neg"),
    "ids": ("qid", "pid_pos", "pid_neg"),
}


def triple_columns(form: str) -> tuple[str, str, str]:
    if form not in TRIPLE_COLUMNS:
        raise ValueError(f"form must be one of {tuple(TRIPLE_COLUMNS)}, got {form!r}")
    return TRIPLE_COLUMNS[form]


def check_triple_values(
    values: dict,
    form: str,
    path,
    line: int,
    known_pids: Container[str] | None = None,
    known_qids: Container[str] | None = None,
) -> dict:
    """Validate the three text or id columns of a triple (shared with the Hofstatter reader)."""
    if form == "text":
        for name in TRIPLE_COLUMNS["text"]:
            require_text(values[name], path, line, name)
        return values
    require_id(values["qid"], path, line, "qid")
    require_id(values["pid_pos"], path, line, "pid_pos")
    require_id(values["pid_neg"], path, line, "pid_neg")
    check_known_id(values["qid"], known_qids, path, line, "qid", "queries")
    check_known_id(values["pid_pos"], known_pids, path, line, "pid_pos", "collection")
    check_known_id(values["pid_neg"], known_pids, path, line, "pid_neg", "collection")
    return values


def _require_ids_form(form: str, known_pids, known_qids) -> None:
    if form != "ids" and (known_pids is not None or known_qids is not None):
        raise ValueError("known_pids / known_qids apply to form='ids' only")


# ---------------------------------------------------------------- collection


def collection_records(fobj, path, policy, check_unique: bool = True) -> Iterator[dict]:
    seen = DuplicateChecker("pid") if check_unique else None
    for line, raw in iter_raw_lines(fobj, path):
        try:
            pid, text = split_columns(raw, path, line, COLLECTION_COLUMNS)
            require_id(pid, path, line, "pid")
            require_text(text, path, line, "text")
            if seen is not None:
                seen.check(pid, path, line, "pid")
        except DataError as err:
            policy.handle(err)
            continue
        yield {"pid": pid, "title": "", "text": text}


def iter_collection(
    path, on_error="raise", report=None, check_unique: bool = True
) -> Iterator[dict]:
    """Stream ``collection.tsv`` as ``{"pid", "title": "", "text"}`` rows."""
    policy = resolve_policy(on_error, report, path)
    with open_binary(path) as fobj:
        yield from collection_records(fobj, path, policy, check_unique)
    policy.finish()


def _write_tsv(path, rows: Iterable[tuple[str, ...]], columns: tuple[str, ...]) -> int:
    n = 0
    with open_for_write(path) as out:
        for n, values in enumerate(rows, start=1):
            for name, value in zip(columns, values, strict=True):
                check_tsv_value(value, path, n, name)
            out.write("\t".join(values) + "\n")
    return n


def write_collection(path, rows: Iterable[Mapping]) -> int:
    """Write ``{"pid", "text"[, "title"]}`` rows; a title is joined in front (BEIR convention)."""
    from raykd.data.records import passage_text

    seen = DuplicateChecker("pid")

    def cells():
        for n, row in enumerate(rows, start=1):
            pid = require_id(row.get("pid"), path, n, "pid")
            seen.check(pid, path, n, "pid")
            text = passage_text(row.get("title") or "", row.get("text"))
            yield pid, require_text(text, path, n, "text")

    return _write_tsv(path, cells(), COLLECTION_COLUMNS)


# ---------------------------------------------------------------- queries


def read_queries(path, on_error="raise", report=None) -> dict[str, str]:
    """``qid<TAB>query`` lines as ``{qid: query}``; duplicates and empty queries are errors."""
    policy = resolve_policy(on_error, report, path)
    seen = DuplicateChecker("qid")
    queries: dict[str, str] = {}
    with open_binary(path) as fobj:
        for line, raw in iter_raw_lines(fobj, path):
            try:
                qid, text = split_columns(raw, path, line, QUERIES_COLUMNS)
                require_id(qid, path, line, "qid")
                require_text(text, path, line, "query")
                seen.check(qid, path, line, "qid")
            except DataError as err:
                policy.handle(err)
                continue
            queries[qid] = text
    policy.finish()
    return queries


def write_queries(path, mapping: Mapping[str, str]) -> int:
    def cells():
        for n, (qid, text) in enumerate(mapping.items(), start=1):
            yield require_id(qid, path, n, "qid"), require_text(text, path, n, "query")

    return _write_tsv(path, cells(), QUERIES_COLUMNS)


# ---------------------------------------------------------------- qrels


def iter_qrels_rows(path, on_error="raise", report=None) -> Iterator[tuple[int, str, str, int]]:
    """``(line, qid, pid, rel)`` of a ``qid 0 pid rel`` file (tab- or space-separated)."""
    policy = resolve_policy(on_error, report, path)
    seen = DuplicateChecker("qrels pair")
    with open_binary(path) as fobj:
        for line, raw in iter_raw_lines(fobj, path):
            try:
                qid, _, pid, rel = split_columns(raw, path, line, QRELS_COLUMNS, sep=None)
                rel = require_int(rel, path, line, "rel")
                seen.check((qid, pid), path, line, "pid")
            except DataError as err:
                policy.handle(err)
                continue
            yield line, qid, pid, rel
    policy.finish()


def read_qrels(path, on_error="raise", report=None) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for _, qid, pid, rel in iter_qrels_rows(path, on_error, report):
        qrels.setdefault(qid, {})[pid] = rel
    return qrels


def write_qrels(path, qrels: Mapping[str, Mapping[str, int]]) -> int:
    def cells():
        n = 0
        for qid, docs in qrels.items():
            for pid, rel in docs.items():
                n += 1
                if any(c in f"{qid}{pid}" for c in " \t"):
                    raise data_error(
                        path, n, "qid", "qrels ids cannot hold spaces or tabs", BAD_VALUE
                    )
                yield (
                    require_id(qid, path, n, "qid"),
                    "0",
                    require_id(pid, path, n, "pid"),
                    str(require_int(rel, path, n, "rel")),
                )

    return _write_tsv(path, cells(), QRELS_COLUMNS)


# ---------------------------------------------------------------- triples


def iter_triples(
    path,
    form: str = "text",
    on_error="raise",
    report=None,
    known_pids: Container[str] | None = None,
    known_qids: Container[str] | None = None,
) -> Iterator[dict]:
    """Stream training triples. ``form="ids"`` may check every id against ``known_pids``
    (e.g. the collection's pids) and ``known_qids``; an absent id is a DataError."""
    columns = triple_columns(form)
    _require_ids_form(form, known_pids, known_qids)
    policy = resolve_policy(on_error, report, path)
    with open_binary(path) as fobj:
        for line, raw in iter_raw_lines(fobj, path):
            try:
                row = dict(zip(columns, split_columns(raw, path, line, columns), strict=True))
                check_triple_values(row, form, path, line, known_pids, known_qids)
            except DataError as err:
                policy.handle(err)
                continue
            yield row
    policy.finish()


def write_triples(path, rows: Iterable[Mapping], form: str = "text") -> int:
    columns = triple_columns(form)

    def cells():
        for n, row in enumerate(rows, start=1):
            for name in columns:
                if row.get(name) is None:
                    raise data_error(path, n, name, "missing field", MISSING_FIELD)
            yield tuple(check_triple_values(dict(row), form, path, n)[c] for c in columns)

    return _write_tsv(path, cells(), columns)


# ---------------------------------------------------------------- runs

RUN_COLUMNS = {
    "msmarco": ("qid", "pid", "rank"),
    "trec": ("qid", "iteration", "pid", "rank", "score", "tag"),
    "top1000": ("qid", "pid", "query", "passage"),
}


def run_format(path) -> str:
    """``msmarco``, ``trec`` or ``top1000``, from the first line's column count."""
    with open_binary(path) as fobj:
        for line, raw in iter_raw_lines(fobj, path):
            if raw.count(b"\t") == 3:
                return "top1000"
            n = len(raw.split())
            for fmt in ("msmarco", "trec"):
                if n == len(RUN_COLUMNS[fmt]):
                    return fmt
            raise data_error(path, line, None, f"not a run line: {n} columns, expected 3 "
                             f"(qid pid rank), 6 (TREC) or 4 tab-separated (top1000)", MALFORMED)
    raise data_error(path, None, None, "empty run file", MISSING_FIELD)


def iter_run(path, fmt: str = "auto", on_error="raise", report=None
             ) -> Iterator[tuple[int, str, str, int]]:
    """``(line, qid, pid, rank)`` of every line of a run file (``fmt``: ``auto`` or one of
    RUN_COLUMNS). Ranks are integers >= 1; ``top1000`` numbers each query's lines in order."""
    fmt = run_format(path) if fmt == "auto" else fmt
    if fmt not in RUN_COLUMNS:
        raise ValueError(f"run format must be 'auto' or one of {tuple(RUN_COLUMNS)}, got {fmt!r}")
    columns = RUN_COLUMNS[fmt]
    policy = resolve_policy(on_error, report, path)
    order: dict[str, int] = {}
    with open_binary(path) as fobj:
        for line, raw in iter_raw_lines(fobj, path):
            try:
                values = dict(zip(columns, split_columns(
                    raw, path, line, columns, sep=b"\t" if fmt == "top1000" else None),
                    strict=True))
                qid = require_id(values["qid"], path, line, "qid")
                pid = require_id(values["pid"], path, line, "pid")
                if fmt == "top1000":
                    rank = order[qid] = order.get(qid, 0) + 1
                else:
                    rank = require_int(values["rank"], path, line, "rank")
                    if rank < 1:
                        raise data_error(path, line, "rank", f"rank must be >= 1, got {rank}",
                                         BAD_VALUE)
                if fmt == "trec":
                    require_finite(values["score"], path, line, "score", allow_str=True)
            except DataError as err:
                policy.handle(err)
                continue
            yield line, qid, pid, rank
    policy.finish()
