"""MLflow tracking: one run per recipe run, nested runs per stage, per-step metrics from rank 0.

The tracking URI is the recipe's `tracking.tracking_uri`, else MLFLOW_TRACKING_URI, else a local
sqlite store under the run's storage folder (a URI storage needs one of the first two).
Artefacts: with a tracking server (`http(s)://`) they go where the server puts them (its
`--artifacts-destination`, through the server, when it serves artefacts); with a sqlite or file
store they go to `<storage>/mlartifacts`. An experiment keeps the artefact location it was
created with. The final student is logged as an MLflow model (`log_student`). Rerunning a
recipe with the same name resumes its MLflow run when the params are the same, and is refused
when they differ.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from ray.train import UserCallback

from raykd.storage import is_uri

log = logging.getLogger(__name__)

RUN_TAG = "raykd.run"
STAGE_TAG = "raykd.stage"
MAX_PARAM_LENGTH = 6000
STUDENT_MODEL = "student"


def is_server(tracking_uri: str) -> bool:
    """Whether the tracking URI is an MLflow tracking server (which also decides where
    artefacts go), not a database or folder this process writes itself."""
    return tracking_uri.startswith(("http://", "https://"))


def resolve_tracking_uri(configured: str | None, storage: str) -> str:
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if is_uri(storage):
        from raykd.errors import ConfigError

        raise ConfigError("tracking.tracking_uri", (
            f"storage {storage!r} is a URI, and MLflow's run store cannot live there; set "
            "MLFLOW_TRACKING_URI (or tracking.tracking_uri) to an MLflow server (artefacts go "
            "through it) or a database (artefacts go to <storage>/mlartifacts) every "
            "submission reaches, or tracking.enabled=false"))
    root = Path(storage).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def flatten(obj, prefix: str = "") -> dict[str, str]:
    """Nested dicts and lists as dotted keys (MLflow params are flat strings)."""
    out: dict[str, str] = {}
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(obj, list) and obj and any(isinstance(v, (Mapping, list)) for v in obj):
        for i, value in enumerate(obj):
            out.update(flatten(value, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = str(obj)[:MAX_PARAM_LENGTH]
    return out


def numeric_metrics(metrics: Mapping) -> dict[str, float]:
    """The finite numeric entries of a metrics dict, with MLflow-safe names."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(float(value)):
            out[str(key).replace("@", "_at_")] = float(value)
    return out


