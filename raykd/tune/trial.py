"""One sweep trial: the recipe with the trial's values, run by the same driver inside Tune.

Ray Train v2 inside a Tune function trainable: the trial builds its `RecipeRunner`, whose
`TorchTrainer` gets a `ProbeReportCallback`; rank 0's dev-probe results travel from the
Train controller to Tune (Ray's `TuneReportCallback` queue), where ASHA reads them. The trial's
MLflow run is a child of the sweep's run (tag `mlflow.parentRunId`); the driver continues it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray
from ray.tune.integration.ray_train import TuneReportCallback

from raykd.config import load_recipe
from raykd.tracking.mlflow_tracking import RUN_TAG, STAGE_TAG, numeric_metrics
from raykd.tune.space import as_overrides

log = logging.getLogger(__name__)

TRIAL_FILE = "trial.json"
SWEEP_TAG = "raykd.sweep"


@dataclass
class SweepContext:
    """What every trial needs (plain data: Tune ships it to the trial actors)."""

    sweep: str
    recipe_path: str
    overrides: list[str]  # the sweep's trial overrides (budget, resources, no test split)
    metric: str
    fields: list[str]  # adaptive search: param p<i> is fields[i]
    trials: list[dict] = field(default_factory=list)  # planned search: trial i's values
    probe: dict = field(default_factory=dict)
    tracking_uri: str | None = None
    experiment_id: str | None = None
    parent_run_id: str | None = None

    def values(self, config: dict) -> tuple[str, dict]:
        """(trial label, {field: value}) of a Tune config."""
        if "trial" in config:
            return f"t{int(config['trial']):02d}", dict(self.trials[int(config["trial"])])
        from ray import tune

        label = tune.get_context().get_trial_id()
        return label, {f: config[f"p{i}"] for i, f in enumerate(self.fields)}


class ProbeReportCallback(TuneReportCallback):
    """Forward the reports that carry the probe metric to Tune, and log them to the trial's
    MLflow run (other reports, e.g. plain loss logging, stay in the stage run)."""

    def __init__(self, metric: str, tracking_uri: str | None = None, run_id: str | None = None):
        super().__init__()
        self.metric, self.tracking_uri, self.run_id = metric, tracking_uri, run_id
        self.scoring: list[dict] = []  # the driver's scoring reports, filled before training
        self._client = None

    def __getstate__(self):
        return {**self.__dict__, "_client": None}

    def after_report(self, run_context, metrics, checkpoint) -> None:
        if not metrics or self.metric not in metrics[0]:
            return
        counters = {f"teacher/{k}": sum(r[k] for r in self.scoring)
                    for k in ("pairs_scored", "pairs_cached")}
        # MLflow first: once Tune has the report, ASHA may stop the trial at once.
        self._log_probe(metrics[0])
        super().after_report(run_context, [{**metrics[0], **counters}], None)

    def _log_probe(self, metrics: dict) -> None:
        if self.run_id is None:
            return
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        step, stamp = int(metrics.get("step", 0)), int(time.time() * 1000)
        value = numeric_metrics({self.metric: metrics[self.metric]})
        try:
            self._client.log_batch(self.run_id, metrics=[Metric(k, v, stamp, step)
                                                         for k, v in value.items()])
        except Exception as err:  # tracking must never kill a trial
            log.warning("could not log the probe to MLflow: %s", err)


def trial_name(sweep: str, label: str) -> str:
    return f"{sweep}-{label}"


def _trial_run(ctx: SweepContext, name: str, values: dict) -> str | None:
    """The trial's MLflow run, nested under the sweep's (found again on a rerun)."""
    if ctx.tracking_uri is None:
        return None
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(ctx.tracking_uri)
    query = f"tags.`{RUN_TAG}` = '{name}' and tags.`{STAGE_TAG}` = ''"
    found = client.search_runs([ctx.experiment_id], query, max_results=1)
    if found:
        return found[0].info.run_id
    run = client.create_run(ctx.experiment_id, run_name=name, tags={
        RUN_TAG: name, STAGE_TAG: "", SWEEP_TAG: ctx.sweep,
        "mlflow.parentRunId": ctx.parent_run_id})
    client.log_batch(run.info.run_id, params=[Param(f"trial.{k}", str(v))
                                              for k, v in values.items()])
    return run.info.run_id


def run_trial(config: dict, context: dict) -> None:
    """The Tune trainable: validate, then run the recipe outside the trial's placement group.

    Tune schedules a trial with `placement_group_capture_child_tasks=True`, so every plain
    `.remote()` of the driver (fingerprints, mining, scoring actors) would have to fit the
    trial's token bundle. The recipe runs in a task with the DEFAULT strategy instead; its
    Ray Train workers and actors reserve their own resources. The probe callback is made here,
    in the Tune session, and travels with the task."""
    ctx = SweepContext(**context)
    label, values = ctx.values(config)
    name = trial_name(ctx.sweep, label)
    recipe = load_recipe(ctx.recipe_path, [*ctx.overrides, *as_overrides(values),
                                           f"name={name}"])
    run_id = _trial_run(ctx, name, values)
    callback = ProbeReportCallback(ctx.metric, ctx.tracking_uri, run_id)
    task = _run_recipe.options(scheduling_strategy="DEFAULT")
    ray.get(task.remote(recipe.model_dump(mode="json"), values, callback, ctx.probe))


def _remote_run_recipe(raw: dict, values: dict, callback, probe: dict) -> None:
    """Run the trial's recipe with the probe; leave `trial.json` in its run folder."""
    from raykd.config import recipe_from_dict
    from raykd.pipeline.runner import RecipeRunner
    from raykd.runtime import offline_models

    offline_models()
    recipe = recipe_from_dict(raw)
    # no teacher-vs-student plot: it would score a dev sample with the teacher in the trial
    runner = RecipeRunner(recipe, train_callbacks=[callback],
                          worker_extra={"dev_probe": probe} if probe else None,
                          score_scatter=False)
    # The same list: the trainer (and this callback with it) is pickled after teacher scoring,
    # so every report carries this trial's scoring counters to Tune.
    callback.scoring = runner.scoring
    start = time.perf_counter()
    summary = runner.run()
    record = {"name": recipe.name, "values": values, "completed": True,
              "steps": [s["steps"] for s in summary["stages"]],
              "pairs_scored": sum(r["pairs_scored"] for r in runner.scoring),
              "pairs_cached": sum(r["pairs_cached"] for r in runner.scoring),
              "seconds": time.perf_counter() - start}
    Path(recipe.run_dir(), TRIAL_FILE).write_text(json.dumps(record, indent=2) + "\n")


_run_recipe = ray.remote(num_cpus=0, max_retries=0)(_remote_run_recipe)


def read_trial(run_dir: str | Path) -> dict | None:
    path = Path(run_dir, TRIAL_FILE)
    return json.loads(path.read_text()) if path.exists() else None
