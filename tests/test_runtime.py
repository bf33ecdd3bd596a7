"""raykd.runtime on a cluster that was already running (`ray start`, `ray job submit`): actor
pools that leave the read tasks a CPU. No Ray instance is started."""

from __future__ import annotations

import pytest

from raykd import runtime


@pytest.fixture
def free_cpus(monkeypatch):
    import ray

    def set_free(cpus: float) -> None:
        monkeypatch.setattr(ray, "available_resources", lambda: {"CPU": cpus})

    return set_free


def test_a_local_ray_keeps_the_requested_pool(monkeypatch, free_cpus):
    """Guards local runs' speed: without an attached cluster the pool is what was asked."""
    free_cpus(1.0)
    monkeypatch.delenv(runtime.RAY_MODE_ENV, raising=False)
    assert runtime.fit_actor_pool(2, 1.0) == 2
    monkeypatch.setenv(runtime.RAY_MODE_ENV, "local")
    assert runtime.fit_actor_pool(4, 1.0) == 4


@pytest.mark.parametrize(("free", "asked", "cpus", "want"), [
    (2, 2, 1.0, 1),    # a 2-CPU head: one actor, one CPU for the read task
    (1, 2, 1.0, 1),    # never fewer than one
    (8, 2, 1.0, 2),    # room enough: unchanged
    (5, 8, 2.0, 2),    # (5 - 1) / 2
    (2, 4, 0.0, 4),    # GPU actors that take no CPU: unchanged
])
def test_an_attached_cluster_leaves_a_cpu_to_the_read_tasks(monkeypatch, free_cpus, free,
                                                            asked, cpus, want):
    """Guards the 2-CPU head deadlock (`Total Progress: 0/?`): the pool fits the free CPUs
    minus one."""
    free_cpus(float(free))
    monkeypatch.setenv(runtime.RAY_MODE_ENV, "attached")
    assert runtime.fit_actor_pool(asked, cpus) == want


def test_init_ray_marks_an_attached_job_for_its_workers(monkeypatch):
    """Guards pools built in workers (Tune trials): the mode travels in the runtime env."""
    import ray

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda *a, **kw: calls.append(kw))
    monkeypatch.setenv(runtime.RAY_MODE_ENV, "local")
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    runtime.init_ray()
    assert calls[-1]["runtime_env"]["env_vars"][runtime.RAY_MODE_ENV] == "attached"
    assert runtime.attached_to_cluster()
    monkeypatch.delenv("RAY_ADDRESS")
    runtime.init_ray()
    assert calls[-1]["runtime_env"]["env_vars"][runtime.RAY_MODE_ENV] == "local"

