"""The evaluate step: full retrieval with the stage's student on its eval split, by the
retrieval its student kind registered (`pipeline/kinds.py`); runs and metrics kept. A dense
student's corpus is encoded and searched with the stage's dense-mining resources."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from raykd.config import Stage
from raykd.data.beir import BeirDataset
from raykd.pipeline.context import RunContext, StageState
from raykd.pipeline.files import eval_dir_name
from raykd.pipeline.kinds import student_kind
from raykd.pipeline.steps.registry import register_step


def evaluate(ctx: RunContext, student: str, stage: Stage, split: str,
             options: dict | None = None):
    """Retrieve `split` with `student` by the stage's eval settings; the retrieval result."""
    dataset = BeirDataset.from_dir(stage.data.dataset_dir())
    kind = student_kind(ctx.recipe)
    resources = {"concurrency": ctx.recipe.teacher_concurrency}
    if kind.bi_encoder:
        resources = {"index_kind": stage.eval.index, **ctx.mining_resources(stage)}
        if not resources["num_gpus"]:  # CPU encoders: the recipe's pool, as it always was
            resources["concurrency"] = ctx.recipe.teacher_concurrency
    return kind.retrieval(student, dataset, split, k=stage.eval.k,
                          student_options={**(options or {}), **stage.eval.student_options()},
                          measures=stage.eval.measures, rel=stage.eval.rel,
                          name=Path(student).parent.name, cache_dir=ctx.embedding_cache,
                          **resources)


def _has_split(stage: Stage) -> bool:
    return bool(stage.eval.split)


@register_step("evaluate", order=70, applies=_has_split, timer="eval", prepares=False)
def _evaluate(ctx: RunContext, state: StageState) -> StageState:
    split = state.stage.eval.split
    evaluated = evaluate(ctx, state.student_out, state.stage, split)
    evaluated.save(state.out / eval_dir_name(split))
    metrics = evaluated.metrics
    ctx.tracker.log_metrics(metrics, step=state.steps, run_id=state.run_id, prefix=f"{split}/")
    ctx.tracker.log_metrics(metrics, step=state.index, prefix=f"{split}/stage_")
    return replace(state, metrics=metrics)
