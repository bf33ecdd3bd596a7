"""The sweep driver: plan and validate trials, warm the shared caches, run Tune, write the best.

    plan = plan_sweep(SweepOptions(recipe="raykd/recipes/ckl.yaml", name="ckl-t", dims=dims))
    result = run_sweep(plan)          # needs Ray (raykd.runtime.init_ray)

1. Plan: grid and random trials are drawn here (seeded) and every one is validated as a
   recipe; for Optuna each dimension's bounding values are. A bad field fails naming it,
   before any work starts.
2. Warm-up: stage 0 is prepared (`raykd.pipeline.steps.prepare_stage`: candidates, dark
   examples, teacher scores, expansions) once per distinct stage-0 setting, into the storage's
   shared `candidates/` and `score_cache/` (trials use the same storage, so they only read
   them); the dev-probe candidates likewise.
3. Tune: one trial per config, each the same `RecipeRunner` (Ray Train inside Tune), ASHA on the
   dev probe, `max_concurrent` trials at a time, every trial's workers sized by `trial_cpus`.
4. Results: `<storage>/sweeps/<name>/trials.json` (config, status, probe values, teacher pairs
   scored/cached), `best_recipe.yaml` (the base recipe plus the best values: run it with
   `raykd run <method> --recipe`) and one MLflow parent run with a child run per trial.
   The best config is the completed one with the highest final probe (`select="probe"`), or
   with the highest full dev retrieval of its last stage (`select="dev"`: every trial that
   ASHA lets finish also runs the recipe's dev evaluation). With `seeds`, every config runs
   once per seed (every field of `raykd.config.SEEDED_FIELDS`) and is ranked by its mean over
   them: one seed's lead can be noise (BENCHMARKS.md, the ADAM sweep rerun).
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from raykd.config import SEEDED_FIELDS, Recipe, dump_recipe, load_recipe, spec_key
from raykd.errors import ConfigError
from raykd.tune.space import (
    Dimension,
    as_overrides,
    corner_trials,
    grid_trials,
    random_trials,
)
from raykd.tune.trial import SWEEP_TAG, SweepContext, read_trial, run_trial, trial_name

log = logging.getLogger(__name__)

BEST_RECIPE = "best_recipe.yaml"


class SweepOptions(BaseModel):
    """A sweep: the base recipe, the space, the search, the scheduler and the resources.
    Validated on construction: a bad value raises `ConfigError` naming its field."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True,
                              validate_assignment=True)

    recipe: str
    name: str = Field(min_length=1)
    dims: list[Dimension]
    search: Literal["grid", "random", "optuna"] = "grid"
    num_samples: int | None = Field(None, ge=1)  # random / optuna trials (8); grid: repeats (1)
    seed: int = 0  # random search's draws, optuna's sampler
    # every config at each of these seeds (`raykd.config.SEEDED_FIELDS`), ranked by its mean
    seeds: list[int] | None = Field(None, min_length=1)
    overrides: list[str] = Field(default_factory=list)  # trials and the best recipe
    trial_overrides: list[str] = Field(default_factory=list)  # trials only (e.g. budgets)
    trial_cpus: float = Field(1.0, gt=0)  # per training worker
    trial_workers: int = Field(1, ge=1)
    teacher_concurrency: int = Field(1, ge=1)
    max_concurrent: int = Field(1, ge=1)
    measure: str = "nDCG@10"
    probe_every: int = Field(10, ge=1)  # optimiser steps between dev probes
    probe_depth: int = Field(20, ge=1)
    probe_source: Literal["bm25", "union"] = "bm25"
    probe_queries: int | None = Field(50, ge=1)
    grace_period: int = Field(1, ge=1)  # probes before ASHA may stop a trial
    reduction_factor: int = Field(2, ge=2)
    full_eval: bool = False  # also the recipe's full-retrieval eval at each stage end
    # what picks the best trial: its last probe, or its last stage's full dev retrieval (the
    # probe ranks finished students as full dev does with Spearman 0.89 at 50 x 20: it prunes
    # well and can tie at the top; BENCHMARKS.md)
    select: Literal["probe", "dev"] = "probe"

    def __init__(self, **values):
        try:
            super().__init__(**values)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "<root>"
            raise ConfigError(where, f"{first['msg']}, got {first.get('input')!r}") from None
        self._check_seeds()

    @model_validator(mode="after")
    def _default_samples(self) -> SweepOptions:
        if self.num_samples is None:
            object.__setattr__(self, "num_samples", 1 if self.search == "grid" else 8)
        return self

    def _check_seeds(self) -> None:
        if not self.seeds:
            return
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("seeds", f"each seed once, got {self.seeds}")
        if self.search == "optuna":
            raise ConfigError("seeds", "optuna samples one config per trial; use grid or "
                                       "random search to run each config at several seeds")
        varied = [d.field for d in self.dims if d.field in SEEDED_FIELDS]
        if varied:
            raise ConfigError("seeds", f"the space already varies {varied[0]}; give one or "
                                       "the other")

    def resource_overrides(self) -> list[str]:
        return [f"train.cpus_per_worker={self.trial_cpus}",
                f"train.num_workers={self.trial_workers}",
                f"teacher_concurrency={self.teacher_concurrency}", "test_split=null",
                *([] if self.full_eval or self.select == "dev" else ["eval.split=null"])]

    @property
    def selection_metric(self) -> str:
        """The trials.json column the best trial is chosen by."""
        return f"{self.select}/{self.measure}"

    def trial_base(self) -> list[str]:
        """Every trial's overrides before its own values."""
        return [*self.overrides, *self.trial_overrides, *self.resource_overrides()]


