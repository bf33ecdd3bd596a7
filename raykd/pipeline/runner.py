"""The stage driver: runs any recipe stage by stage and resumes at the first unfinished stage.

A stage is its registered steps (`pipeline/steps/`): `prepare_stage` (candidates, filters,
dark examples, teacher scores, expansions: what training reads), then `complete_stage`
(training on Ray Train, evaluation on the dev split). The student of one stage is the input of
the next. A stage that finished leaves `done.json` in its folder; rerunning the same recipe
name skips it, and a stage interrupted mid-training resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from raykd.config import Stage, dump_recipe, recipe_from_dict, without_flat_defaults
from raykd.errors import ConfigError
from raykd.pipeline.context import SHARED_DIRS, RunContext
from raykd.pipeline.files import STUDENT_DIR, eval_dir_name
from raykd.pipeline.kinds import student_kind
from raykd.pipeline.plots import log_loss_curve, log_score_scatter
from raykd.pipeline.steps import complete_stage, prepare_stage
from raykd.pipeline.steps.evaluate import evaluate
from raykd.pipeline.steps.train import train_student
from raykd.students import resolve_model, set_serving_lengths
from raykd.tracking import Tracker, resolve_tracking_uri
from raykd.tracking.lineage import dataset_hashes, git_commit

log = logging.getLogger(__name__)

RECIPE_FILE = "recipe.yaml"
DONE_FILE = "done.json"


@dataclass
class StageResult:
    """What a finished stage leaves behind."""

    name: str
    student: str
    steps: int
    metrics: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    teacher_fingerprint: str | None = None
    candidates: str | None = None


class RecipeRunner(RunContext):
    """Run a recipe; `run()` returns the per-stage results and the final test metrics. The
    runner is its stages' `RunContext` (settings, tracker, scoring service)."""

    @property
    def stages(self) -> list[Stage]:
        """The recipe's stages with repeated ones unrolled into rounds (`name-r1`, `name-r2`...)."""
        out = []
        for stage in self.recipe.stages:
            if stage.repeat == 1:
                out.append(stage)
                continue
            out.extend(stage.model_copy(update={"name": f"{stage.name}-r{r + 1}", "repeat": 1})
                       for r in range(stage.repeat))
        return out

    def finished(self, index: int, stage: Stage) -> StageResult | None:
        done = self.stage_dir(index, stage) / DONE_FILE
        return StageResult(**json.loads(done.read_text())) if done.exists() else None

    def first_unfinished(self) -> int:
        """Index of the first stage without `done.json` (len(stages) when all are done)."""
        for i, stage in enumerate(self.stages):
            if self.finished(i, stage) is None:
                return i
        return len(self.stages)

    # ---- the run ---------------------------------------------------------------------------

    def _sync(self, direction: str) -> None:
        """Mirror <-> URI for the driver-written files and the shared folders (a no-op for
        local storage); the run's Ray Train checkpoints live on the URI itself."""
        if not self.storage.remote:
            return
        t0 = time.perf_counter()
        copy = self.storage.pull if direction == "pull" else self.storage.push
        count = copy(self.recipe.name, exclude=("train",))
        count += sum(copy(rel) for rel in SHARED_DIRS)
        if count:
            self.echo(f"[raykd] storage: {direction}ed {count} file(s) "
                      f"{'from' if direction == 'pull' else 'to'} {self.storage.root} "
                      f"in {time.perf_counter() - t0:.1f}s")

    def _check_same_recipe(self) -> bool:
        """A rerun of a name resumes with the same recipe. With another recipe it is refused,
        unless the run trained nothing (no finished stage, no checkpoint): then its files are
        discarded and it starts afresh (True), so a typo fixed costs no new name. The MLflow
        run of the name is checked the same way when the tracker opens it (another storage,
        the same server)."""
        saved = self.run_dir / RECIPE_FILE
        current = self.recipe.model_dump(mode="json")
        if saved.exists():
            before = yaml.safe_load(saved.read_text())
            try:  # fields added since the run started compare at their defaults
                before = recipe_from_dict(without_flat_defaults(before))
                before = before.model_dump(mode="json")
            except ConfigError:
                pass
            if before == current:
                return False
            diff = _first_difference(before, current) or "<recipe>"
            if self.trained_anything():
                raise ConfigError(diff, (
                    f"run '{self.recipe.name}' in {self.run_dir} was started with a different "
                    f"value here; resume with the same recipe, or choose a new `name`"))
            self.echo(f"[raykd] run '{self.recipe.name}' trained nothing before it stopped; "
                      f"it starts again with this recipe ({diff} changed)")
            for rel in ("stages", "train"):
                self.storage.remove(f"{self.recipe.name}/{rel}")
            dump_recipe(self.recipe, saved)
            return True
        return False  # `run` saves the recipe once MLflow has not refused the name

    def trained_anything(self) -> bool:
        """Whether a stage finished or a training checkpoint exists (on the storage itself)."""
        checkpoints = (f for f in self.storage.files(f"{self.recipe.name}/train")
                       if "/checkpoint_" in f"/{f}")
        return self.first_unfinished() > 0 or next(checkpoints, None) is not None

    def run(self) -> dict:
        self.storage.create_local()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._sync("pull")
        afresh = self._check_same_recipe()
        recipe = self.recipe
        params = recipe.model_dump(mode="json")
        uri = (resolve_tracking_uri(recipe.tracking.tracking_uri, recipe.storage)
               if recipe.tracking.enabled else "")
        self.tracker = Tracker(recipe.name, recipe.tracking.experiment, uri,
                               enabled=recipe.tracking.enabled,
                               artifact_root=self.storage.uri("mlartifacts", query=False),
                               afresh=afresh, params=params)
        if not (self.run_dir / RECIPE_FILE).exists():
            dump_recipe(recipe, self.run_dir / RECIPE_FILE)
        self._sync("push")
        self.tracker.log_params(params)
        dataset_dirs = {s.data.dataset_dir() for s in recipe.stages}
        self.tracker.set_tags({"raykd.git_commit": git_commit(), "raykd.method": recipe.method,
                               **{f"lineage.dataset.{Path(d).name}.{k}": v for d in dataset_dirs
                                  for k, v in dataset_hashes(d).items()}})
        self.tracker.log_artifact(self.run_dir / RECIPE_FILE)
        student = resolve_model(recipe.student.model)
        initial = self.evaluate_initial(student) if recipe.eval_initial else {}
        results: list[StageResult] = []
        start_at = self.first_unfinished()
        if start_at:
            self.echo(f"[raykd] resuming '{recipe.name}' at stage {start_at + 1}/"
                      f"{len(self.stages)}")
        try:
            for i, stage in enumerate(self.stages):
                done = self.finished(i, stage)
                if done is not None:
                    self.echo(f"[raykd] stage {i + 1} '{stage.name}' already done "
                              f"({done.steps} steps); skipping")
                    results.append(done)
                    student = done.student
                    continue
                result = self.run_stage(i, stage, student)
                self._sync("push")
                results.append(result)
                student = result.student
            final = self.finish(student, results, initial)
            self._sync("push")
        except BaseException:
            self.tracker.finish("FAILED")
            raise
        self.tracker.finish()
        return final

    def evaluate_initial(self, student: str) -> dict:
        """The initial student on the last stage's eval split and the test split."""
        last = self.recipe.stages[-1]
        splits = [s for s in dict.fromkeys([last.eval.split, self.recipe.test_split]) if s]
        out = {}
        for split in splits:
            metrics = self.evaluate(student, last, split, self.recipe.student.options()).metrics
            out[split] = metrics
            self.tracker.log_metrics(metrics, prefix=f"initial/{split}/")
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            self.echo(f"[raykd] before training, {split}: {shown}")
        return out

    def finish(self, student: str, results: list[StageResult], initial: dict) -> dict:
        """Save the final student, log it to MLflow (a bi-encoder as an MLflow model), evaluate
        it on the test split, write `results.json` (the stages, the test metrics, with
        `eval_initial` the metrics before training, and the student's MLflow model URI)."""
        recipe = self.recipe
        final_dir = self.run_dir / STUDENT_DIR
        if final_dir.exists():
            shutil.rmtree(final_dir)
        shutil.copytree(student, final_dir)
        set_serving_lengths(final_dir, **recipe.stages[-1].eval.student_options())
        model_uri = None
        if student_kind(recipe).bi_encoder:  # a sentence-transformers folder: an MLflow model
            trust = recipe.student.options().get("trust_remote_code", False)
            if self.tracker.log_student(final_dir, STUDENT_DIR, trust_remote_code=trust):
                model_uri = f"runs:/{self.tracker.run_id}/{STUDENT_DIR}"
        else:  # token vectors, no sentence-transformers model: the folder as files
            self.tracker.log_artifact(final_dir, STUDENT_DIR)
        test_metrics = {}
        if recipe.test_split:
            last = recipe.stages[-1]
            test = self.evaluate(str(final_dir), last, recipe.test_split)
            test.save(self.run_dir / eval_dir_name(recipe.test_split))  # per-query runs: paired stats
            test_metrics = test.metrics
            self.tracker.log_metrics(test_metrics, prefix=f"{recipe.test_split}/")
        log_loss_curve(self, [r.name for r in results])
        if self.score_scatter:
            log_score_scatter(self, self.stages, str(final_dir))
        summary = dict(recipe=recipe.name, student=str(final_dir),
                       stages=[asdict(r) for r in results], test=test_metrics,
                       initial=initial, mlflow_model=model_uri)
        (self.run_dir / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    # ---- one stage -------------------------------------------------------------------------

    def run_stage(self, index: int, stage: Stage, student_in: str) -> StageResult:
        self.echo(f"[raykd] stage {index + 1}/{len(self.stages)} '{stage.name}': "
                  f"loss={stage.loss.name} teacher={stage.teacher.kind if stage.teacher else None}")
        with self.tracker.stage(stage.name) as run_id:
            self.tracker.log_params(stage.model_dump(mode="json"), run_id)
            state = prepare_stage(self, index, stage, student_in, run_id)
            self._sync("push")  # candidates and scores survive a stop during training
            self.tracker.set_tags({"lineage.candidates": state.candidates,
                                   "lineage.teacher_fingerprint": state.fingerprint or "none",
                                   "lineage.score_cache": str(self.cache_dir),
                                   "lineage.student_in": student_in}, run_id)
            state = complete_stage(self, state)
            self.tracker.log_metrics({f"seconds_{k}": v for k, v in state.seconds.items()},
                                     run_id=run_id)
            result = StageResult(stage.name, state.student_out, state.steps, state.metrics,
                                 state.seconds, state.fingerprint, state.candidates)
            (state.out / DONE_FILE).write_text(json.dumps(asdict(result), indent=2) + "\n")
        shown = ", ".join(f"{k}={v:.4f}" for k, v in state.metrics.items())
        self.echo(f"[raykd] stage '{stage.name}' done in {sum(state.seconds.values()):.0f}s, "
                  f"{state.steps} steps; {stage.eval.split or ''} {shown}")
        return result

    def train(self, index: int, stage: Stage, student_in: str, train_path: str, out: Path,
              run_id: str | None, extra: dict | None = None) -> tuple[str, int]:
        """Only the train step (e.g. a benchmark over ready-made scored groups)."""
        return train_student(self, index, stage, student_in, train_path, out, run_id, extra)

    def evaluate(self, student: str, stage: Stage, split: str, options: dict | None = None):
        """Full retrieval with `student` by the recipe's student kind (`pipeline/kinds.py`)."""
        return evaluate(self, student, stage, split, options)


def _first_difference(a, b, prefix: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            found = _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            found = _first_difference(x, y, f"{prefix}{i}.")
            if found:
                return found
        return None
    return None if a == b else prefix.rstrip(".")
