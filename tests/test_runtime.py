"""raykd.runtime on a cluster that was already running (`ray start`, `ray job submit`): actor
pools that leave the read tasks a CPU, a relative storage kept out of Ray's working-dir copy;
and the `.rayignore` rules that keep outputs out of a `--working-dir .` upload (through Ray's
own packaging code). No Ray instance is started."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raykd import runtime
from raykd.storage import Storage

ROOT = Path(__file__).resolve().parents[1]


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


def test_a_relative_storage_leaves_rays_working_dir(monkeypatch, tmp_path):
    """Guards outputs that vanish with the Ray session: in a job that runs in Ray's copy of a
    `--working-dir` upload, a relative storage goes under ~/raykd; absolute paths and URIs,
    and every path of a local run, are unchanged."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert runtime.job_storage("outputs") == "outputs"
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(
        {"runtime_env": {"working_dir": "gcs://_ray_pkg_0123.zip"}}))
    assert runtime.job_storage("outputs") == str(tmp_path / "home" / "raykd" / "outputs")
    assert runtime.job_storage("/data/runs") == "/data/runs"
    assert runtime.job_storage("s3://bucket/raykd") == "s3://bucket/raykd"
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR")
    copy = tmp_path / "session" / "runtime_resources" / "working_dir_files" / "_ray_pkg_0"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    assert runtime.job_storage("runs") == str(tmp_path / "home" / "raykd" / "runs")


def _uploaded(root: Path) -> list[str]:
    """The files `ray job submit --working-dir root` would upload (Ray's own traversal)."""
    from ray._private.runtime_env import packaging

    found: list[Path] = []
    packaging._dir_travel(root, [packaging._get_excludes(root, [])], found.append,
                          include_gitignore=True)
    return sorted(str(p.relative_to(root)) for p in found if p.is_file())


def test_outputs_and_caches_stay_out_of_a_working_dir_upload(tmp_path):
    """Guards `413 request too large`: the repository's .rayignore and .gitignore leave out
    every output and cache location, and a storage folder raykd creates under any name inside
    the checkout is left out by the `.rayignore` it gets."""
    repo = tmp_path / "repo"
    (repo / "raykd").mkdir(parents=True)
    (repo / "raykd" / "x.py").write_text("")
    for name in (".rayignore", ".gitignore"):
        (repo / name).write_text((ROOT / name).read_text())
    left_out = ["outputs/a/student/model.safetensors", "mlruns/0/meta.yaml",
                "mlartifacts/1/a/artifacts/x", "mlflow.db", "sub/mlflow.db",
                "score_cache/bm25-1/part-0.parquet", "embedding_cache/e/x.npy",
                ".venv/bin/python", "raykd/__pycache__/x.pyc", ".pytest_cache/v",
                ".ruff_cache/x", ".hypothesis/x", "build/lib/x.py", "dist/raykd.whl",
                "raykd.egg-info/PKG-INFO", ".git/HEAD"]
    for rel in left_out:
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text("x")
    storage = Storage(repo / "my-runs")
    storage.create_local()
    (repo / "my-runs" / "adam-quick" / "student").mkdir(parents=True)
    (repo / "my-runs" / "adam-quick" / "student" / "model.safetensors").write_text("x")
    (repo / "my-runs" / "mlflow.db").write_text("x")
    assert _uploaded(repo) == [".gitignore", ".rayignore", "raykd/x.py"]


def test_an_existing_storage_folder_is_left_as_it_is(tmp_path):
    """Guards users' result folders: only a folder raykd creates gets the marker."""
    (tmp_path / "outputs").mkdir()
    Storage(tmp_path / "outputs").create_local()
    assert not (tmp_path / "outputs" / ".rayignore").exists()
    Storage(tmp_path / "new").create_local()
    assert (tmp_path / "new" / ".rayignore").read_text().splitlines()[-1] == "*"


def test_a_sweep_submitted_as_a_job_keeps_its_storage_out_of_rays_working_dir(monkeypatch,
                                                                               tmp_path):
    """Guards `raykd tune` under `ray job submit --working-dir`: the recipe's relative storage
    and a relative --storage both go under ~/raykd, as for a recipe job; a local sweep's
    storage stays as given."""
    from raykd.commands.tune import build_parser, options_from_args

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    local = options_from_args(build_parser().parse_args(["--space", "adam_scifact"]))
    assert not any(o.startswith("storage=") for o in local.overrides)
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(
        {"runtime_env": {"working_dir": "gcs://_ray_pkg_0123.zip"}}))
    job = options_from_args(build_parser().parse_args(["--space", "adam_scifact"]))
    assert job.overrides[-1] == f"storage={tmp_path / 'home' / 'raykd' / 'outputs'}"
    given = options_from_args(build_parser().parse_args(["--space", "adam_scifact", "--storage", "r"]))
    assert given.overrides[-1] == f"storage={tmp_path / 'home' / 'raykd' / 'r'}"
