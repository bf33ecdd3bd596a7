"""A stage as registered steps, in order: candidates (10), PROD's confusing-query filter (20),
ADAM's dark examples (30), teacher scores (40), CollectiveKD's expansions (50), then train (60)
and evaluate (70). Each module registers its own; a method adds a module, not a branch.

    state = prepare_stage(context, index, stage, student_in)   # everything before training
    state = complete_stage(context, state)                      # train, evaluate
"""

from __future__ import annotations

from raykd.config import Stage
from raykd.pipeline.context import RunContext, StageState
from raykd.pipeline.steps import adam, candidates, collective, evaluate, prod, scores, train
from raykd.pipeline.steps.registry import STEPS, register_step, registered, run_steps

__all__ = ["STEPS", "complete_stage", "prepare_stage", "register_step",
           # the step modules, imported for their registrations
           "adam", "candidates", "collective", "evaluate", "prod", "scores", "train"]


def prepare_stage(ctx: RunContext, index: int, stage: Stage, student_in: str,
                  run_id: str | None = None) -> StageState:
    """Candidates, filters, dark examples, teacher scores, expansions: what training reads.
    Every timer of these steps is reported (0 when none of its steps applied)."""
    out = ctx.stage_dir(index, stage)
    out.mkdir(parents=True, exist_ok=True)
    steps = registered(prepares=True)
    state = StageState(index, stage, student_in, out, run_id,
                       seconds=dict.fromkeys((s.timer for s in steps), 0.0))
    return run_steps(ctx, state, steps)


def complete_stage(ctx: RunContext, state: StageState) -> StageState:
    """Training and what follows it, on a prepared stage."""
    return run_steps(ctx, state, registered(prepares=False))
