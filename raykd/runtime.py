"""Process set-up shared by every job: offline models, logging, and a Ray connection."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

from raykd.storage import is_uri

log = logging.getLogger(__name__)

# Set by `init_ray` (and passed to every worker through the runtime env): "attached" when this
# job connected to a cluster that was already running (`ray start`, `ray job submit`), "local"
# when it started a Ray of its own. Unset (a test's or a user's own `ray.init`): as "local".
RAY_MODE_ENV = "RAYKD_RAY_MODE"


def offline_models() -> None:
    """Models come from files or packages; never reach for a hub at run time."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")


def local_cpus() -> int:
    """Logical CPUs for a local Ray: twice the cores, at least 4, so that read tasks still
    get scheduled next to a pool of one-CPU model actors (on a laptop the actors are the
    bottleneck, not the logical count)."""
    return max(4, 2 * (os.cpu_count() or 1))


def init_ray(num_cpus: int | None = None):
    """Connect to the cluster in RAY_ADDRESS when set (e.g. under `ray job submit`), else start
    a local Ray with `local_cpus()` logical CPUs and its dashboard on 127.0.0.1 only.

    The dashboard serves Ray's State API, which Ray Train needs to free the placement group of
    a run whose controller died (a Tune trial that ASHA stops): without it each stopped trial
    keeps its CPUs reserved, and a sweep hangs once they are all taken."""
    import ray

    offline_models()
    if ray.is_initialized():
        return ray
    attached = bool(os.environ.get("RAY_ADDRESS"))
    os.environ[RAY_MODE_ENV] = "attached" if attached else "local"
    env_vars = {k: os.environ[k] for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                                           "TOKENIZERS_PARALLELISM", RAY_MODE_ENV)}
    if attached:
        # Under `ray job submit`, Ray refuses a ray.init env var that the job's runtime_env
        # also sets: pass only the others (the job's values are in os.environ already).
        job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")
        taken = (job.get("runtime_env") or {}).get("env_vars") or {}
        env_vars = {k: v for k, v in env_vars.items() if k not in taken}
        ray.init(runtime_env={"env_vars": env_vars} if env_vars else None, log_to_driver=True)
    else:
        # address="local": never attach by accident to a cluster that `ray start` left on
        # this machine; connecting is what RAY_ADDRESS is for.
        ray.init(address="local", num_cpus=num_cpus or local_cpus(), include_dashboard=True,
                 dashboard_host="127.0.0.1", runtime_env={"env_vars": env_vars})
    return ray


def attached_to_cluster() -> bool:
    """True in a job that `init_ray` connected to a running cluster (and in its workers)."""
    return os.environ.get(RAY_MODE_ENV) == "attached"


def fit_actor_pool(concurrency: int, num_cpus: float, what: str = "actor pool") -> int:
    """The size of a Ray Data actor pool of `num_cpus`-CPU actors.

    A local Ray (`init_ray` without RAY_ADDRESS) has `local_cpus()` logical CPUs, enough for
    the pool and the read tasks that feed it: `concurrency` is returned unchanged. On a cluster
    that was already running, the pool is capped so that one CPU stays free for the dataset's
    read and map tasks (on a 2-CPU head, two one-CPU actors would hold both and the pipeline
    would wait at `0/?` for ever): at most `(free CPUs - 1) / num_cpus` actors, at least one.
    GPU actors that take no CPU are never capped."""
    concurrency = int(concurrency)
    if not num_cpus or concurrency <= 1 or not attached_to_cluster():
        return concurrency
    import ray

    free = float(ray.available_resources().get("CPU", 0.0))
    fits = max(1, math.floor((free - 1.0) / float(num_cpus) + 1e-9))
    if fits >= concurrency:
        return concurrency
    log.warning("%s: %d actor(s) of %g CPU instead of %d, leaving one of the cluster's %g free "
                "CPU(s) to the read tasks", what, fits, num_cpus, concurrency, free)
    return fits


# Where a relative `storage` goes in a job whose working directory is Ray's copy of the code.
JOB_STORAGE_HOME = Path("~/raykd")


def in_ray_working_dir() -> bool:
    """True in a Ray job that runs in the copy of a `--working-dir` upload, a folder under
    the node's session dir that Ray deletes with the session (or sooner)."""
    job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")
    if (job.get("runtime_env") or {}).get("working_dir"):
        return True
    return "runtime_resources" in Path.cwd().parts


def job_storage(storage: str) -> str:
    """`storage` as a job should write to it: a URI or an absolute path unchanged; a relative
    path unchanged in a local run (relative to the current folder, as always), and under
    `~/raykd/` in a job that runs in Ray's working-dir copy, so that outputs, the student and
    the MLflow database outlive the Ray session."""
    if is_uri(storage) or os.path.isabs(storage) or not in_ray_working_dir():
        return storage
    return str(JOB_STORAGE_HOME.expanduser() / storage)