@dataclass
class SweepPlan:
    options: SweepOptions
    base: Recipe  # the base recipe with the sweep's overrides (what the best recipe builds on)
    trials: list[dict]  # planned values (grid / random); bounding values for optuna

    @property
    def adaptive(self) -> bool:
        return self.options.search == "optuna"

    @property
    def sweep_dir(self) -> Path:
        return Path(self.base.storage).resolve() / "sweeps" / self.options.name

    def describe(self) -> str:
        o = self.options
        lines = [f"sweep '{o.name}' over {o.recipe}: {o.search} search, "
                 f"{len(self.trials) if not self.adaptive else o.num_samples} trial(s), "
                 f"{o.max_concurrent} at a time, {o.trial_workers} worker(s) x {o.trial_cpus} "
                 f"CPU per trial, teacher pool {o.teacher_concurrency}",
                 f"metric: probe/{o.measure} (re-ranking {o.probe_source} top-{o.probe_depth} "
                 f"of {o.probe_queries or 'all'} dev queries) every {o.probe_every} steps; "
                 f"ASHA grace {o.grace_period}, reduction {o.reduction_factor}; best by "
                 + ("the last probe" if o.select == "probe" else
                    f"full dev retrieval ({o.measure}) of the trials that finish"),
                 "space: " + ", ".join(f"{d.field}={d.describe()}" for d in o.dims),
                 "trial overrides: " + " ".join(o.trial_base())]
        if o.seeds:
            lines.insert(2, f"seeds: {', '.join(map(str, o.seeds))}: each config at every "
                            f"seed, the best by its mean over them")
        if self.adaptive:
            lines.append("optuna samples adaptively; validated bounding values:")
        lines += [f"  {i:>3}  " + " ".join(as_overrides(v)) for i, v in enumerate(self.trials)]
        return "\n".join(lines)


def _validate(options: SweepOptions, values: dict, label: str) -> Recipe:
    try:
        return load_recipe(options.recipe, [*options.trial_base(), *as_overrides(values)])
    except ConfigError as err:
        raise ConfigError(err.field, f"{err.message} (trial {label}: "
                                     f"{' '.join(as_overrides(values))})") from None


def plan_sweep(options: SweepOptions) -> SweepPlan:
    """Draw (grid/random) or bound (optuna) the trials and validate each one as a recipe."""
    if options.search == "optuna":
        try:
            import optuna  # noqa: F401
        except ImportError:
            raise ConfigError("search", "optuna is not installed: pip install optuna (or "
                                        "use --search grid/random)") from None
    base = load_recipe(options.recipe, options.overrides)
    if options.search == "grid":
        trials = grid_trials(options.dims, options.num_samples)
    elif options.search == "random":
        trials = random_trials(options.dims, options.num_samples, options.seed)
    else:
        trials = corner_trials(options.dims)
    if options.seeds:  # each config at every seed, seeds innermost: t00-t02 are config 0
        trials = [{**values, **dict.fromkeys(SEEDED_FIELDS, seed)} for values in trials
                  for seed in options.seeds]
    for i, values in enumerate(trials):
        _validate(options, values, str(i))
    return SweepPlan(options, base, trials)


