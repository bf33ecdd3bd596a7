"""ADAM's step: dark examples (mix-up, masking) appended to every candidate group by a Ray
Data CPU stage before teacher scoring; cached by the dark settings, the candidates and the
length budget."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from raykd.config import Stage
from raykd.pipeline.context import RunContext, StageState
from raykd.pipeline.files import GROUPS_FILE, plain_group
from raykd.pipeline.steps.registry import register_step
from raykd.storage import atomic_path, cached_artifact


def _enabled(stage: Stage) -> bool:
    return stage.dark.enabled


@register_step("dark_examples", order=30, applies=_enabled, timer="candidates")
def dark_examples(ctx: RunContext, state: StageState) -> StageState:
    from raykd.dark.maker import DarkReport, dark_examples_stage
    from raykd.data.groups import write_groups_parquet
    from raykd.data.ray_datasets import groups_dataset

    stage, candidates, tokenizer = state.stage, state.candidates, str(state.student_in)
    max_length = ctx.recipe.student.passage_max_length

    def make(out: Path) -> None:
        report = DarkReport()
        dataset = dark_examples_stage(groups_dataset(candidates), stage.dark,
                                      tokenizer_path=tokenizer, max_length=max_length,
                                      report=report)
        with atomic_path(out / GROUPS_FILE) as tmp:
            write_groups_parquet(tmp, (plain_group(row) for row in dataset.iter_rows()))
        ctx.echo(f"[raykd] dark examples: {report.summary()}")

    out, _ = cached_artifact(ctx.candidates_root, "dark",
                             {"dark": stage.dark.model_dump(mode="json"),
                              "candidates": candidates, "max_length": max_length,
                              "tokenizer": tokenizer}, make, marker=GROUPS_FILE)
    return replace(state, candidates=str(out))
