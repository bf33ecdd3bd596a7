"""Process set-up shared by every job: offline models, logging, and a Ray connection."""

from __future__ import annotations

import json
import logging
import os


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
    env_vars = {k: os.environ[k] for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                                           "TOKENIZERS_PARALLELISM")}
    if os.environ.get("RAY_ADDRESS"):
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
