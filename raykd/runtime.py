"""Process set-up shared by every job: offline models, logging (quiet by default), and a Ray
connection.

A job's output is meant for a person: raykd's own `[raykd] ...` lines, warnings and errors.
Ray Data's progress blocks and bars, its per-dataset execution plans, faiss's loader lines and
transformers' weight-loading bars and key reports are off unless the job runs with `--verbose`
or RAYKD_VERBOSE=1 (`raykd.progress.verbose`)."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

from raykd.progress import VERBOSE_ENV, verbose
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


# Set in this process and passed to every Ray worker (unless verbose): no hub or transformers
# progress bars, transformers logs errors only (the weight-loading bars, the UNEXPECTED /
# MISSING key tables of a cut model).
QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error"}
# Third-party loggers that speak at INFO about nothing a person needs.
QUIET_LOGGERS = ("faiss.loader", "faiss", "mlflow.store.db.utils", "alembic",
                 "sentence_transformers")


def setup_logging(level: int = logging.INFO, verbose_flag: bool = False) -> None:
    """Log at `level` to stderr; quiet third-party noise unless verbose. `verbose_flag` (a
    job's `--verbose`) sets RAYKD_VERBOSE=1 for this process and its Ray workers."""
    if verbose_flag:
        os.environ[VERBOSE_ENV] = "1"
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    if verbose():  # raykd's bookkeeping lines too (cache hits, index builds, shard commits)
        logging.getLogger("raykd").setLevel(logging.DEBUG)
    quiet_third_party()


def add_verbose_argument(parser) -> None:
    """`--verbose` on a job's command line (read by `setup_logging(verbose_flag=...)`)."""
    parser.add_argument("--verbose", action="store_true",
                        help="show everything: Ray Data's progress and execution plans, "
                             "third-party INFO logs and bars (also RAYKD_VERBOSE=1)")


def quiet_third_party() -> None:
    """faiss's loader lines, the hub's and transformers' bars and transformers' INFO/WARNING
    reports off in this process (a no-op when verbose). Safe to call again, in any process:
    Ray actors that load models or faiss may call it at start."""
    if verbose():
        return
    import sys

    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    if "huggingface_hub" in sys.modules:  # read its env var at import: tell it directly
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


class _Drop(logging.Filter):
    """Drops records below `below` and those whose message starts with one of `starts`."""

    def __init__(self, *starts: str, below: int = 0) -> None:
        super().__init__()
        self.starts, self.below = starts, below

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.below and not str(record.msg).startswith(self.starts)


# logger -> what is dropped from it unless verbose (warnings and errors of these loggers pass,
# but for the one that only says that Ray Data's progress is off).
_QUIET_FILTERS = {
    "ray.data._internal.progress": _Drop("Progress bars disabled",
                                         "Progress will be logged because stdout"),
    # "Starting execution of Dataset", "Execution plan", "execution finished in 0.5 seconds"
    "ray.data._internal.execution.streaming_executor": _Drop(below=logging.WARNING),
}


def _ray_train_report_logger() -> str:
    """Ray Train's "Reporting training result ..." logger, which is named by its file's path
    (so LoggingConfig, which filters `ray.train.*`, misses it)."""
    import ray

    return os.path.join(os.path.dirname(ray.__file__), "train", "v2", "_internal",
                        "execution", "context.py")


def quiet_ray_data() -> None:
    """Ray Data without its progress (the 10 s status blocks when stdout is not a terminal,
    the bars when it is, the warning that they are off) and without its per-dataset INFO
    lines ("Starting execution", "Execution plan", "execution finished"), in this process: the
    driver builds and runs the datasets (the context it sets travels with them); Ray workers
    run `quiet_worker`. raykd's long steps print their own progress (`raykd.progress`).
    A no-op when verbose."""
    if verbose():
        return
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    for name, drop in _QUIET_FILTERS.items():
        target = logging.getLogger(name)
        if drop not in target.filters:
            target.addFilter(drop)
    logging.getLogger(_ray_train_report_logger()).setLevel(logging.WARNING)
    # Ray Train's own default ingest options set it (DataConfig.default_ingest_options): not
    # ours to act on.
    import warnings

    warnings.filterwarnings("ignore", message=r".*ExecutionOptions\.exclude_resources")


def quiet_worker() -> None:
    """Every Ray worker's start (init_ray's `worker_process_setup_hook`): the quiet defaults in
    actors and tasks too (Ray Data's split coordinator, the model actors, Ray Train's workers),
    whose output Ray forwards to the job's log. A no-op when verbose (RAYKD_VERBOSE travels in
    the runtime env)."""
    quiet_third_party()
    quiet_ray_data()


def train_logging() -> dict:
    """`RunConfig` keywords that keep Ray Train's INFO lines (worker group started, process
    group set up, checkpoint created, ...) out of a job's log unless verbose."""
    try:
        from ray.train import LoggingConfig
    except ImportError:  # Ray Train v1
        return {}
    return {"logging_config": LoggingConfig(log_level="INFO" if verbose() else "WARNING")}


def local_cpus() -> int:
    """Logical CPUs for a local Ray: twice the cores, at least 4, so that read tasks still
    get scheduled next to a pool of one-CPU model actors (on a laptop the actors are the
    bottleneck, not the logical count)."""
    return max(4, 2 * (os.cpu_count() or 1))


SETUP_HOOK = "worker_process_setup_hook"
QUIET_WORKER = "raykd.runtime.quiet_worker"  # imported by name in each worker


def ordered_ray_data() -> None:
    """Ray Data hands rows on in input order (`preserve_order`), in this process's datasets:
    an actor pool (teacher scoring, dark examples, encoding) otherwise returns blocks as they
    finish, the files it writes change order from run to run, and so do the batches a student
    trains on. With it, the same recipe and seed give the same numbers."""
    import ray.data

    ray.data.DataContext.get_current().execution_options.preserve_order = True


def init_ray(num_cpus: int | None = None):
    """Connect to the cluster in RAY_ADDRESS when set (e.g. under `ray job submit`), else start
    a local Ray with `local_cpus()` logical CPUs and its dashboard on 127.0.0.1 only.

    The dashboard serves Ray's State API, which Ray Train needs to free the placement group of
    a run whose controller died (a Tune trial that ASHA stops): without it each stopped trial
    keeps its CPUs reserved, and a sweep hangs once they are all taken."""
    import ray

    offline_models()
    quiet_third_party()
    quiet_ray_data()
    ordered_ray_data()
    if ray.is_initialized():
        return ray
    attached = bool(os.environ.get("RAY_ADDRESS"))
    os.environ[RAY_MODE_ENV] = "attached" if attached else "local"
    passed = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM", RAY_MODE_ENV,
              VERBOSE_ENV, *QUIET_ENV)
    env_vars = {k: os.environ[k] for k in passed if k in os.environ}
    if attached:
        # Under `ray job submit`, Ray refuses a ray.init env var that the job's runtime_env
        # also sets: pass only the others (the job's values are in os.environ already).
        job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")
        taken = (job.get("runtime_env") or {}).get("env_vars") or {}
        env_vars = {k: v for k, v in env_vars.items() if k not in taken}
        runtime_env = {"env_vars": env_vars} if env_vars else {}
        if not (job.get("runtime_env") or {}).get(SETUP_HOOK):
            runtime_env[SETUP_HOOK] = QUIET_WORKER
        ray.init(runtime_env=runtime_env or None, log_to_driver=True)
    else:
        # address="local": never attach by accident to a cluster that `ray start` left on
        # this machine; connecting is what RAY_ADDRESS is for.
        ray.init(address="local", num_cpus=num_cpus or local_cpus(), include_dashboard=True,
                 dashboard_host="127.0.0.1",
                 runtime_env={"env_vars": env_vars, SETUP_HOOK: QUIET_WORKER})
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
