"""Step hooks: callables `hook(step, rank)` that every training worker runs after each optimiser
step (`WorkerConfig.step_hooks`, `RunContext(step_hooks={stage_index: [...]})`). They travel to
the workers pickled, so a hook is a small picklable object.

`FailOnce` is the resume drill: a worker failure at a chosen step, once, to check on a real
cluster (or in the tests) that a run restores from its last checkpoint.
"""

from __future__ import annotations

from pathlib import Path


class FailOnce:
    """Raise on the rank-0 worker at `step`, once: the `marker` file it writes keeps the
    restored attempt (and any rerun) from failing again."""

    def __init__(self, step: int, marker: str | Path):
        self.step, self.marker = int(step), str(marker)

    def __call__(self, step: int, rank: int) -> None:
        marker = Path(self.marker)
        if step != self.step or rank != 0 or marker.exists():
            return
        marker.write_text(str(step))
        raise RuntimeError(f"injected failure at step {step}")
