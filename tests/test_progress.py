"""raykd's own progress lines (raykd/progress.py): formatting, throttling, the final line."""

from __future__ import annotations

import pytest

from raykd.progress import Progress, eta, format_duration, format_rate, verbose


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("seconds,shown", [
    (0, "0s"), (42.4, "42s"), (59.6, "1m00s"), (285, "4m45s"), (3599, "59m59s"),
    (3600, "1h00m"), (7500, "2h05m"), (float("inf"), "?"), (-1, "?"),
])
def test_durations_are_short(seconds, shown):
    assert format_duration(seconds) == shown


def test_rates_and_eta():
    assert format_rate(9.14) == "9.1/s"
    assert format_rate(1234.5) == "1,234/s"
    assert eta(2592, 5184, 284.8) == pytest.approx(284.8)
    assert eta(0, 10, 5.0) is None and eta(5, None, 5.0) is None


def test_lines_are_throttled_and_the_last_one_always_comes():
    clock, lines = Clock(), []
    progress = Progress("encoding corpus", total=5184, unit="passages", every=30,
                        clock=clock, echo=lines.append)
    clock.now += 10
    progress.update(100)                       # 10 s in: too soon
    assert lines == []
    clock.now += 274.8                         # 284.8 s in, 2592 done: a line with the ETA
    progress.update(2492)
    assert lines == ["[raykd] encoding corpus: 2592/5184 passages, 9.1/s, ETA 4m45s"]
    clock.now += 29
    progress.update(1000)                      # 29 s after the last line: none
    assert len(lines) == 1
    clock.now += 1
    progress.update(0)                         # 30 s after it: one
    assert len(lines) == 2 and lines[1].startswith("[raykd] encoding corpus: 3592/5184 passages")
    clock.now += 255.2
    progress.update(1592)
    progress.close()
    progress.close()                           # once
    assert lines[-1] == "[raykd] encoding corpus: 5184/5184 passages in 9m30s, 9.1/s"
    assert len(lines) == 4


def test_unknown_total_shows_count_and_rate_without_eta():
    clock, lines = Clock(), []
    with Progress("dark examples", unit="groups", every=30, clock=clock,
                  echo=lines.append) as progress:
        clock.now += 40
        progress.update(80)
    assert lines == ["[raykd] dark examples: 80 groups, 2.0/s",
                     "[raykd] dark examples: 80 groups in 40s, 2.0/s"]


def test_a_failure_inside_prints_no_final_line():
    lines = []
    with pytest.raises(RuntimeError), Progress("x", total=3, echo=lines.append) as progress:
        progress.update(1)
        raise RuntimeError("boom")
    assert lines == []


@pytest.mark.parametrize("value,expected", [("1", True), ("true", True), ("0", False),
                                            ("", False)])
def test_verbose_reads_the_env(monkeypatch, value, expected):
    monkeypatch.setenv("RAYKD_VERBOSE", value)
    assert verbose() is expected
