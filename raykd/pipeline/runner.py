"""The stage driver: runs any recipe stage by stage and resumes at the first unfinished stage.

For each stage: candidates (given, or mined and cached), teacher scores (the Ray Data scoring
stage with its cache, for list losses), training on Ray Train, export of the student,
evaluation on the dev split. The student of one stage is the input of the next. A stage that
finished leaves `done.json` in its folder; rerunning the same recipe name skips it, and a stage
interrupted mid-training resumes from its last checkpoint.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

from raykd.config import Recipe, Stage, dump_recipe, recipe_from_dict
from raykd.data.beir import BeirDataset
from raykd.errors import ConfigError
from raykd.losses import build_loss
from raykd.storage import Storage, atomic_path, cached_artifact, is_uri
from raykd.students import resolve_model
from raykd.tracking import StepMetricsCallback, Tracker, resolve_tracking_uri
from raykd.tracking.lineage import dataset_hashes, git_commit
from raykd.train.loop import WorkerConfig, restore_paths
from raykd.train.trainer import make_trainer, plan_steps

log = logging.getLogger(__name__)

RECIPE_FILE = "recipe.yaml"
DONE_FILE = "done.json"
MINING_MARKER = "_mining.yaml"  # written last by every candidate writer
GROUPS_FILE = "groups.parquet"


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


def _key(obj) -> str:
    from raykd.teachers.base import stable_hash

    return stable_hash(obj)


class RecipeRunner:
    """Run a recipe; `run()` returns the per-stage results and the final test metrics."""

    def __init__(self, recipe: Recipe, *, fail_at: tuple[int, int] | None = None,
                 fail_marker: str | None = None, echo=print, train_callbacks=(),
                 worker_extra: dict | None = None):
        """`fail_at=(stage_index, step)` injects one worker failure (tests and chaos runs);
        `train_callbacks` join every stage's Ray Train callbacks and `worker_extra` every
        worker's `WorkerConfig.extra` (e.g. a sweep's Tune reporting and dev probe)."""
        self.recipe = recipe
        # A URI storage: Ray Train, the score cache and MLflow artefacts write to it
        # directly; the driver's own files go to a local mirror synced with it (storage.py).
        self.storage = Storage(recipe.storage)
        self.run_dir = self.storage.local / recipe.name
        self.fail_at, self.fail_marker = fail_at, fail_marker
        self.echo = echo
        cache = recipe.score_cache or self.storage.uri("score_cache")
        self.cache_dir = cache if is_uri(cache) else str(Path(cache).resolve())
        self.embedding_cache = str((self.run_dir.parent / "embedding_cache").resolve())
        self.candidates_root = self.run_dir.parent / "candidates"  # shared by runs
        self.tracker: Tracker | None = None
        self.train_callbacks, self.worker_extra = list(train_callbacks), dict(worker_extra or {})
        self.scoring: list[dict] = []  # every teacher-scoring report of this run

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

    # ---- paths ---------------------------------------------------------------------------

    def stage_dir(self, index: int, stage: Stage) -> Path:
        return self.run_dir / "stages" / f"{index:02d}-{stage.name}"

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
        """Mirror <-> URI for the driver-written files (a no-op for local storage); the
        run's Ray Train checkpoints live on the URI itself."""
        if not self.storage.remote:
            return
        t0 = time.perf_counter()
        copy = self.storage.pull if direction == "pull" else self.storage.push
        count = copy(self.recipe.name, exclude=("train",))
        count += sum(copy(rel) for rel in ("candidates", "collective"))
        if count:
            self.echo(f"[raykd] storage: {direction}ed {count} file(s) "
                      f"{'from' if direction == 'pull' else 'to'} {self.storage.root} "
                      f"in {time.perf_counter() - t0:.1f}s")

    def _check_same_recipe(self) -> None:
        saved = self.run_dir / RECIPE_FILE
        current = self.recipe.model_dump(mode="json")
        if saved.exists():
            before = yaml.safe_load(saved.read_text())
            try:  # fields added since the run started compare at their defaults
                before = recipe_from_dict(before).model_dump(mode="json")
            except ConfigError:
                pass
            if before != current:
                diff = _first_difference(before, current)
                raise ConfigError(diff or "<recipe>", (
                    f"run '{self.recipe.name}' in {self.run_dir} was started with a different "
                    f"value here; resume with the same recipe, or choose a new `name`"))
        else:
            dump_recipe(self.recipe, saved)

    def run(self) -> dict:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._sync("pull")
        self._check_same_recipe()
        self._sync("push")
        recipe = self.recipe
        uri = (resolve_tracking_uri(recipe.tracking.tracking_uri, recipe.storage)
               if recipe.tracking.enabled else "")
        self.tracker = Tracker(recipe.name, recipe.tracking.experiment, uri,
                               enabled=recipe.tracking.enabled,
                               artifact_root=self.storage.uri("mlartifacts", query=False))
        self.tracker.log_params(recipe.model_dump(mode="json"))
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
            final = self.finish(student, results)
            self._sync("push")
            final["initial"] = initial
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

    def finish(self, student: str, results: list[StageResult]) -> dict:
        recipe = self.recipe
        final_dir = self.run_dir / "student"
        if final_dir.exists():
            shutil.rmtree(final_dir)
        shutil.copytree(student, final_dir)
        self.tracker.log_artifact(final_dir, "student")
        test_metrics = {}
        if recipe.test_split:
            last = recipe.stages[-1]
            test = self.evaluate(str(final_dir), last, recipe.test_split)
            test.save(self.run_dir / f"eval-{recipe.test_split}")  # per-query runs: paired stats
            test_metrics = test.metrics
            self.tracker.log_metrics(test_metrics, prefix=f"{recipe.test_split}/")
        self._log_loss_curve(results)
        self._log_score_scatter(str(final_dir))
        summary = {"recipe": recipe.name, "student": str(final_dir),
                   "stages": [asdict(r) for r in results], "test": test_metrics}
        (self.run_dir / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    # ---- one stage -------------------------------------------------------------------------

    def run_stage(self, index: int, stage: Stage, student_in: str) -> StageResult:
        out = self.stage_dir(index, stage)
        out.mkdir(parents=True, exist_ok=True)
        self.echo(f"[raykd] stage {index + 1}/{len(self.stages)} '{stage.name}': "
                  f"loss={stage.loss.name} teacher={stage.teacher.kind if stage.teacher else None}")
        seconds: dict[str, float] = {}
        loss = build_loss(stage.loss.name, **stage.loss.params)
        with self.tracker.stage(stage.name) as run_id:
            self.tracker.log_params(stage.model_dump(mode="json"), run_id)
            t0 = time.perf_counter()
            candidates = self.candidates(stage, student_in)
            if stage.dark.enabled:
                candidates = self.dark_examples(stage, student_in, candidates)
            seconds["candidates"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            train_path, fingerprint = self.teacher_scores(index, stage, loss, candidates, out,
                                                          student_in)
            seconds["teacher"] = time.perf_counter() - t0
            self._sync("push")  # candidates and scores survive a stop during training
            self.tracker.set_tags({"lineage.candidates": candidates,
                                   "lineage.teacher_fingerprint": fingerprint or "none",
                                   "lineage.score_cache": str(self.cache_dir),
                                   "lineage.student_in": student_in}, run_id)
            extra = {}
            if stage.teacher is not None and stage.teacher.kind == "collective":
                t0 = time.perf_counter()
                extra["expansions"] = self.collective_expansions(stage, train_path)
                seconds["teacher"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            student_out, steps = self.train(index, stage, student_in, train_path, out, run_id,
                                            extra)
            seconds["train"] = time.perf_counter() - t0
            metrics = {}
            if stage.eval.split:
                t0 = time.perf_counter()
                evaluated = self.evaluate(student_out, stage, stage.eval.split)
                evaluated.save(out / f"eval-{stage.eval.split}")
                metrics = evaluated.metrics
                seconds["eval"] = time.perf_counter() - t0
                self.tracker.log_metrics(metrics, step=steps, run_id=run_id,
                                         prefix=f"{stage.eval.split}/")
                self.tracker.log_metrics(metrics, step=index,
                                         prefix=f"{stage.eval.split}/stage_")
            self.tracker.log_metrics({f"seconds_{k}": v for k, v in seconds.items()},
                                     run_id=run_id)
            result = StageResult(stage.name, student_out, steps, metrics, seconds, fingerprint,
                                 candidates)
            (out / DONE_FILE).write_text(json.dumps(asdict(result), indent=2) + "\n")
        shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        self.echo(f"[raykd] stage '{stage.name}' done in {sum(seconds.values()):.0f}s, "
                  f"{steps} steps; {stage.eval.split or ''} {shown}")
        return result

    def candidates(self, stage: Stage, student_in: str) -> str:
        """A candidate-group path: the stage's own, or mined once and cached by its settings."""
        data = stage.data
        if data.candidates:
            if not Path(data.candidates).exists():
                raise ConfigError("data.candidates", f"{data.candidates} does not exist")
            return str(Path(data.candidates).resolve())
        if data.negatives_from == "teacher":
            if data.queries != "labelled":
                raise ConfigError(f"stages.{stage.name}.data.queries",
                                  "negatives from a collective teacher's ranking are mined for "
                                  "labelled queries only; use queries=labelled")
            return self.teacher_candidates(stage)
        if data.negatives_from == "student" and self.recipe.student.kind != "bi_encoder":
            raise ConfigError("data.negatives_from", "'student' mines with a bi-encoder "
                                                     "student; use 'teacher' (a collective "
                                                     "teacher) or a bi-encoder source")
        source_model = (student_in if data.negatives_from == "student"
                        else resolve_model(data.negatives_model or self.recipe.student.model))
        parts = []
        if data.queries in ("labelled", "both"):
            parts.append(self.labelled_candidates(stage, source_model))
        if data.queries in ("corpus", "both"):
            parts.append(self.pseudo_candidates(stage, source_model))
        out = parts[0] if len(parts) == 1 else self.joined_candidates(parts)
        if data.query_filter == "confusing":
            return self.confusing_candidates(stage, student_in, out)
        return out

    def labelled_candidates(self, stage: Stage, source_model: str) -> str:
        """The split's labelled queries, their positives and mined negatives (cached)."""
        from raykd.negatives.candidates import mine_from_spec

        data = stage.data

        def mine(out: Path) -> None:
            self.echo(f"[raykd] mining {data.negatives_from} negatives for {data.split} "
                      f"-> {out}")
            mine_from_spec(data, out, model=source_model if data.negatives_from != "bm25"
                           else None, student_options=self._retrieval_options(stage),
                           fmt="parquet", cache_dir=self.embedding_cache)

        out, _ = cached_artifact(self.candidates_root, f"{data.split}-{data.negatives_from}",
                                 {"data": data.labelled_key(), "model": source_model},
                                 mine, marker=MINING_MARKER)
        return str(out)

    def pseudo_candidates(self, stage: Stage, source_model: str) -> str:
        """Pseudo-queries from the corpus with first-stage candidates and no labels (cached by
        the pseudo-query rule and the mining settings)."""
        from raykd.negatives.candidates import mine_pseudo_queries

        data, pseudo = stage.data, stage.data.pseudo
        settings = {k: getattr(data, k) for k in ("negatives_from", "depth", "num_negatives",
                                                  "sampling", "window", "seed")}

        def mine(out: Path) -> None:
            self.echo(f"[raykd] pseudo-queries from {pseudo.count} corpus passages "
                      f"({pseudo.rule}), {data.negatives_from} candidates -> {out}")
            mine_pseudo_queries(
                data.dataset_dir(), out, count=pseudo.count, rule=pseudo.rule,
                pseudo_seed=pseudo.seed, min_words=pseudo.min_words,
                max_words=pseudo.max_words, source=data.negatives_from,
                model=source_model if data.negatives_from != "bm25" else None,
                depth=data.depth, num_negatives=data.num_negatives, sampling=data.sampling,
                window=tuple(data.window), seed=data.seed, fmt="parquet",
                student_options=self._retrieval_options(stage),
                cache_dir=self.embedding_cache, echo=self.echo)

        out, _ = cached_artifact(self.candidates_root, "corpus-pseudo",
                                 {"dataset": str(data.dataset_dir()),
                                  "pseudo": pseudo.model_dump(mode="json"),
                                  "mining": json.loads(json.dumps(settings)),
                                  "model": source_model}, mine, marker=MINING_MARKER)
        return str(out)

    def joined_candidates(self, parts: list[str]) -> str:
        """One candidate folder holding the groups of several (hard links, else copies)."""
        def join(out: Path) -> None:
            out.mkdir(parents=True, exist_ok=True)
            for i, part in enumerate(parts):
                for file in sorted(Path(part).glob("*.parquet")):
                    target = out / f"{i}-{file.name}"
                    if not target.exists():
                        try:
                            target.hardlink_to(file)
                        except OSError:
                            shutil.copy2(file, target)
            with atomic_path(out / MINING_MARKER) as tmp:
                tmp.write_text(yaml.safe_dump({"joined": parts}, sort_keys=False))

        out, _ = cached_artifact(self.candidates_root, "joined", {"parts": parts}, join,
                                 marker=MINING_MARKER)
        return str(out)

    def confusing_candidates(self, stage: Stage, student_in: str, candidates: str) -> str:
        """PROD's data-progressive subset: groups of the queries the teacher gets right (top-1
        positive) and the student ranks 2nd to 15th."""
        from raykd.data.groups import write_groups_parquet
        from raykd.negatives.mining import mine_rankings
        from raykd.negatives.progressive import confusing_queries

        if stage.teacher is None:
            raise ConfigError(f"stages.{stage.name}.data.query_filter",
                              "'confusing' needs the stage's teacher")
        dataset = BeirDataset.from_dir(stage.data.dataset_dir())
        queries, qrels = dataset.queries(stage.data.split), dataset.qrels(stage.data.split)
        student_rankings = mine_rankings(
            "student", dataset.corpus_path, queries, 15, model=student_in,
            student_options=self._retrieval_options(stage), cache_dir=self.embedding_cache)
        scored_dir = Path(candidates + "-teacher-" + _key(stage.teacher.model_dump(mode="json")))
        self._score(stage, candidates, scored_dir)
        groups = {g["qid"]: g for g in _iter_scored(str(scored_dir))}
        teacher = {q: (g["pids"], g["teacher_scores"]) for q, g in groups.items()}
        keep = confusing_queries(student_rankings, teacher, qrels)

        def write(out: Path) -> None:
            rows = ({k: v for k, v in groups[q].items() if k != "teacher_scores"} for q in keep)
            with atomic_path(out / GROUPS_FILE) as tmp:
                write_groups_parquet(tmp, rows)

        out, _ = cached_artifact(self.candidates_root, "confusing",
                                 {"candidates": candidates, "student": student_in, "keep": keep},
                                 write, marker=GROUPS_FILE)
        self.echo(f"[raykd] data-progressive: {len(keep)} confusing queries of the "
                  f"{len(groups)} with candidates ({len(queries)} in the split)")
        if not keep:
            raise RuntimeError(f"stage '{stage.name}': no confusing query left to train on")
        return str(out)

    def dark_examples(self, stage: Stage, student_in: str, candidates: str) -> str:
        """ADAM dark examples appended to every group by a Ray Data CPU stage; cached by
        the dark settings, the candidates and the length budget."""
        from raykd.dark.maker import DarkReport, dark_examples_stage
        from raykd.data.groups import write_groups_parquet
        from raykd.data.ray_datasets import groups_dataset

        max_length = self.recipe.student.passage_max_length

        def make(out: Path) -> None:
            report = DarkReport()
            dataset = dark_examples_stage(groups_dataset(candidates), stage.dark,
                                          tokenizer_path=str(student_in), max_length=max_length,
                                          report=report)
            with atomic_path(out / GROUPS_FILE) as tmp:
                write_groups_parquet(tmp, (_plain_group(row) for row in dataset.iter_rows()))
            self.echo(f"[raykd] dark examples: {report.summary()}")

        out, _ = cached_artifact(self.candidates_root, "dark",
                                 {"dark": stage.dark.model_dump(mode="json"),
                                  "candidates": candidates, "max_length": max_length,
                                  "tokenizer": str(student_in)}, make, marker=GROUPS_FILE)
        return str(out)

    def teacher_candidates(self, stage: Stage) -> str:
        """Candidates whose negatives come from the stage's collective teacher's own ranking
        (CollectiveKD), cached by the data settings and the teacher."""
        from raykd.teachers.collective import teacher_candidates

        data = stage.data
        if stage.teacher is None or stage.teacher.kind != "collective":
            raise ConfigError(f"stages.{stage.name}.data.negatives_from",
                              "'teacher' needs the stage's teacher to be `collective`")

        def mine(out: Path) -> None:
            self.echo(f"[raykd] mining negatives from the teacher's ranking for {data.split} "
                      f"-> {out}")
            report = teacher_candidates(stage.teacher, data, out,
                                        cache_dir=self.embedding_cache,
                                        concurrency=self.recipe.teacher_concurrency,
                                        num_gpus=self.recipe.teacher_num_gpus)
            self.echo(f"[raykd] {report.summary()}")

        out, _ = cached_artifact(
            self.candidates_root, f"{data.split}-teacher",
            {"data": data.labelled_key(),
             "teacher": stage.teacher.model_dump(mode="json", exclude={"batch_size"})},
            mine, marker=MINING_MARKER)
        if data.query_filter == "confusing":
            return self.confusing_candidates(stage, str(out), str(out))
        return str(out)

    def collective_expansions(self, stage: Stage, candidates: str) -> str:
        """CollectiveKD's PRF expansions of the training queries (cached under the storage)."""
        from raykd.teachers.collective import collective_expansions, group_queries

        queries = group_queries(candidates)
        corpus = BeirDataset.from_dir(stage.data.dataset_dir()).corpus_path
        path = collective_expansions(stage.teacher, corpus, queries,
                                     self.run_dir.parent / "collective",
                                     cache_dir=self.embedding_cache,
                                     concurrency=self.recipe.teacher_concurrency,
                                     num_gpus=self.recipe.teacher_num_gpus)
        self.echo(f"[raykd] PRF expansions of {len(queries)} training queries: {path}")
        return str(path)

    def _retrieval_options(self, stage: Stage) -> dict:
        """Student options for retrieving with a student (mining, the confusing-query rule):
        the evaluation's lengths, so that mining, evaluation and a bi-encoder teacher over the
        same model read one stored corpus encoding."""
        if self.recipe.student.kind != "bi_encoder":  # a bi-encoder mines: lengths only
            return stage.eval.student_options()
        opts = self.recipe.student.options()
        opts.pop("shared", None)
        if stage.data.negatives_model:  # another model: the student's truncation is not its
            opts.pop("num_layers", None)
        return {**opts, **stage.eval.student_options()}

    def teacher_scores(self, index: int, stage: Stage, loss, candidates: str, out: Path,
                       student_in: str) -> tuple[str, str | None]:
        """Score the candidates with the stage's teacher (cached) when the loss needs lists
        of teacher scores; in-batch losses score online and contrastive ones need none."""
        needs = getattr(loss, "needs_teacher", False) and not getattr(loss, "in_batch", False)
        if not needs:
            return candidates, None
        if stage.teacher is None:
            raise ConfigError(f"stages.{stage.name}.teacher",
                              f"loss '{stage.loss.name}' needs a teacher")
        from raykd.teachers.diagnostics import format_diagnostics, teacher_diagnostics

        scored = out / "scored"
        report = self._score(stage, candidates, scored)
        temperature = float(stage.loss.params.get("temperature",
                            stage.loss.params.get("teacher_temperature", 1.0)))
        stats = teacher_diagnostics(_iter_scored(scored), temperature=temperature)
        self.echo("[raykd] " + format_diagnostics(stats))
        self.tracker.log_metrics({k: v for k, v in stats.items()
                                  if isinstance(v, (int, float))}, prefix="teacher/")
        self._scale_check(index, student_in, scored)
        return str(scored), report.fingerprint

    def _scale_check(self, index: int, student_in: str, scored: Path) -> None:
        """The student's margins next to the teacher's on a sample of the scored groups."""
        from raykd.students import BiEncoder
        from raykd.teachers.diagnostics import scale_check

        student = BiEncoder.from_pretrained(student_in, **self._stage_student_options(index))
        check = scale_check(student, _iter_scored(str(scored)))
        if not check["groups"]:
            return
        advice = ("" if 0.5 <= check["ratio"] <= 2.0 else
                  "; far from 1: tune the teacher's weights or temperature on dev")
        self.echo(f"[raykd] scale: student margin {check['student_margin']:.3f}, teacher "
                  f"margin {check['teacher_margin']:.3f} (ratio {check['ratio']:.2f}) on "
                  f"{check['groups']} groups{advice}")
        self.tracker.log_metrics({k: v for k, v in check.items() if k != "groups"},
                                 prefix="teacher/scale_")

    def _score(self, stage: Stage, candidates: str, scored: Path):
        """Teacher scores for candidate groups: Ray Data actor pool, score cache, resumable."""
        from raykd.teachers.bi_encoder import StoredPassages, encode_teacher_corpus
        from raykd.teachers.factory import build_teacher
        from raykd.teachers.scoring import score_candidate_groups

        corpus = BeirDataset.from_dir(stage.data.dataset_dir()).corpus_path
        if self.recipe.teacher_corpus_store:
            encode_teacher_corpus(stage.teacher, corpus, self.embedding_cache,
                                  concurrency=self.recipe.teacher_concurrency,
                                  num_gpus=self.recipe.teacher_num_gpus)
        make = StoredPassages(
            functools.partial(build_teacher, stage.teacher, str(stage.data.dataset_dir())),
            self.embedding_cache, corpus)
        report = score_candidate_groups(candidates, scored, make, num_shards=4,
                                        concurrency=self.recipe.teacher_concurrency,
                                        num_gpus=self.recipe.teacher_num_gpus,
                                        batch_size=stage.teacher.batch_size,
                                        cache=str(self.cache_dir))
        self.echo(f"[raykd] teacher {report.fingerprint}: {report.summary()}")
        self.scoring.append(report.to_dict())
        return report

    def train(self, index: int, stage: Stage, student_in: str, train_path: str, out: Path,
              run_id: str | None, extra: dict | None = None) -> tuple[str, int]:
        from raykd.data.ray_datasets import groups_dataset

        dataset = groups_dataset(train_path).random_shuffle(seed=stage.train.seed).materialize()
        lengths = np.concatenate([b["m"] for b in dataset.map_batches(
            _list_lengths, batch_format="numpy").iter_batches(batch_format="numpy")])
        num_groups, list_size = len(lengths), int(lengths.max())  # one pass over the data
        steps_per_epoch, total = plan_steps(num_groups, stage)
        worker = WorkerConfig(
            stage=stage.model_dump(mode="json"), student_path=str(student_in),
            student_options=self._stage_student_options(index), list_size=list_size,
            steps_per_epoch=steps_per_epoch, total_steps=total, stage_index=index,
            fail_at_step=self.fail_at[1] if self.fail_at and self.fail_at[0] == index else None,
            fail_marker=self.fail_marker, extra={**self.worker_extra, **(extra or {})},
            student_kind=self.recipe.student.kind)
        callbacks = list(self.train_callbacks)
        if run_id is not None:
            callbacks.append(StepMetricsCallback(self.tracker.tracking_uri, run_id))
        self.echo(f"[raykd] training {total} steps ({steps_per_epoch}/epoch) on "
                  f"{num_groups} queries, {stage.train.num_workers} worker(s), "
                  f"backend={stage.train.backend}")
        trainer = make_trainer(worker, dataset, stage, f"{self.recipe.name}-{stage.name}",
                               self.storage.uri(f"{self.recipe.name}/train"), callbacks)
        result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError(f"stage '{stage.name}' finished without a checkpoint")
        student_out = out / "student"
        with result.checkpoint.as_directory() as ckpt:
            state, exported = restore_paths(ckpt)
            if exported is None:
                raise RuntimeError(f"stage '{stage.name}': the last checkpoint holds no student")
            if student_out.exists():
                shutil.rmtree(student_out)
            shutil.copytree(exported, student_out)
        return str(student_out), int(state["step"])

    def _stage_student_options(self, index: int) -> dict:
        """The recipe's student options apply when loading the initial model; later stages
        load a saved student, which carries its own."""
        if index == 0 and not Path(self.recipe.student.model).joinpath("raykd_student.json").exists():
            return self.recipe.student.options()
        return {}

    def evaluate(self, student: str, stage: Stage, split: str, options: dict | None = None):
        """Full retrieval with the student: dense (faiss over passage vectors) for a
        bi-encoder, late interaction (faiss over token vectors, exact MaxSim) otherwise."""
        from raykd.eval.late_interaction import late_interaction_retrieval
        from raykd.eval.retrieval import dense_retrieval

        dataset = BeirDataset.from_dir(stage.data.dataset_dir())
        retrieval = (dense_retrieval if self.recipe.student.kind == "bi_encoder"
                     else late_interaction_retrieval)
        result = retrieval(student, dataset, split, k=stage.eval.k,
                           student_options={**(options or {}), **stage.eval.student_options()},
                           measures=stage.eval.measures, rel=stage.eval.rel,
                           name=Path(student).parent.name,
                           concurrency=self.recipe.teacher_concurrency,
                           cache_dir=self.embedding_cache)
        return result

    def _log_score_scatter(self, student: str) -> None:
        """Teacher vs student scores on a dev sample (BM25 candidates of the eval split),
        for the last stage that has a teacher."""
        # A collective teacher has expansions for training queries only; the plot reads a
        # bi-encoder student.
        staged = [s for s in self.stages if s.teacher is not None and s.eval.split
                  and s.teacher.kind != "collective"]
        if self.recipe.student.kind != "bi_encoder":
            staged = []
        if not self.tracker.enabled or not staged:
            return

        from raykd.negatives.candidates import mine_negatives
        from raykd.students import BiEncoder
        from raykd.tracking.plots import score_scatter

        stage = staged[-1]
        sample = self.run_dir / "dev_sample"
        if not (sample / MINING_MARKER).exists():
            mine_negatives(stage.data.dataset_dir(), stage.eval.split, sample, source="bm25",
                           depth=30, num_negatives=7, seed=stage.data.seed, fmt="parquet",
                           max_queries=SCATTER_QUERIES)
        scored = self.run_dir / "dev_sample_scored"
        self._score(stage, str(sample), scored)
        groups = _sample_groups(str(scored), SCATTER_QUERIES)
        model = BiEncoder.from_pretrained(student)
        teacher, scores, labels = [], [], []
        for g in groups:
            q = model.encode_queries([g["query"]])
            p = model.encode_passages(list(g["texts"]))
            scores.extend((model.options.scale * q @ p.T)[0].tolist())
            teacher.extend(g["teacher_scores"])
            labels.extend(g["labels"])
        path = score_scatter(np.asarray(teacher), np.asarray(scores), np.asarray(labels),
                             self.run_dir / "teacher_vs_student.png",
                             title=f"{stage.eval.split} sample, {len(groups)} queries")
        self.tracker.log_artifact(path, "plots")

    def _log_loss_curve(self, results: list[StageResult]) -> None:
        if not self.tracker.enabled:
            return
        from raykd.tracking.plots import loss_curve

        history = {}
        for r in results:
            query = f"tags.`raykd.run` = '{self.recipe.name}' and tags.`raykd.stage` = '{r.name}'"
            runs = self.tracker.client.search_runs([self.tracker.experiment_id], query,
                                                   max_results=1)
            if runs:
                history[r.name] = self.tracker.metric_history("train/loss", runs[0].info.run_id)
        path = loss_curve(history, self.run_dir / "loss_curve.png",
                          title=f"{self.recipe.name}: training loss")
        self.tracker.log_artifact(path, "plots")


SCATTER_QUERIES = 50


def _sample_groups(path: str, limit: int) -> list[dict]:
    out = []
    for group in _iter_scored(path):
        out.append(group)
        if len(out) >= limit:
            break
    return out


def _plain_group(row: dict) -> dict:
    """A Ray Data row as a plain candidate group (lists, no null optional fields)."""
    out = {}
    for key, value in row.items():
        if value is None:
            continue
        out[key] = value.tolist() if hasattr(value, "tolist") else value
    return out


def _list_lengths(batch: dict) -> dict:
    return {"m": [len(texts) for texts in batch["texts"]]}


def _iter_scored(path: str):
    from raykd.data.groups import iter_groups

    files = sorted(Path(path).glob("*.parquet")) if Path(path).is_dir() else [Path(path)]
    for file in files:
        yield from iter_groups(file)


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
