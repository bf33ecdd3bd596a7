"""The ``on_error`` policy: a reader called with ``on_error="raise"`` (the default) raises the
first bad row; with ``on_error="skip"`` it leaves the bad row out and records it in a
:class:`SkipReport`. Nothing is dropped without a record: when the caller passes no report, the
reader makes one and emits its summary as a :class:`SkippedRowsWarning` once the file is read.
"""
from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from typing import NamedTuple

from raykd.data.validation import reason_of
from raykd.errors import DataError

ON_ERROR_CHOICES = ("raise", "skip")


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


