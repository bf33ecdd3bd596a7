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
from raykd.progress import Progress
from raykd.storage import atomic_path, cached_artifact


def count_groups(candidates) -> int | None:
    """The groups in a local parquet candidates file or folder, from the files' metadata (no
    read); None for anything else (JSONL, a URI), where the progress lines show no ETA."""
    import pyarrow.parquet as pq

    from raykd.data.ray_datasets import file_format

    path = Path(candidates)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    files = [f for f in files if file_format(f) is not None]
    if not files or any(file_format(f) != "parquet" or f.name.endswith(".gz") for f in files):
        return None
    try:
        return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    except (OSError, ValueError):
        return None


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
        progress = Progress("dark examples", total=count_groups(candidates), unit="groups",
                            echo=ctx.echo)

        def rows():
            for row in dataset.iter_rows():
                progress.update()
                yield plain_group(row)

        with atomic_path(out / GROUPS_FILE) as tmp:
            write_groups_parquet(tmp, rows())
        progress.close()
        ctx.echo(f"[raykd] dark examples: {report.summary()}")

    out, _ = cached_artifact(ctx.candidates_root, "dark",
                             {"dark": stage.dark.model_dump(mode="json"),
                              "candidates": candidates, "max_length": max_length,
                              "tokenizer": tokenizer}, make, marker=GROUPS_FILE)
    return replace(state, candidates=str(out))
