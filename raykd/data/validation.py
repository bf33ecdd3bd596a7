"""The error vocabulary and the value checks every reader shares.

Every problem is a :class:`raykd.errors.DataError` naming file, line and field, with a reason
from the vocabulary below (the keys of a skip report's counts). What a reader then does with it
(raise, or skip and record) is `raykd.data.skips`; reading lines, columns and JSON objects from
files is `raykd.data.lines`.
"""
from __future__ import annotations

import math
from collections.abc import Container, Iterable

from raykd.errors import DataError

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
    if has_lone_surrogate(value):
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
    if has_lone_surrogate(value):
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


def has_lone_surrogate(text: str) -> bool:
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



def require_fields(obj: dict, fields: Iterable[str], path, line: int) -> None:
    for name in fields:
        if name not in obj or obj[name] is None:
            raise data_error(path, line, name, "missing field", MISSING_FIELD)
