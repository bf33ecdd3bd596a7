"""raykd's own progress lines (raykd/progress.py): formatting, throttling, the final line, and
the quiet defaults of a job's process (raykd/runtime.py)."""

from __future__ import annotations

import logging

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
    assert len(lines) == 3  # the last update reached the total: no interim line for it


def test_no_progress_line_once_all_is_done_only_the_final_one():
    clock, lines = Clock(), []
    progress = Progress("teacher scoring", total=50, unit="groups", clock=clock,
                        echo=lines.append)
    clock.now += 49
    progress.update(50)                        # all at once, late: no "50/50, ETA 0s" line
    progress.close()
    assert lines == ["[raykd] teacher scoring: 50/50 groups in 49s, 1.0/s"]


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


def test_quiet_defaults_and_verbose(monkeypatch):
    """Without RAYKD_VERBOSE a job's process quiets faiss's loader and the hub/transformers
    bars (also for its Ray workers, through the env); `--verbose` sets RAYKD_VERBOSE and
    leaves them alone."""
    from raykd import runtime

    for name in ("RAYKD_VERBOSE", *runtime.QUIET_ENV):  # set, then removed: restored after
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    faiss_logger = logging.getLogger("faiss.loader")
    monkeypatch.setattr(faiss_logger, "level", logging.NOTSET)
    st_logger = logging.getLogger("sentence_transformers")  # its load/save lines (MLflow model)
    monkeypatch.setattr(st_logger, "level", logging.NOTSET)
    assert not verbose()
    runtime.quiet_third_party()
    assert faiss_logger.level == logging.WARNING
    assert st_logger.level == logging.WARNING
    assert all(runtime.os.environ[k] == v for k, v in runtime.QUIET_ENV.items())

    for name in runtime.QUIET_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(faiss_logger, "level", logging.NOTSET)
    monkeypatch.setattr(runtime.logging, "basicConfig", lambda **kw: None)
    runtime.setup_logging(verbose_flag=True)
    assert verbose() and faiss_logger.level == logging.NOTSET
    assert not any(k in runtime.os.environ for k in runtime.QUIET_ENV)


def _passes(logger_name: str, level: int, msg: str) -> bool:
    log = logging.getLogger(logger_name)
    record = log.makeRecord(log.name, level, "f", 1, msg, None, None)
    return all(f.filter(record) for f in log.filters)


def test_ray_data_and_ray_train_chatter_is_filtered(monkeypatch):
    """Ray Data's progress is off and so is its warning that it is ("Progress bars
    disabled..."); its per-dataset INFO lines are dropped, its warnings pass; Ray Train logs
    warnings only. With RAYKD_VERBOSE=1 Ray Train logs INFO again."""
    from raykd import runtime

    monkeypatch.setenv("RAYKD_VERBOSE", "0")
    import ray.data

    ctx = ray.data.DataContext.get_current()
    monkeypatch.setattr(ctx, "enable_progress_bars", True)
    monkeypatch.setattr(ctx, "print_on_execution_start", True)
    runtime.quiet_ray_data()
    assert not ctx.enable_progress_bars and not ctx.print_on_execution_start
    progress = "ray.data._internal.progress"
    assert not _passes(progress, logging.WARNING, "Progress bars disabled. To enable, set ...")
    assert _passes(progress, logging.WARNING, "something else went wrong")
    executor = "ray.data._internal.execution.streaming_executor"
    assert not _passes(executor, logging.INFO, "Dataset d execution finished in 0.49 seconds")
    assert _passes(executor, logging.WARNING, "an operator is backpressured for ever")
    assert runtime.train_logging()["logging_config"].log_level == "WARNING"
    monkeypatch.setenv("RAYKD_VERBOSE", "1")
    assert runtime.train_logging()["logging_config"].log_level == "INFO"
