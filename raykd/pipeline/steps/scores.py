"""The teacher-scores step: the stage's teacher scores its candidates (cached) when the loss
reads listed teacher scores; in-batch losses score online and contrastive ones need none."""

from __future__ import annotations

from dataclasses import replace

from raykd.config import Stage
from raykd.errors import ConfigError
from raykd.losses import build_loss
from raykd.pipeline.context import RunContext, StageState
from raykd.pipeline.files import iter_scored
from raykd.pipeline.steps.registry import register_step


def needs_scores(stage: Stage) -> bool:
    loss = build_loss(stage.loss.name, **stage.loss.params)
    return getattr(loss, "needs_teacher", False) and not getattr(loss, "in_batch", False)


@register_step("teacher_scores", order=40, applies=needs_scores, timer="teacher")
def teacher_scores(ctx: RunContext, state: StageState) -> StageState:
    """Score, then log the teacher's diagnostics and its scale next to the student's."""
    from raykd.teachers.diagnostics import format_diagnostics, teacher_diagnostics

    stage = state.stage
    if stage.teacher is None:
        raise ConfigError(f"stages.{stage.name}.teacher",
                          f"loss '{stage.loss.name}' needs a teacher")
    scored = state.out / "scored"
    report = ctx.score(stage, state.candidates, scored)
    temperature = float(stage.loss.params.get("temperature",
                        stage.loss.params.get("teacher_temperature", 1.0)))
    stats = teacher_diagnostics(iter_scored(scored), temperature=temperature)
    ctx.echo("[raykd] " + format_diagnostics(stats))
    ctx.tracker.log_metrics({k: v for k, v in stats.items()
                             if isinstance(v, (int, float))}, prefix="teacher/")
    _scale_check(ctx, state.index, state.student_in, scored)
    return replace(state, scored=str(scored), fingerprint=report.fingerprint)


def _scale_check(ctx: RunContext, index: int, student_in: str, scored) -> None:
    """The student's margins next to the teacher's on a sample of the scored groups."""
    from raykd.students import BiEncoder
    from raykd.teachers.diagnostics import scale_check

    student = BiEncoder.from_pretrained(student_in, **ctx.student_options(index))
    check = scale_check(student, iter_scored(str(scored)))
    if not check["groups"]:
        return
    advice = ("" if 0.5 <= check["ratio"] <= 2.0 else
              "; far from 1: tune the teacher's weights or temperature on dev")
    ctx.echo(f"[raykd] scale: student margin {check['student_margin']:.3f}, teacher "
             f"margin {check['teacher_margin']:.3f} (ratio {check['ratio']:.2f}) on "
             f"{check['groups']} groups{advice}")
    ctx.tracker.log_metrics({k: v for k, v in check.items() if k != "groups"},
                            prefix="teacher/scale_")
