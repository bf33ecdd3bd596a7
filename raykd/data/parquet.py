"""Parquet tables: shared row reading/writing, and the corpus as ``pid, title, text``.

In errors, ``line`` is the 1-based row number within the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from itertools import islice

import pyarrow as pa
import pyarrow.parquet as pq

from raykd.data.lines import open_for_write
from raykd.data.records import CORPUS_SCHEMA
from raykd.data.skips import resolve_policy
from raykd.data.validation import (
    EMPTY_TEXT,
    ENCODING,
    MALFORMED,
    MISSING_FIELD,
    DuplicateChecker,
    data_error,
    require_id,
    require_text,
)
from raykd.errors import DataError

BATCH_ROWS = 1024


def parquet_rows(
    source, path, schema: pa.Schema, optional: Iterable[str] = ()
) -> Iterator[tuple[int, dict]]:
    """``(row number, row dict)`` for every row of a parquet file, batch by batch.

    ``source`` is a path or a seekable file object. Every column of ``schema`` not in
    ``optional`` must be present; a column outside ``schema`` is an error (it would be lost).
    Absent optional columns read as None. A corrupt file (bad footer, pages or strings) is a
    DataError naming the first row that cannot be read.
    """
    try:
        pf = pq.ParquetFile(source)
        names = pf.schema_arrow.names
    except (pa.ArrowException, OSError) as exc:
        raise data_error(
            path, None, None, f"not a readable parquet file: {exc}", MALFORMED
        ) from None
    optional = set(optional)
    for name in schema.names:
        if name not in names and name not in optional:
            raise data_error(path, None, name, "missing column", MISSING_FIELD)
    for name in names:
        if name not in schema.names:
            raise data_error(
                path, None, name, f"unknown column; expected {', '.join(schema.names)}", MALFORMED
            )
    absent = [n for n in schema.names if n not in names]
    rowno = 0
    batches = pf.iter_batches(batch_size=BATCH_ROWS)
    while True:
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError) as exc:
            raise data_error(
                path, rowno + 1, None, f"corrupt parquet data: {exc}", MALFORMED
            ) from None
        if batch is None:
            break
        for row in _batch_rows(batch, path, rowno):
            rowno += 1
            for name in absent:
                row[name] = None
            yield rowno, row


def _batch_rows(batch: pa.RecordBatch, path, before: int) -> list[dict]:
    """A batch as Python rows; a string that is not UTF-8 names its row and column."""
    try:
        return batch.to_pylist()
    except UnicodeDecodeError:
        pass
    for i in range(batch.num_rows):
        for name in batch.schema.names:
            try:
                batch.column(name)[i].as_py()
            except UnicodeDecodeError as exc:
                raise data_error(
                    path, before + i + 1, name, f"not valid UTF-8: {exc.reason}", ENCODING
                ) from None
    raise data_error(path, before + 1, None, "not valid UTF-8", ENCODING)  # not reached


def write_parquet_rows(path, rows: Iterable[Mapping], schema: pa.Schema) -> int:
    """Write dict rows in batches (constant memory); returns the row count."""
    n = 0
    rows = iter(rows)
    with open_for_write(path, binary=True) as handle:
        writer = pq.ParquetWriter(handle, schema)
        try:
            while True:
                chunk = list(islice(rows, BATCH_ROWS))
                if not chunk:
                    break
                n += len(chunk)
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
            if n == 0:
                writer.write_table(schema.empty_table())
        finally:
            writer.close()
    return n


def corpus_parquet_records(source, path, policy, check_unique: bool = True) -> Iterator[dict]:
    seen = DuplicateChecker("pid") if check_unique else None
    for rowno, row in parquet_rows(source, path, CORPUS_SCHEMA, optional=("title",)):
        try:
            out = _corpus_row(row, path, rowno)
            if seen is not None:
                seen.check(out["pid"], path, rowno, "pid")
        except DataError as err:
            policy.handle(err)
            continue
        yield out


def _corpus_row(row: Mapping, path, rowno: int) -> dict:
    if row.get("pid") is None:
        raise data_error(path, rowno, "pid", "missing value", MISSING_FIELD)
    if row.get("text") is None:
        raise data_error(path, rowno, "text", "missing value", MISSING_FIELD)
    pid = require_id(row["pid"], path, rowno, "pid")
    title = row.get("title") or ""
    title = require_text(title, path, rowno, "title", allow_empty=True)
    text = require_text(row["text"], path, rowno, "text", allow_empty=True)
    if not text.strip() and not title.strip():
        raise data_error(path, rowno, "text", "empty text (and no title)", EMPTY_TEXT)
    return {"pid": pid, "title": title, "text": text}


def iter_corpus_parquet(path, on_error="raise", report=None, check_unique: bool = True):
    """Stream a parquet corpus (columns ``pid, text`` and optional ``title``)."""
    policy = resolve_policy(on_error, report, path)
    yield from corpus_parquet_records(path, path, policy, check_unique)
    policy.finish()


def write_corpus_parquet(path, rows: Iterable[Mapping]) -> int:
    """Write ``{"pid", "title", "text"}`` rows to parquet with CORPUS_SCHEMA (validated)."""
    seen = DuplicateChecker("pid")

    def checked():
        for n, row in enumerate(rows, start=1):
            out = _corpus_row(row, path, n)
            seen.check(out["pid"], path, n, "pid")
            yield out

    return write_parquet_rows(path, checked(), CORPUS_SCHEMA)
