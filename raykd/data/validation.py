"""Validation shared by every reader: the skip report, the ``on_error`` policy, per-line UTF-8
decoding, column splitting, duplicate-id detection and value checks.

Every problem is a :class:`raykd.errors.DataError` naming file, line and field. A reader called
with ``on_error="raise"`` (the default) raises the first one; with ``on_error="skip"`` it leaves
the bad row out and records it in a :class:`SkipReport`. Nothing is dropped without a record:
when the caller passes no report, the reader makes one and emits its summary as a
:class:`SkippedRowsWarning` once the file is read.
"""

from __future__ import annotations

import gzip
import math
import re
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Container, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, NamedTuple

from raykd.errors import DataError
from raykd.storage import atomic_path

ON_ERROR_CHOICES = ("raise", "skip")

# Reasons a row is rejected (the keys of SkipReport.counts).
MALFORMED = "malformed"  # bad JSON, wrong column count, not an object
MISSING_FIELD = "missing_field"
BAD_VALUE = "bad_value"  # wrong type, not a number, label outside {0, 1}, unknown kind, ...
DUPLICATE_ID = "duplicate_id"
UNKNOWN_ID = "unknown_id"  # an id absent from the corpus / queries it refers to
EMPTY_TEXT = "empty_text"
ENCODING = "encoding"  # not valid UTF-8
NON_FINITE = "non_finite"  # NaN or +-inf score
REASONS = (
    MALFORMED,
    MISSING_FIELD,
    BAD_VALUE,
    DUPLICATE_ID,
    UNKNOWN_ID,
    EMPTY_TEXT,
    ENCODING,
    NON_FINITE,
)


def data_error(path, line: int | None, field: str | None, message: str, reason: str) -> DataError:
    """A DataError tagged with one of REASONS (read back by SkipReport)."""
    err = DataError(path, line, field, message)
    err.reason = reason
    return err


def reason_of(err: DataError) -> str:
    return getattr(err, "reason", BAD_VALUE)


class SkippedRow(NamedTuple):
    """One row left out under ``on_error="skip"``: where, which field, why (a REASONS key)."""

    path: str
    line: int | None
    field: str | None
    reason: str
    message: str = ""


class SkippedRowsWarning(UserWarning):
    """Rows were skipped and the caller passed no SkipReport to receive them."""


class SkipReport:
    """Every row skipped under ``on_error="skip"``: ``entries`` (SkippedRow, in order),
    ``counts`` (reason -> number), ``total``, and a printable ``summary()``.

    One report may collect from several readers. Ray Data builders attach a remote source
    that is drained whenever the report is read, so read it after consuming the dataset.
    """

    def __init__(self) -> None:
        self._entries: list[SkippedRow] = []
        self._sources: list[Callable[[], list[SkippedRow]]] = []

    def add(self, err: DataError) -> None:
        self._entries.append(SkippedRow(err.path, err.line, err.field, reason_of(err), err.message))

    def extend(self, rows: Iterable[SkippedRow]) -> None:
        self._entries.extend(SkippedRow(*row) for row in rows)

    def attach(self, fetch: Callable[[], list[SkippedRow]]) -> None:
        """Register a callable returning rows skipped elsewhere (e.g. in Ray workers)."""
        self._sources.append(fetch)

    def _drain(self) -> None:
        for fetch in self._sources:
            self.extend(fetch())

    @property
    def entries(self) -> list[SkippedRow]:
        self._drain()
        return list(self._entries)

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(row.reason for row in self.entries))

    @property
    def total(self) -> int:
        return len(self.entries)

    def __len__(self) -> int:
        return self.total

    def __bool__(self) -> bool:
        return True  # an empty report is still a report

    def summary(self, max_rows: int = 20) -> str:
        entries = self.entries
        if not entries:
            return "no rows skipped"
        counts = Counter(row.reason for row in entries)
        per_reason = ", ".join(f"{reason}: {n}" for reason, n in sorted(counts.items()))
        lines = [f"{len(entries)} rows skipped ({per_reason})"]
        for row in entries[:max_rows]:
            where = row.path if row.line is None else f"{row.path}:{row.line}"
            what = f" field '{row.field}'" if row.field else ""
            lines.append(f"  {where}:{what} [{row.reason}] {row.message}")
        if len(entries) > max_rows:
            lines.append(f"  ... and {len(entries) - max_rows} more")
        return "\n".join(lines)

    def print_summary(self, file=None) -> None:
        print(self.summary(), file=file)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return f"SkipReport(total={self.total}, counts={self.counts})"