class Tracker:
    """The MLflow side of one recipe run. Disabled trackers accept every call and do nothing."""

    def __init__(self, run_name: str, experiment: str, tracking_uri: str, enabled: bool = True,
                 artifact_root: str | None = None, afresh: bool = False,
                 params: Mapping | None = None):
        """The MLflow run of `run_name`: the one a previous attempt left (resumed), or with
        `afresh` a new one, the previous attempt's runs renamed `<name>~<run id>`. With
        `params`, a previous run logged with other values is refused (ConfigError naming the
        first differing param) instead of resumed. `artifact_root` is where a new experiment
        keeps its artefacts unless the URI is a tracking server, which decides that itself."""
        self.run_name, self.enabled, self.tracking_uri = run_name, enabled, tracking_uri
        self.run_id: str | None = None
        self._client = None
        if not enabled:
            return
        from mlflow.tracking import MlflowClient

        self._client = MlflowClient(tracking_uri)
        self.experiment_id = self._experiment(experiment, artifact_root)
        if afresh:
            self._retire(run_name)
        previous = self._find(f"tags.`{RUN_TAG}` = '{run_name}' and tags.`{STAGE_TAG}` = ''")
        if previous:
            if params is not None:
                self._check_params(previous, params, experiment)
            self.run_id = previous
            self._client.update_run(self.run_id, status="RUNNING")
            log.info("resuming MLflow run %s of '%s'%s at %s", self.run_id, run_name,
                     " (same params)" if params is not None else "", tracking_uri)
        else:
            run = self._client.create_run(self.experiment_id, run_name=run_name,
                                          tags={RUN_TAG: run_name, STAGE_TAG: ""})
            self.run_id = run.info.run_id
            log.info("MLflow run %s at %s", self.run_id, tracking_uri)

    def _experiment(self, name: str, artifact_root: str | None) -> str:
        """The experiment's id, created if new: at `artifact_root` for a local store, at the
        server's own default location for a tracking server (proxied `mlflow-artifacts:` when
        it serves artefacts)."""
        server = is_server(self.tracking_uri)
        found = self._client.get_experiment_by_name(name)
        if found is None:
            location = None
            if artifact_root and not server:
                location = (artifact_root if is_uri(artifact_root)
                            else Path(artifact_root).resolve().as_uri())
            return self._client.create_experiment(name, location)
        where = found.artifact_location or ""
        if server and where.startswith(("file:", "/")):
            log.warning("MLflow experiment '%s' keeps its artefacts at %s (set when it was "
                        "created), not on the server %s; use another tracking.experiment to "
                        "store them there", name, where, self.tracking_uri)
        return found.experiment_id

    def _check_params(self, run_id: str, params: Mapping, experiment: str) -> None:
        """Refuse to resume `run_id` when one of its params has another value now."""
        before = self._client.get_run(run_id).data.params
        for key, value in sorted(flatten(params).items()):
            if key in before and before[key] != value:
                from raykd.errors import ConfigError

                raise ConfigError(key, (
                    f"MLflow run {run_id} of '{self.run_name}' (experiment '{experiment}' at "
                    f"{self.tracking_uri}) has {before[key]!r}, this recipe {value!r}; rerun "
                    f"with the same recipe to resume it, or choose a new `name`"))

    def _retire(self, run_name: str) -> None:
        """Rename an earlier attempt's runs (parent and stages), so that they keep their
        params but no longer answer to `run_name`."""
        runs = self._client.search_runs([self.experiment_id], f"tags.`{RUN_TAG}` = '{run_name}'")
        parent = next((r.info.run_id for r in runs if r.data.tags.get(STAGE_TAG) == ""), "")
        for run in runs:
            self._client.set_tag(run.info.run_id, RUN_TAG, f"{run_name}~{parent[:8]}")
            if run.info.status == "RUNNING":
                self._client.set_terminated(run.info.run_id, status="FAILED")

    @property
    def client(self):
        return self._client

    def _find(self, query: str) -> str | None:
        runs = self._client.search_runs([self.experiment_id], query, max_results=1,
                                        order_by=["attributes.start_time DESC"])
        return runs[0].info.run_id if runs else None

    @contextmanager
    def stage(self, name: str) -> Iterator[str | None]:
        """A nested run for one stage (reused when the stage is resumed)."""
        if not self.enabled:
            yield None
            return
        query = f"tags.`{RUN_TAG}` = '{self.run_name}' and tags.`{STAGE_TAG}` = '{name}'"
        run_id = self._find(query)
        if run_id is None:
            run_id = self._client.create_run(
                self.experiment_id, run_name=f"{self.run_name}/{name}",
                tags={RUN_TAG: self.run_name, STAGE_TAG: name,
                      "mlflow.parentRunId": self.run_id}).info.run_id
        try:
            yield run_id
        except BaseException:
            self._client.set_terminated(run_id, status="FAILED")
            raise
        self._client.set_terminated(run_id, status="FINISHED")

    def log_params(self, params: Mapping, run_id: str | None = None) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Param

        run_id = run_id or self.run_id
        existing = self._client.get_run(run_id).data.params
        fresh = [Param(k, v) for k, v in flatten(params).items() if k not in existing]
        for start in range(0, len(fresh), 100):
            self._client.log_batch(run_id, params=fresh[start:start + 100])

    def log_metrics(self, metrics: Mapping, step: int | None = None,
                    run_id: str | None = None, prefix: str = "") -> None:
        if not self.enabled:
            return
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        batch = [Metric(prefix + k, v, stamp, step or 0) for k, v in numeric_metrics(metrics).items()]
        if batch:
            self._client.log_batch(run_id or self.run_id, metrics=batch)

    def set_tags(self, tags: Mapping, run_id: str | None = None) -> None:
        if self.enabled:
            for key, value in tags.items():
                self._client.set_tag(run_id or self.run_id, key, str(value)[:MAX_PARAM_LENGTH])

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None,
                     run_id: str | None = None) -> None:
        if not self.enabled:
            return
        path = Path(path)
        if path.is_dir():
            self._client.log_artifacts(run_id or self.run_id, str(path), artifact_path)
        else:
            self._client.log_artifact(run_id or self.run_id, str(path), artifact_path)

    def log_student(self, folder: str | os.PathLike, name: str = STUDENT_MODEL,
                    trust_remote_code: bool = False) -> str | None:
        """Log a sentence-transformers folder as an MLflow model of the run (flavour
        `sentence_transformers`, pyfunc: a list of texts in, one float32 vector per text out),
        loadable as `mlflow.pyfunc.load_model(f"runs:/{run_id}/{name}")`. Its artefacts go to
        the experiment's artefact location. A model already complete under `name` (a rerun of
        a finished run) is kept; an incomplete one is replaced. Returns the model id."""
        if not self.enabled:
            return None
        import numpy as np
        from mlflow.entities import LoggedModelStatus
        from mlflow.models import Model, ModelSignature
        from mlflow.types import ColSpec, Schema, TensorSpec
        from sentence_transformers import SentenceTransformer

        for model in self._logged_models(name):
            if model.status == LoggedModelStatus.READY:
                log.info("the student is already logged as MLflow model %s", model.model_id)
                return model.model_id
            self._client.delete_logged_model(model.model_id)
        import mlflow.sentence_transformers

        student = SentenceTransformer(str(folder), device="cpu",
                                      trust_remote_code=trust_remote_code)
        dim = (getattr(student, "get_embedding_dimension", None)  # sentence-transformers 6
               or student.get_sentence_embedding_dimension)()
        signature = ModelSignature(inputs=Schema([ColSpec("string")]),
                                   outputs=Schema([TensorSpec(np.dtype("float32"), (-1, dim))]))
        model = self._client.create_logged_model(self.experiment_id, name=name,
                                                 source_run_id=self.run_id)
        with _process_tracking_uri(self.tracking_uri):
            Model.log(artifact_path=None, name=name, flavor=mlflow.sentence_transformers,
                      run_id=self.run_id, model_id=model.model_id, model=student,
                      signature=signature, pip_requirements=_student_requirements())
        self._client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        log.info("student logged as MLflow model %s (runs:/%s/%s)", model.model_id,
                 self.run_id, name)
        return model.model_id

    def _logged_models(self, name: str) -> list:
        """This run's logged models called `name`."""
        found, token = [], None
        while True:
            page = self._client.search_logged_models([self.experiment_id],
                                                     filter_string=f"name = '{name}'",
                                                     page_token=token)
            found += [m for m in page if m.source_run_id == self.run_id]
            token = page.token
            if not token:
                return found

    def metric_history(self, key: str, run_id: str | None = None) -> list[tuple[int, float]]:
        if not self.enabled:
            return []
        history = self._client.get_metric_history(run_id or self.run_id, key)
        return sorted((m.step, m.value) for m in history)

    def finish(self, status: str = "FINISHED") -> None:
        if self.enabled and self.run_id:
            self._client.set_terminated(self.run_id, status=status)