# ------------------------------------------------------------------ warm-up


def warm_up(plan: SweepPlan, echo: Callable[[str], None] = print) -> dict:
    """Stage 0 prepared once per distinct stage-0 setting (what training reads: candidates,
    teacher scores...), and the dev probe's candidates, into the storage shared by every trial.
    Returns what it did."""
    from raykd.pipeline.context import RunContext
    from raykd.pipeline.steps import prepare_stage
    from raykd.students import resolve_model
    from raykd.teachers.base import stable_hash
    from raykd.train.probe import ProbeSpec, write_probe_groups
    from raykd.train.trainer import plan_steps

    o = plan.options
    done: dict[str, dict] = {}
    for values in plan.trials:
        recipe = _validate(o, values, "warm-up")
        stage = recipe.stages[0]
        key = stable_hash({"student": spec_key(recipe.student), "loss": stage.loss.name,
                           **stage.model_dump(mode="json", include={"data", "dark"}),
                           "teacher": spec_key(stage.teacher) if stage.teacher else None})
        if key in done:
            continue
        # The trials' own first step, untracked: they find its candidates, scores (and
        # expansions) cached in the shared storage.
        context = RunContext(recipe.model_copy(update={"name": f"{o.name}-warmup-{key[:8]}"}),
                             echo=echo)
        state = prepare_stage(context, 0, stage, resolve_model(recipe.student.model))
        groups = _count_groups(state.train_path)
        done[key] = {"candidates": state.candidates, "scored": state.train_path,
                     "fingerprint": state.fingerprint, "groups": groups,
                     "steps": plan_steps(groups, stage)[1], "scoring": context.scoring,
                     "cache": str(context.cache_dir)}
    last = plan.base.stages[-1]
    storage = Path(plan.base.storage).resolve()
    path, qrels = write_probe_groups(
        str(last.data.dataset_dir()), last.eval.split or "dev", storage / "candidates" / "probe",
        depth=o.probe_depth, source=o.probe_source, max_queries=o.probe_queries,
        seed=last.data.seed, model=resolve_model(plan.base.student.model),
        embedding_cache=str(storage / "embedding_cache"), concurrency=o.teacher_concurrency)
    probe = ProbeSpec(path, qrels, o.probe_every, [o.measure])
    return {"stage0": done, "probe": probe.to_dict()}


def _count_groups(path: str) -> int:
    import pyarrow.parquet as pq

    files = sorted(Path(path).glob("*.parquet")) if Path(path).is_dir() else [Path(path)]
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def cache_stats(warm: dict) -> dict[str, dict]:
    """Parts and distinct pairs of every teacher fingerprint the warm-up used."""
    from raykd.teachers.cache import open_cache

    out = {}
    for item in warm["stage0"].values():
        if item["fingerprint"]:
            store = open_cache(item["cache"], item["fingerprint"])
            if store is not None:
                out[item["fingerprint"]] = store.stats()
    return out


# ------------------------------------------------------------------ the sweep


def _max_probes(plan: SweepPlan, warm: dict) -> int:
    steps = max((item["steps"] for item in warm["stage0"].values()), default=1)
    stages = sum(s.repeat for s in plan.base.stages)
    return max(1, math.ceil(steps / plan.options.probe_every)) * stages


def _parent_run(plan: SweepPlan):
    from raykd.tracking import Tracker, resolve_tracking_uri

    base = plan.base
    if not base.tracking.enabled:
        return None
    uri = resolve_tracking_uri(base.tracking.tracking_uri, base.storage)
    tracker = Tracker(f"sweep:{plan.options.name}", base.tracking.experiment, uri,
                      artifact_root=str(Path(base.storage) / "mlartifacts"))
    tracker.set_tags({SWEEP_TAG: plan.options.name, "raykd.kind": "sweep"})
    o = plan.options
    tracker.log_params({"sweep": {"recipe": o.recipe, "search": o.search,
                                  "num_samples": o.num_samples, "seed": o.seed,
                                  "metric": f"probe/{o.measure}",
                                  "space": {d.field: d.describe() for d in o.dims},
                                  "trial_overrides": " ".join(o.trial_base()),
                                  "grace_period": o.grace_period,
                                  "reduction_factor": o.reduction_factor,
                                  "max_concurrent": o.max_concurrent,
                                  "trial_cpus": o.trial_cpus}})
    return tracker


