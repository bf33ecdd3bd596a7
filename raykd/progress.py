"""Progress lines for raykd's long steps, meant for a person reading a job's log.

    progress = Progress("encoding corpus", total=5184, unit="passages")
    for batch in batches:
        ...
        progress.update(len(batch))
    progress.close()

prints at most one line every `every` seconds (30 by default), then one at the end:

    [raykd] encoding corpus: 2592/5184 passages, 9.1/s, ETA 4m45s
    [raykd] encoding corpus: 5184/5184 passages in 9m30s, 9.1/s

Ray Data's own progress (its status blocks and bars) is off by default in a job
(`raykd.runtime.quiet_ray_data`); these lines take its place. `verbose()` says whether the user
asked for everything back (`--verbose`, or RAYKD_VERBOSE=1 in the environment).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

VERBOSE_ENV = "RAYKD_VERBOSE"


def verbose() -> bool:
    """True when RAYKD_VERBOSE is set to a true value (`--verbose` sets it for a job)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def format_duration(seconds: float) -> str:
    """`42s`, `4m45s`, `2h05m`: short, for ETAs and elapsed times."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def format_rate(per_second: float) -> str:
    """Items per second: one decimal under 100, none above."""
    if not math.isfinite(per_second):
        return "?/s"
    return f"{per_second:.1f}/s" if per_second < 100 else f"{per_second:,.0f}/s"


def eta(done: float, total: float | None, elapsed: float) -> float | None:
    """Seconds left at the average rate so far; None when it cannot be told yet."""
    if not total or done <= 0 or elapsed <= 0:
        return None
    return max(total - done, 0) * elapsed / done


def _print(line: str) -> None:
    print(line, flush=True)


class Progress:
    """Counts work done and prints a throttled progress line (see the module docstring).

    `total` may be None (unknown): the lines then show the count and the rate, no ETA.
    `clock` and `echo` are injectable (tests; a job's own echo)."""

    def __init__(self, what: str, total: int | None = None, unit: str = "items", *,
                 every: float = 30.0, echo: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, prefix: str = "[raykd] "):
        self.what, self.total, self.unit = what, total, unit
        self.every = float(every)
        self.echo = echo or _print
        self.clock = clock
        self.prefix = prefix
        self.done = 0
        self.closed = False
        self.start = clock()
        self._last = self.start

    def line(self, final: bool = False) -> str:
        elapsed = max(self.clock() - self.start, 0.0)
        count = f"{self.done}/{self.total}" if self.total is not None else f"{self.done}"
        rate = self.done / elapsed if elapsed > 0 else float("nan")
        text = f"{self.prefix}{self.what}: {count} {self.unit}"
        if final:
            text += f" in {format_duration(elapsed)}"
            return text + (f", {format_rate(rate)}" if self.done and elapsed > 0 else "")
        if self.done and elapsed > 0:
            text += f", {format_rate(rate)}"
        left = eta(self.done, self.total, elapsed)
        if left is not None:
            text += f", ETA {format_duration(left)}"
        return text

    def update(self, n: int = 1) -> None:
        """Add `n` done; print a line when `every` seconds passed since the last one (not
        once all is done: the final line says it)."""
        self.done += int(n)
        if self.closed or (self.total is not None and self.done >= self.total):
            return
        now = self.clock()
        if now - self._last >= self.every:
            self._last = now
            self.echo(self.line())

    def close(self) -> None:
        """Print the final line (once)."""
        if not self.closed:
            self.closed = True
            self.echo(self.line(final=True))

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.closed = True  # a failure says so itself; no "done" line after it