class ErrorPolicy:
    """What a reader does with a bad row: raise it, or record it in a SkipReport and go on."""

    def __init__(self, on_error: str = "raise", report: SkipReport | None = None, source=""):
        if on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
        self.skip = on_error == "skip"
        self.owns_report = self.skip and report is None
        self.report = SkipReport() if self.owns_report else report
        self.source = str(source)
        self.skipped = 0

    def handle(self, err: DataError) -> None:
        if not self.skip:
            raise err
        self.skipped += 1
        self.report.add(err)

    def finish(self) -> None:
        """Called once the input is read: warn with the summary if the caller has no report."""
        if self.owns_report and self.skipped:
            warnings.warn(
                f"{self.source}: {self.report.summary()}", SkippedRowsWarning, stacklevel=3
            )


def resolve_policy(on_error, report, source) -> ErrorPolicy:
    if isinstance(on_error, ErrorPolicy):
        return on_error
    return ErrorPolicy(on_error, report, source)


# ---------------------------------------------------------------- files and lines


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


# ---------------------------------------------------------------- value checks


def require_id(value, path, line, field: str) -> str:
    """A non-empty string id (ids are strings everywhere; an int is not silently converted)."""
    if not isinstance(value, str):
        raise data_error(
            path,
            line,
            field,
            f"id must be a string, got {type(value).__name__} {value!r}",
            BAD_VALUE,
        )
    if not value.strip():
        raise data_error(path, line, field, "empty id", EMPTY_TEXT)
    if _has_surrogate(value):
        raise data_error(path, line, field, "id is not valid UTF-8 (lone surrogate)", ENCODING)
    return value


def require_text(value, path, line, field: str, allow_empty: bool = False) -> str:
    """A string that is non-empty after strip (unless ``allow_empty``)."""
    if not isinstance(value, str):
        raise data_error(
            path, line, field, f"text must be a string, got {type(value).__name__}", BAD_VALUE
        )
    if not allow_empty and not value.strip():
        raise data_error(path, line, field, "empty text", EMPTY_TEXT)
    if _has_surrogate(value):
        raise data_error(path, line, field, "text is not valid UTF-8 (lone surrogate)", ENCODING)
    return value


def require_finite(value, path, line, field: str, allow_str: bool = False) -> float:
    """A finite float from a number (or, with ``allow_str``, a numeric string as read from a
    TSV cell); NaN and +-inf are rejected."""
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not allow_str):
        raise data_error(path, line, field, f"score must be a number, got {value!r}", BAD_VALUE)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise data_error(
                path, line, field, f"score is not a number: {value!r}", BAD_VALUE
            ) from None
    else:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise data_error(
                path, line, field, f"score must be a number, got {type(value).__name__}", BAD_VALUE
            ) from None
    if not math.isfinite(number):
        raise data_error(path, line, field, f"score is not finite: {value!r}", NON_FINITE)
    return number


def require_int(value, path, line, field: str) -> int:
    """An int from an int or an integer string (not a bool, not a float)."""
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise data_error(
                path, line, field, f"expected an integer, got {value!r}", BAD_VALUE
            ) from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise data_error(path, line, field, f"expected an integer, got {value!r}", BAD_VALUE)
    return value


def check_known_id(value: str, known: Container[str] | None, path, line, field, what: str) -> None:
    """An id that must be in ``known`` (e.g. the corpus pids); ``known=None`` skips the check."""
    if known is not None and value not in known:
        raise data_error(path, line, field, f"id {value!r} is not in the {what}", UNKNOWN_ID)


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class DuplicateChecker:
    """Remembers each id with its first line; a repeat raises naming both lines.

    Memory grows with the number of ids (not with the text), which is the least a duplicate
    check can keep.
    """

    def __init__(self, what: str = "id") -> None:
        self.what = what
        self.first_line: dict = {}

    def check(self, key, path, line, field: str) -> None:
        first = self.first_line.setdefault(key, line)
        if first != line:
            shown = key if isinstance(key, str) else " / ".join(map(str, key))
            raise data_error(
                path,
                line,
                field,
                f"duplicate {self.what} {shown!r} (first seen at line {first})",
                DUPLICATE_ID,
            )

    def __contains__(self, key) -> bool:
        return key in self.first_line

    def __len__(self) -> int:
        return len(self.first_line)


def check_tsv_value(value: str, path, index: int, field: str) -> str:
    """A value about to be written to a TSV cell: no tab, no line break."""
    if not isinstance(value, str):
        raise data_error(
            path, index, field, f"expected a string, got {type(value).__name__}", BAD_VALUE
        )
    if any(ch in value for ch in "\t\n\r"):
        raise data_error(
            path, index, field, "a TSV value cannot hold a tab or a line break", BAD_VALUE
        )
    return value


def format_score(value: float) -> str:
    """The shortest text that parses back to the same float."""
    return repr(float(value))


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
        return (prefix or None) if _has_surrogate(obj) else None
    if isinstance(obj, dict):
        for key, value in obj.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if _has_surrogate(str(key)):
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


def require_fields(obj: dict, fields: Iterable[str], path, line: int) -> None:
    for name in fields:
        if name not in obj or obj[name] is None:
            raise data_error(path, line, name, "missing field", MISSING_FIELD)
