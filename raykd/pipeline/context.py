"""What the steps of a run share: `RunContext` (the recipe, where things live, the tracker, the
teacher-scoring service) and `StageState` (what one stage's steps have made so far)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from raykd.config import Recipe, Stage
from raykd.data.beir import BeirDataset
from raykd.pipeline.files import STAGES_DIR
from raykd.pipeline.kinds import student_kind
from raykd.storage import Storage, is_uri
from raykd.tracking import Tracker

# Folders next to the runs, shared by every run of a storage (synced with a URI storage);
# a step that keeps its own there registers it.
SHARED_DIRS: list[str] = ["candidates"]


def register_shared_dir(name: str) -> None:
    if name not in SHARED_DIRS:
        SHARED_DIRS.append(name)


@dataclass
class StageState:
    """One stage's inputs and what its steps made; every step returns an updated copy."""

    index: int
    stage: Stage
    student_in: str
    out: Path  # the stage's folder
    run_id: str | None = None  # the stage's MLflow run
    candidates: str | None = None  # candidate groups, after filters and dark examples
    scored: str | None = None  # teacher-scored groups, when the loss reads listed scores
    fingerprint: str | None = None  # the teacher's, when it scored
    extra: dict = field(default_factory=dict)  # extra worker inputs (WorkerConfig.extra)
    seconds: dict = field(default_factory=dict)
    student_out: str | None = None
    steps: int = 0
    metrics: dict = field(default_factory=dict)

    @property
    def train_path(self) -> str:
        """What the trainer reads: the scored groups, else the candidates."""
        return self.scored or self.candidates


class RunContext:
    """A recipe's run-wide settings and services; `RecipeRunner` is one, the sweep's warm-up
    makes a bare one (with a disabled tracker)."""

    def __init__(self, recipe: Recipe, *, echo: Callable[[str], None] = print,
                 train_callbacks=(), worker_extra: dict | None = None,
                 step_hooks: Mapping[int, Sequence] | None = None, score_scatter: bool = True):
        """`train_callbacks` join every stage's Ray Train callbacks and `worker_extra` every
        worker's `WorkerConfig.extra` (e.g. a sweep's Tune reporting and dev probe);
        `step_hooks` maps a stage index to its workers' step hooks (raykd.train.hooks);
        `score_scatter=False` skips the final teacher-vs-student plot (a sweep's trials)."""
        self.recipe = recipe
        # A URI storage: Ray Train, the score cache and MLflow artefacts write to it
        # directly; the driver's own files go to a local mirror synced with it (storage.py).
        self.storage = Storage(recipe.storage)
        self.run_dir = self.storage.local / recipe.name
        self.step_hooks = dict(step_hooks or {})
        self.score_scatter = score_scatter
        self.echo = echo
        cache = recipe.score_cache or self.storage.uri("score_cache")
        self.cache_dir = cache if is_uri(cache) else str(Path(cache).resolve())
        self.embedding_cache = str(Path(recipe.embedding_cache or
                                        self.run_dir.parent / "embedding_cache").resolve())
        self.candidates_root = self.shared_dir("candidates")
        self.tracker = Tracker(recipe.name, "", "", enabled=False)  # run() opens the real one
        self.train_callbacks, self.worker_extra = list(train_callbacks), dict(worker_extra or {})
        self.scoring: list[dict] = []  # every teacher-scoring report of this run

    def shared_dir(self, name: str) -> Path:
        """A folder shared by the runs of this storage (see SHARED_DIRS)."""
        return self.run_dir.parent / name

    def stage_dir(self, index: int, stage: Stage) -> Path:
        return self.run_dir / STAGES_DIR / f"{index:02d}-{stage.name}"

    def student_options(self, index: int) -> dict:
        """The recipe's student options apply when loading the initial model; later stages
        load a saved student, which carries its own."""
        if index == 0 and not Path(self.recipe.student.model).joinpath("raykd_student.json").exists():
            return self.recipe.student.options()
        return {}

    def retrieval_options(self, stage: Stage) -> dict:
        """Student options for retrieving with a student (mining, the confusing-query rule):
        the evaluation's lengths, so that mining, evaluation and a bi-encoder teacher over the
        same model read one stored corpus encoding."""
        if not student_kind(self.recipe).bi_encoder:  # a bi-encoder mines: lengths only
            return stage.eval.student_options()
        opts = self.recipe.student.options()
        opts.pop("shared", None)
        if stage.data.negatives_model:  # another model: the student's truncation is not its
            opts.pop("num_layers", None)
        return {**opts, **stage.eval.student_options()}

    def mining_resources(self, stage: Stage) -> dict:
        """Dense mining's resources from `stage.data`: the encoder pool and the searcher's
        placement (pinned to the driver's node unless the recipe's store is shared)."""
        data = stage.data
        return {"concurrency": data.mining_concurrency, "num_gpus": data.mining_gpus_per_actor,
                "searcher": self.searcher(data.mining_search_cpus)}

    def searcher(self, cpus: int = 1):
        """A search actor's placement: `cpus` CPUs, on the driver's node unless the recipe's
        `embedding_cache` is storage every node sees."""
        from raykd.index.search import SearcherPlacement

        return SearcherPlacement(cpus, pinned=self.recipe.embedding_cache is None)

    def score(self, stage: Stage, candidates: str, scored: Path):
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