@contextmanager
def _process_tracking_uri(uri: str) -> Iterator[None]:
    """`uri` as the process-wide tracking URI for the block (Model.log reads no other), then
    the one before, MLFLOW_TRACKING_URI included: mlflow.set_tracking_uri sets that variable
    and unsets it when given None."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    before, env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
        if env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env


def _student_requirements() -> list[str]:
    """What serving the student needs, pinned to this environment (no import scan)."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg).split('+')[0]}"
            for pkg in ("sentence-transformers", "transformers", "torch")]


class StepMetricsCallback(UserCallback):
    """Ray Train controller callback: rank 0's reported metrics go to a stage's MLflow run."""

    def __init__(self, tracking_uri: str, run_id: str, prefix: str = "train/"):
        self.tracking_uri, self.run_id, self.prefix = tracking_uri, run_id, prefix
        self._client = None

    def __getstate__(self):
        return {**self.__dict__, "_client": None}

    def after_report(self, run_context, metrics, checkpoint) -> None:
        if not metrics:
            return
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        rank0 = metrics[0]
        step = int(rank0.get("step", 0))
        stamp = int(time.time() * 1000)
        batch = [Metric(self.prefix + k, v, stamp, step)
                 for k, v in numeric_metrics(rank0).items() if k != "step"]
        try:
            self._client.log_batch(self.run_id, metrics=batch)
        except Exception as err:  # tracking must never kill training
            log.warning("could not log step %d to MLflow: %s", step, err)
