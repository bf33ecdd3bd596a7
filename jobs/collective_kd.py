"""CollectiveKD: a late-interaction student distilled from the same model with PRF-expanded
queries (in-batch KL, teacher-only temperature, row-max overwrite).

    python jobs/collective_kd.py                 # bundled SciFact, MiniLM as a late-interaction model
    python jobs/collective_kd.py --quick         # a smoke run
    python jobs/collective_kd.py train.lr=3e-5 name=ckd-lr3e-5

Recipe: raykd/recipes/collective_kd.yaml. Outputs: outputs/<name>/ (student, results.json, MLflow).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raykd.cli import run_job  # noqa: E402

if __name__ == "__main__":
    run_job(__doc__, "collective_kd.yaml")
