"""Files and lines for every reader: (gzip) opening, atomic writing, per-line UTF-8 decoding
that names the line and the byte, column splitting and JSON-object parsing.
"""
from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from raykd.data.validation import (
    ENCODING,
    MALFORMED,
    MISSING_FIELD,
    data_error,
    has_lone_surrogate,
)
from raykd.errors import DataError
from raykd.storage import atomic_path


def open_binary(path) -> IO[bytes]:
    """Open a file for byte reading; ``.gz`` is decompressed on the fly."""
    path = Path(path)
    if not path.is_file():
        raise data_error(path, None, None, "no such file", MALFORMED)
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


@contextmanager
def open_for_write(path, binary: bool = False):
    """Write to ``path`` atomically (temp file then rename); ``.gz`` is compressed (mtime 0)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".gz":
            raw = open(tmp, "wb")
            gz = gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0)
            handle = gz if binary else _text(gz)
            try:
                yield handle
            finally:
                handle.close()
                raw.close()
        else:
            with open(tmp, "wb" if binary else "w", **({} if binary else _TEXT_ARGS)) as handle:
                yield handle


_TEXT_ARGS = {"encoding": "utf-8", "newline": "\n"}


def _text(binary_handle):
    import io

    return io.TextIOWrapper(binary_handle, **_TEXT_ARGS)


def iter_raw_lines(fobj, path, chunk_size: int = 1 << 20) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw bytes) of every non-blank line; ``\\n`` or ``\\r\\n`` endings.

    Reads fixed-size chunks, so memory stays constant whatever the file size, and a line longer
    than a chunk is joined once (linear time, whatever its length). A UTF-8 byte-order mark at
    the start of the file is dropped. Lines holding only whitespace are not records and are
    passed over.
    """
    lineno = 0
    pending: list[bytes] = []  # the pieces of the current line so far (no b"\n" in any)
    while True:
        try:
            chunk = fobj.read(chunk_size)
        except (OSError, EOFError, zlib.error) as exc:
            raise data_error(path, lineno + 1, None, f"cannot read file: {exc}", MALFORMED) from exc
        if not chunk:
            break
        if b"\n" not in chunk:
            pending.append(chunk)
            continue
        pieces = chunk.split(b"\n")
        if pending:
            pieces[0] = b"".join([*pending, pieces[0]])
        pending = [pieces.pop()]
        for raw in pieces:
            lineno += 1
            raw = _line_body(raw, lineno)
            if raw.strip():
                yield lineno, raw
    rest = b"".join(pending)
    if rest:
        lineno += 1
        rest = _line_body(rest, lineno)
        if rest.strip():
            yield lineno, rest


def _line_body(raw: bytes, lineno: int) -> bytes:
    """A line without its ``\\r`` ending (and, on line 1, without the byte-order mark)."""
    if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    return raw[:-1] if raw.endswith(b"\r") else raw


def _bad_utf8(raw: bytes, exc: UnicodeDecodeError, path, line, field, base: int = 0) -> DataError:
    byte = raw[exc.start] if exc.start < len(raw) else 0
    return data_error(
        path,
        line,
        field,
        f"not valid UTF-8: byte 0x{byte:02x} at byte offset {base + exc.start} of the line",
        ENCODING,
    )


def decode_line(raw: bytes, path, line: int, field: str | None = None) -> str:
    """Strict UTF-8 decoding; a bad byte is a DataError with the line and byte offset."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad_utf8(raw, exc, path, line, field) from None


_NON_BLANK = re.compile(rb"[^ \t]+")


def split_columns(
    raw: bytes, path, line: int, columns: tuple[str, ...], sep: bytes | None = b"\t"
) -> list[str]:
    """Split a line into exactly ``len(columns)`` decoded columns.

    ``sep=b"\\t"`` splits on tabs (empty columns kept); ``sep=None`` on runs of spaces or tabs.
    A bad UTF-8 byte names the column it sits in; a wrong count names the first missing column.
    """
    if sep is None:
        spans = [m.span() for m in _NON_BLANK.finditer(raw)]
    else:
        spans, start = [], 0
        for part in raw.split(sep):
            spans.append((start, start + len(part)))
            start += len(part) + len(sep)
    kind = "tab-separated" if sep == b"\t" else "whitespace-separated"
    expected = f"{len(columns)} {kind} columns ({', '.join(columns)})"
    if len(spans) < len(columns):
        missing = columns[len(spans)]
        raise data_error(
            path,
            line,
            missing,
            f"missing column: expected {expected}, found {len(spans)}",
            MISSING_FIELD,
        )
    if len(spans) > len(columns):
        raise data_error(
            path, line, None, f"malformed line: expected {expected}, found {len(spans)}", MALFORMED
        )
    values = []
    for name, (start, end) in zip(columns, spans, strict=True):
        part = raw[start:end]
        try:
            values.append(part.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise _bad_utf8(part, exc, path, line, name, base=start) from None
    return values



def parse_json_object(raw: bytes, path, line: int) -> dict:
    """One JSONL line as a dict. Bad UTF-8 names the field holding the byte and its offset."""
    import json

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        field = None
        try:
            loose = json.loads(raw.decode("utf-8", errors="surrogateescape"))
            field = _surrogate_field(loose)
        except (ValueError, RecursionError):
            pass
        raise _bad_utf8(raw, exc, path, line, field) from None
    try:
        obj = json.loads(text)
    except RecursionError:
        raise data_error(path, line, None, "malformed JSON: nested too deeply", MALFORMED) from None
    except ValueError as exc:
        detail = getattr(exc, "msg", str(exc))
        col = getattr(exc, "colno", None)
        where = f" at column {col}" if col is not None else ""
        raise data_error(path, line, None, f"malformed JSON: {detail}{where}", MALFORMED) from None
    if not isinstance(obj, dict):
        raise data_error(
            path, line, None, f"expected a JSON object, got {type(obj).__name__}", MALFORMED
        )
    return obj


def _surrogate_field(obj, prefix: str = "") -> str | None:
    """The (dotted/indexed) name of the first string in ``obj`` that holds a lone surrogate."""
    if isinstance(obj, str):
        return (prefix or None) if has_lone_surrogate(obj) else None
    if isinstance(obj, dict):
        for key, value in obj.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if has_lone_surrogate(str(key)):
                return name
            found = _surrogate_field(value, name)
            if found:
                return found
    if isinstance(obj, list):
        for i, value in enumerate(obj):
            found = _surrogate_field(value, f"{prefix}[{i}]")
            if found:
                return found
    return None


