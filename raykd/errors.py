"""The project's own error types: every bad input names where it came from."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager


class RaykdError(Exception):
    """Base class of every error raykd raises on purpose."""


class DataError(RaykdError, ValueError):
    """A bad record in an input file, named by file, line and field.

    ``line`` is 1-based (the physical line of a text file, or the row index + 1 of a table);
    ``field`` is the column or JSON key at fault, when one is.
    """

    def __init__(self, path, line: int | None, field: str | None, message: str):
        self.path = str(path)
        self.line = line
        self.field = field
        self.message = message
        where = self.path if line is None else f"{self.path}:{line}"
        what = f" field '{field}':" if field else ""
        super().__init__(f"{where}:{what} {message}")

    def __reduce__(self):
        return (type(self), (self.path, self.line, self.field, self.message))


class ConfigError(RaykdError, ValueError):
    """A bad configuration value, named by its dotted field path."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"config field '{field}': {message}")

    def __reduce__(self):
        return (type(self), (self.field, self.message))


class LossInputError(RaykdError, ValueError):
    """Inputs to a loss that break its contract (shapes, NaN scores, bad parameters)."""


class ScoreAlignmentError(RaykdError, RuntimeError):
    """Scored output that does not hold exactly one finite score per input (qid, pid)."""


def user_error(err: BaseException) -> BaseException | None:
    """The project's own error (bad data or config) behind `err`, unwrapping Ray's task and
    actor errors and exception chains; None for anything else (a bug: keep its traceback)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        inner = getattr(err, "cause", None)  # a RayTaskError, also one posing as its cause
        if inner is None and isinstance(err, (ConfigError, DataError)):
            return err
        err = inner or err.__cause__
    return None


@contextmanager
def one_line_errors():
    """A command's errors as its user sees them: a bad config or bad data, raised here or in a
    Ray task, ends the command with `error: <message>` on stderr and exit 2; any other exception
    keeps its traceback (a bug). `RAYKD_DEBUG=1` keeps every traceback. Also a decorator:
    every command's `main` wears it."""
    try:
        yield
    except Exception as err:
        cause = user_error(err)
        if cause is None or os.environ.get("RAYKD_DEBUG", "") not in ("", "0"):
            raise
        print(f"error: {cause}", file=sys.stderr)
        raise SystemExit(2) from None
