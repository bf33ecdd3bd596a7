"""The contrastive baseline: InfoNCE over the same negatives, no teacher.

    python jobs/contrastive.py                 # bundled SciFact, bundled MiniLM student
    python jobs/contrastive.py --quick         # a smoke run in a few minutes
    python jobs/contrastive.py train.lr=3e-5 name=contrastive-lr3e-5

Recipe: raykd/recipes/contrastive.yaml. Outputs: outputs/<name>/ (student, results.json, MLflow).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raykd.cli import run_job  # noqa: E402

if __name__ == "__main__":
    run_job(__doc__, "contrastive.yaml")
