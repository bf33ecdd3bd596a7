"""The step registry: a stage is the registered steps that apply to it, in order.

A step is a function `run(context, state) -> state` registered with its position, a predicate
on the stage (when it applies), the `seconds` entry its time adds to, and whether it prepares
training (runs in `prepare_stage`, which the sweep's warm-up shares) or follows it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from raykd.config import Stage
from raykd.pipeline.context import RunContext, StageState

StepFn = Callable[[RunContext, StageState], StageState]


def always(stage: Stage) -> bool:
    return True


@dataclass(frozen=True)
class Step:
    name: str
    order: int  # position in the stage
    run: StepFn
    applies: Callable[[Stage], bool] = always
    timer: str = ""  # the `seconds` entry its time adds to (default: its name)
    prepares: bool = True  # before training


STEPS: dict[str, Step] = {}


def register_step(name: str, *, order: int, applies: Callable[[Stage], bool] = always,
                  timer: str | None = None, prepares: bool = True) -> Callable[[StepFn], StepFn]:
    """Decorator: make the decorated function the stage step `name`."""
    def wrap(fn: StepFn) -> StepFn:
        if name in STEPS:
            raise ValueError(f"stage step {name!r} is already registered")
        taken = {s.order: s.name for s in STEPS.values()}
        if order in taken:
            raise ValueError(f"stage step {name!r}: position {order} is {taken[order]!r}'s")
        STEPS[name] = Step(name, order, fn, applies, timer or name, prepares)
        return fn
    return wrap


def registered(*, prepares: bool) -> list[Step]:
    """The registered steps of one phase (before or after training start), in order."""
    return sorted((s for s in STEPS.values() if s.prepares == prepares), key=lambda s: s.order)


def run_steps(ctx: RunContext, state: StageState, steps: list[Step]) -> StageState:
    """Run the steps that apply to the state's stage, in order, timing each."""
    for step in steps:
        if not step.applies(state.stage):
            continue
        t0 = time.perf_counter()
        state = step.run(ctx, state)
        seconds = dict(state.seconds)
        seconds[step.timer] = seconds.get(step.timer, 0.0) + time.perf_counter() - t0
        state = replace(state, seconds=seconds)
    return state
