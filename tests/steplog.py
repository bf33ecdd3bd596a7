"""A Ray Train controller callback for tests: one JSON line per report."""

from __future__ import annotations

import json
import os


class StepLog:
    """Records each report's step, loss and whether it carried a checkpoint, in a file that
    outlives worker restarts (the controller writes it, not the workers)."""

    def __init__(self, path):
        self.path = str(path)

    def callback(self):
        from ray.train import UserCallback

        path = self.path

        class _Log(UserCallback):
            def after_report(self, run_context, metrics, checkpoint):
                with open(path, "a") as f:
                    f.write(json.dumps({"step": metrics[0]["step"],
                                        "loss": metrics[0].get("loss"),
                                        "ckpt": checkpoint is not None}) + "\n")
        return _Log()

    def entries(self) -> list[dict]:
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            return [json.loads(line) for line in f if line.strip()]
