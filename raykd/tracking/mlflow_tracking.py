"""MLflow tracking: one run per recipe run, nested runs per stage, per-step metrics from rank 0.

The tracking URI is the recipe's `tracking.tracking_uri`, else MLFLOW_TRACKING_URI, else a local
sqlite store under the run's storage folder (a URI storage needs one of the first two; its
artefacts go to `<storage>/mlartifacts`). Rerunning a recipe with the same name continues
its MLflow run instead of opening a new one.
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


def resolve_tracking_uri(configured: str | None, storage: str) -> str:
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if is_uri(storage):
        from raykd.errors import ConfigError

        raise ConfigError("tracking.tracking_uri", (
            f"storage {storage!r} is a URI, and MLflow's run store cannot live there; set "
            "MLFLOW_TRACKING_URI (or tracking.tracking_uri) to an MLflow server or database "
            "every submission reaches (artefacts still go to <storage>/mlartifacts), or "
            "tracking.enabled=false"))
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
                 artifact_root: str | None = None, afresh: bool = False):
        """The MLflow run of `run_name`: the one a previous attempt left (resumed), or with
        `afresh` a new one, the previous attempt's runs renamed `<name>~<run id>`."""
        self.run_name, self.enabled, self.tracking_uri = run_name, enabled, tracking_uri
        self.run_id: str | None = None
        self._client = None
        if not enabled:
            return
        from mlflow.tracking import MlflowClient

        self._client = MlflowClient(tracking_uri)
        found = self._client.get_experiment_by_name(experiment)
        if found is not None:
            self.experiment_id = found.experiment_id
        else:
            location = (artifact_root if not artifact_root or is_uri(artifact_root)
                        else Path(artifact_root).resolve().as_uri())
            self.experiment_id = self._client.create_experiment(experiment, location)
        if afresh:
            self._retire(run_name)
        previous = self._find(f"tags.`{RUN_TAG}` = '{run_name}' and tags.`{STAGE_TAG}` = ''")
        if previous:
            self.run_id = previous
            self._client.update_run(self.run_id, status="RUNNING")
            log.info("continuing MLflow run %s (%s)", self.run_id, run_name)
        else:
            run = self._client.create_run(self.experiment_id, run_name=run_name,
                                          tags={RUN_TAG: run_name, STAGE_TAG: ""})
            self.run_id = run.info.run_id
            log.info("MLflow run %s at %s", self.run_id, tracking_uri)

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

    def metric_history(self, key: str, run_id: str | None = None) -> list[tuple[int, float]]:
        if not self.enabled:
            return []
        history = self._client.get_metric_history(run_id or self.run_id, key)
        return sorted((m.step, m.value) for m in history)

    def finish(self, status: str = "FINISHED") -> None:
        if self.enabled and self.run_id:
            self._client.set_terminated(self.run_id, status=status)


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
