"""The run's plots: the training-loss curve of every stage, and teacher vs student scores on a
dev sample (first-stage candidates of the eval split, scored by the last stage's teacher)."""

from __future__ import annotations

import numpy as np

from raykd.config import Stage
from raykd.pipeline.context import RunContext
from raykd.pipeline.files import MINING_MARKER, sample_groups
from raykd.pipeline.kinds import QUERY_BOUND_TEACHERS, student_kind

SCATTER_QUERIES = 50
SCATTER_SOURCE = "bm25"  # the first stage of the dev sample


def log_loss_curve(ctx: RunContext, names: list[str]) -> None:
    """`train/loss` of each named stage's MLflow run, in one plot."""
    if not ctx.tracker.enabled:
        return
    from raykd.tracking.plots import loss_curve

    history = {}
    for name in names:
        query = f"tags.`raykd.run` = '{ctx.recipe.name}' and tags.`raykd.stage` = '{name}'"
        runs = ctx.tracker.client.search_runs([ctx.tracker.experiment_id], query,
                                              max_results=1)
        if runs:
            history[name] = ctx.tracker.metric_history("train/loss", runs[0].info.run_id)
    path = loss_curve(history, ctx.run_dir / "loss_curve.png",
                      title=f"{ctx.recipe.name}: training loss")
    ctx.tracker.log_artifact(path, "plots")


def log_score_scatter(ctx: RunContext, stages: list[Stage], student: str) -> None:
    """Teacher vs student scores for the last stage with a teacher and an eval split; a
    bi-encoder student, and a teacher that can score any query."""
    staged = [s for s in stages if s.teacher is not None and s.eval.split
              and s.teacher.kind not in QUERY_BOUND_TEACHERS]
    if not student_kind(ctx.recipe).bi_encoder:
        staged = []
    if not ctx.tracker.enabled or not staged:
        return

    from raykd.negatives.candidates import mine_negatives
    from raykd.students import BiEncoder
    from raykd.tracking.plots import score_scatter

    stage = staged[-1]
    sample = ctx.run_dir / "dev_sample"
    if not (sample / MINING_MARKER).exists():
        mine_negatives(stage.data.dataset_dir(), stage.eval.split, sample,
                       source=SCATTER_SOURCE, depth=30, num_negatives=7, seed=stage.data.seed,
                       fmt="parquet", max_queries=SCATTER_QUERIES)
    scored = ctx.run_dir / "dev_sample_scored"
    ctx.score(stage, str(sample), scored)
    groups = sample_groups(str(scored), SCATTER_QUERIES)
    model = BiEncoder.from_pretrained(student)
    teacher, scores, labels = [], [], []
    for g in groups:
        q = model.encode_queries([g["query"]])
        p = model.encode_passages(list(g["texts"]))
        scores.extend((model.options.scale * q @ p.T)[0].tolist())
        teacher.extend(g["teacher_scores"])
        labels.extend(g["labels"])
    path = score_scatter(np.asarray(teacher), np.asarray(scores), np.asarray(labels),
                         ctx.run_dir / "teacher_vs_student.png",
                         title=f"{stage.eval.split} sample, {len(groups)} queries")
    ctx.tracker.log_artifact(path, "plots")
