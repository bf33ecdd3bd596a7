"""PROD's data-progressive step: keep the groups of the queries the teacher gets right (top-1
positive) and the student ranks 2nd to 15th (`data.query_filter: confusing`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from raykd.config import Stage, spec_key
from raykd.data.beir import BeirDataset
from raykd.errors import ConfigError
from raykd.pipeline.context import RunContext, StageState
from raykd.pipeline.files import GROUPS_FILE, iter_scored
from raykd.pipeline.steps.registry import register_step
from raykd.storage import atomic_path, cached_artifact


def _filters(stage: Stage) -> bool:
    """A mined stage with the confusing-query filter (a stage's own candidates stay whole)."""
    return stage.data.query_filter == "confusing" and not stage.data.candidates


@register_step("confusing_queries", order=20, applies=_filters, timer="candidates")
def confusing_candidates(ctx: RunContext, state: StageState) -> StageState:
    from raykd.data.groups import write_groups_parquet
    from raykd.negatives.mining import mine_rankings
    from raykd.negatives.progressive import confusing_queries
    from raykd.teachers.base import stable_hash

    stage, student_in, candidates = state.stage, state.student_in, state.candidates
    if stage.teacher is None:
        raise ConfigError(f"stages.{stage.name}.data.query_filter",
                          "'confusing' needs the stage's teacher")
    dataset = BeirDataset.from_dir(stage.data.dataset_dir())
    queries, qrels = dataset.queries(stage.data.split), dataset.qrels(stage.data.split)
    student_rankings = mine_rankings(
        "student", dataset.corpus_path, queries, 15, model=student_in,
        student_options=ctx.retrieval_options(stage), cache_dir=ctx.embedding_cache,
        **ctx.mining_resources(stage))
    scored_dir = Path(candidates + "-teacher-" + stable_hash(spec_key(stage.teacher)))
    ctx.score(stage, candidates, scored_dir)
    groups = {g["qid"]: g for g in iter_scored(str(scored_dir))}
    teacher = {q: (g["pids"], g["teacher_scores"]) for q, g in groups.items()}
    keep = confusing_queries(student_rankings, teacher, qrels)

    def write(out: Path) -> None:
        rows = ({k: v for k, v in groups[q].items() if k != "teacher_scores"} for q in keep)
        with atomic_path(out / GROUPS_FILE) as tmp:
            write_groups_parquet(tmp, rows)

    out, _ = cached_artifact(ctx.candidates_root, "confusing",
                             {"candidates": candidates, "student": student_in, "keep": keep},
                             write, marker=GROUPS_FILE)
    ctx.echo(f"[raykd] data-progressive: {len(keep)} confusing queries of the "
             f"{len(groups)} with candidates ({len(queries)} in the split)")
    if not keep:
        raise RuntimeError(f"stage '{stage.name}': no confusing query left to train on")
    return replace(state, candidates=str(out))
