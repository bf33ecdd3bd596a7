"""CollectiveKD's steps: negatives from the collective teacher's own ranking (the candidate
source `teacher`) and the PRF expansions of the training queries that its in-batch scores read
(an extra worker input). Its scores exist for the training queries only."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from raykd.config import Stage, spec_key
from raykd.data.beir import BeirDataset
from raykd.errors import ConfigError
from raykd.pipeline.context import RunContext, StageState, register_shared_dir
from raykd.pipeline.files import MINING_MARKER
from raykd.pipeline.kinds import register_query_bound_teacher
from raykd.pipeline.steps.candidates import register_source
from raykd.pipeline.steps.registry import register_step
from raykd.storage import cached_artifact

KIND = "collective"
EXPANSIONS_DIR = "collective"  # next to the runs, shared by them


def _is_collective(stage: Stage) -> bool:
    return stage.teacher is not None and stage.teacher.kind == KIND


def teacher_candidates(ctx: RunContext, state: StageState) -> str:
    """Candidates whose negatives come from the stage's collective teacher's own ranking,
    cached by the data settings and the teacher."""
    from raykd.teachers.collective import teacher_candidates as rank

    stage, data = state.stage, state.stage.data
    if data.queries != "labelled":
        raise ConfigError(f"stages.{stage.name}.data.queries",
                          "negatives from a collective teacher's ranking are mined for "
                          "labelled queries only; use queries=labelled")
    if not _is_collective(stage):
        raise ConfigError(f"stages.{stage.name}.data.negatives_from",
                          "'teacher' needs the stage's teacher to be `collective`")

    def mine(out: Path) -> None:
        ctx.echo(f"[raykd] mining negatives from the teacher's ranking for {data.split} "
                 f"-> {out}")
        report = rank(stage.teacher, data, out, cache_dir=ctx.embedding_cache,
                      concurrency=ctx.recipe.teacher_concurrency,
                      num_gpus=ctx.recipe.teacher_num_gpus)
        ctx.echo(f"[raykd] {report.summary()}")

    out, _ = cached_artifact(
        ctx.candidates_root, f"{data.split}-teacher",
        {"data": data.labelled_key(),
         "teacher": spec_key(stage.teacher, exclude={"batch_size"})},
        mine, marker=MINING_MARKER)
    return str(out)


@register_step("expansions", order=50, applies=_is_collective, timer="teacher")
def expansions(ctx: RunContext, state: StageState) -> StageState:
    """PRF expansions of the training queries (cached under the storage)."""
    from raykd.teachers.collective import collective_expansions, group_queries

    stage = state.stage
    queries = group_queries(state.train_path)
    corpus = BeirDataset.from_dir(stage.data.dataset_dir()).corpus_path
    path = collective_expansions(stage.teacher, corpus, queries, ctx.shared_dir(EXPANSIONS_DIR),
                                 cache_dir=ctx.embedding_cache,
                                 concurrency=ctx.recipe.teacher_concurrency,
                                 num_gpus=ctx.recipe.teacher_num_gpus)
    ctx.echo(f"[raykd] PRF expansions of {len(queries)} training queries: {path}")
    return replace(state, extra={**state.extra, "expansions": str(path)})


register_source("teacher", teacher_candidates)
register_query_bound_teacher(KIND)
register_shared_dir(EXPANSIONS_DIR)