def run_sweep(plan: SweepPlan, echo: Callable[[str], None] = print) -> dict:
    """Warm up, run every trial under ASHA, write trials.json and the best recipe."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    o = plan.options
    sweep_dir = plan.sweep_dir
    sweep_dir.mkdir(parents=True, exist_ok=True)
    echo("[raykd] " + plan.describe().replace("\n", "\n[raykd] "))
    warm = warm_up(plan, echo)
    before = cache_stats(warm)
    metric = f"probe/{o.measure}"
    parent = _parent_run(plan)
    ctx = SweepContext(
        sweep=o.name, recipe_path=str(Path(o.recipe).resolve()), overrides=o.trial_base(),
        metric=metric, fields=[d.field for d in o.dims],
        trials=[] if plan.adaptive else plan.trials, probe=warm["probe"],
        tracking_uri=parent.tracking_uri if parent else None,
        experiment_id=parent.experiment_id if parent else None,
        parent_run_id=parent.run_id if parent else None)
    max_t = _max_probes(plan, warm)
    # A trial that survives its last probe runs to its own end (the steps after that probe,
    # its dev evaluation, its results): ASHA's default would stop it at max_t.
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max_t,
                              grace_period=min(o.grace_period, max_t),
                              reduction_factor=o.reduction_factor, stop_last_trials=False)
    if plan.adaptive:
        from ray.tune.search.optuna import OptunaSearch

        space = {f"p{i}": d.tune_domain() for i, d in enumerate(o.dims)}
        search_alg, num_samples = OptunaSearch(seed=o.seed), o.num_samples
    else:
        space = {"trial": tune.grid_search(list(range(len(plan.trials))))}
        search_alg, num_samples = None, 1
    # The trial function only drives (a token 0.01 CPU: Tune needs a non-empty bundle); its
    # Ray Train workers reserve the CPUs (trial_cpus each);
    # `max_concurrent` bounds how many trials hold workers at once.
    trainable = tune.with_resources(tune.with_parameters(run_trial, context=asdict(ctx)),
                                    {"CPU": 0.01})
    tuner = tune.Tuner(
        trainable, param_space=space,
        tune_config=tune.TuneConfig(metric=metric, mode="max", scheduler=scheduler,
                                    search_alg=search_alg, num_samples=num_samples,
                                    max_concurrent_trials=o.max_concurrent),
        run_config=tune.RunConfig(name=o.name, storage_path=str(sweep_dir / "tune"),
                                  verbose=1))
    try:
        grid = tuner.fit()
        rows = _trial_rows(plan, grid, ctx, metric, max_t)
        summary = _finish(plan, rows, warm, before, metric, max_t, parent)
    except BaseException:
        if parent is not None:
            parent.finish("FAILED")
        raise
    if parent is not None:
        parent.finish()
    return summary


def _trial_rows(plan: SweepPlan, grid, ctx: SweepContext, metric: str, max_t: int
                ) -> list[dict]:
    rows = []
    storage = Path(plan.base.storage).resolve()
    for result in grid:
        label, values = ctx.values(result.config) if "trial" in result.config else (
            result.metrics.get("trial_id", "?"),
            {f: result.config[f"p{i}"] for i, f in enumerate(ctx.fields)})
        name = trial_name(ctx.sweep, label)
        record = read_trial(storage / name)
        history = result.metrics_dataframe
        values_seen = [] if history is None or metric not in history else [
            float(v) for v in history[metric].dropna()]
        iterations = int(result.metrics.get("training_iteration", 0) or 0)
        # 'completed': the run finished (its trial.json), or every probe was reported
        status = ("error" if result.error is not None else
                  "completed" if iterations >= max_t or (record and record.get("completed"))
                  else "stopped")
        rows.append({"trial": name, "values": values, "status": status,
                     "iterations": iterations,
                     "step": result.metrics.get("step"), metric: result.metrics.get(metric),
                     f"dev/{plan.options.measure}": dev_measure(storage / name,
                                                                plan.options.measure),
                     "history": values_seen,
                     "pairs_scored": result.metrics.get("teacher/pairs_scored"),
                     "pairs_cached": result.metrics.get("teacher/pairs_cached"),
                     "error": str(result.error)[:500] if result.error is not None else None})
    return sorted(rows, key=lambda r: r["trial"])


def dev_measure(run_dir: Path, measure: str) -> float | None:
    """The last stage's full-retrieval dev `measure` from a run's results.json (None when the
    run did not finish or did not evaluate)."""
    path = Path(run_dir, "results.json")
    if not path.exists():
        return None
    stages = json.loads(path.read_text()).get("stages") or [{}]
    value = (stages[-1].get("metrics") or {}).get(measure)
    return None if value is None else float(value)


def group_configs(rows: list[dict], keys: list[str]) -> list[dict]:
    """The trials grouped by config (their values apart from the seeds), in trial order: each
    with its trials, a status (completed when all are, error when any is, else stopped) and
    the mean and sd of every key over its trials (None unless every trial has a value)."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        config = {k: v for k, v in row["values"].items() if k not in SEEDED_FIELDS}
        groups.setdefault(json.dumps(config, sort_keys=True, default=str), []).append(row)
    out = []
    for members in groups.values():
        statuses = {r["status"] for r in members}
        entry = {"values": {k: v for k, v in members[0]["values"].items()
                            if k not in SEEDED_FIELDS},
                 "trials": [r["trial"] for r in members],
                 "status": "error" if "error" in statuses else
                           "completed" if statuses == {"completed"} else "stopped"}
        for key in keys:
            got = [r.get(key) for r in members]
            complete = None not in got
            entry[key] = statistics.fmean(got) if complete else None
            entry[f"{key} sd"] = statistics.stdev(got) if complete and len(got) > 1 else None
        out.append(entry)
    return out


