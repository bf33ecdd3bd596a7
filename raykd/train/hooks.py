"""Step hooks: callables `hook(step, rank)` that every training worker runs after each optimiser
step (`WorkerConfig.step_hooks`, `RunContext(step_hooks={stage_index: [...]})`). They travel to
the workers pickled, so a hook is a small picklable object.

`FailOnce` is the resume drill: a worker failure at a chosen step, once, to check on a real
cluster (or in the tests) that a run restores from its last checkpoint. `KillOnce` is the same
drill with a real process death: the worker SIGKILLs itself, as an OOM killer or a lost node
would end it, with no Python exception, no cleanup and its peers left inside a collective.
"""

from __future__ import annotations

import os
import signal
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


class KillOnce:
    """SIGKILL the worker process of `rank` at `step`, once (the `marker` file, written first,
    keeps the restored attempt alive). The step's own report never happens: the run resumes
    from the last checkpoint before `step`."""

    def __init__(self, step: int, marker: str | Path, rank: int = 0):
        self.step, self.marker, self.rank = int(step), str(marker), int(rank)

    def __call__(self, step: int, rank: int) -> None:
        marker = Path(self.marker)
        if step != self.step or rank != self.rank or marker.exists():
            return
        marker.write_text(f"{step} {os.getpid()}")
        os.kill(os.getpid(), signal.SIGKILL)