def best_config(configs: list[dict], key: str) -> dict | None:
    """The config with the highest mean `key` among completed ones (else among those not in
    error); a config without a value for `key` on every trial is never chosen."""
    ranked = [c for c in configs if c["status"] == "completed" and c.get(key) is not None] or [
        c for c in configs if c["status"] != "error" and c.get(key) is not None]
    return max(ranked, key=lambda c: c[key]) if ranked else None


def _finish(plan: SweepPlan, rows: list[dict], warm: dict, before: dict, metric: str,
            max_t: int, parent) -> dict:
    o = plan.options
    summary = {"sweep": o.name, "search": o.search, "metric": metric,
               "selected_by": o.selection_metric, "max_probes": max_t,
               "trials": rows, "warm_up": {k: {**v, "scoring": v["scoring"]}
                                           for k, v in warm["stage0"].items()},
               "cache_before": before, "cache_after": cache_stats(warm), "best": None}
    summary["configs"] = group_configs(rows, [metric, f"dev/{o.measure}"])
    best = best_config(summary["configs"], o.selection_metric)
    if best is not None:
        recipe = load_recipe(o.recipe, [*o.overrides, *as_overrides(best["values"]),
                                        f"name={o.name}-best"])
        path = plan.sweep_dir / BEST_RECIPE
        dump_recipe(recipe, path)
        summary["best"] = {**best, "recipe": str(path)}
    out = plan.sweep_dir / "trials.json"
    out.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if parent is not None:
        _log_sweep(parent, summary, out, metric, f"dev/{o.measure}")
    return summary


def _log_sweep(parent, summary: dict, trials_file: Path, metric: str, dev: str) -> None:
    """Best values and counts on the parent run; each trial run's status, final probe and
    full dev retrieval (where it ran)."""
    best = summary["best"]
    counts = {s: sum(r["status"] == s for r in summary["trials"])
              for s in ("completed", "stopped", "error")}
    parent.log_metrics({f"trials_{k}": v for k, v in counts.items()})
    if best is not None:
        parent.log_metrics({f"best/{k}": best[k] for k in (metric, dev)
                            if best.get(k) is not None})
        parent.set_tags({"sweep.best_trials": " ".join(best["trials"]),
                         **{f"sweep.best.{k}": v for k, v in best["values"].items()}})
        parent.log_artifact(best["recipe"])
    parent.log_artifact(trials_file)
    client = parent.client
    for row in summary["trials"]:
        runs = client.search_runs([parent.experiment_id],
                                  f"tags.`raykd.run` = '{row['trial']}' and "
                                  f"tags.`raykd.stage` = ''", max_results=1)
        if not runs:
            continue
        run_id = runs[0].info.run_id
        client.set_tag(run_id, "sweep.status", row["status"])
        final = {f"final/{k}": row[k] for k in (metric, dev) if row.get(k) is not None}
        if final:
            parent.log_metrics(final, run_id=run_id)
        client.set_terminated(run_id, status={"completed": "FINISHED", "stopped": "KILLED"}.get(
            row["status"], "FAILED"))
