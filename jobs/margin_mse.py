"""Margin-MSE distillation (Hofstatter et al. 2020) of the teacher into a bi-encoder.

    python jobs/margin_mse.py                 # bundled SciFact, bundled MiniLM student
    python jobs/margin_mse.py --quick         # a smoke run in a few minutes
    python jobs/margin_mse.py train.lr=3e-5 name=margin_mse-lr3e-5

Recipe: raykd/recipes/margin_mse.yaml. Outputs: outputs/<name>/ (student, results.json, MLflow).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raykd.cli import run_job  # noqa: E402

if __name__ == "__main__":
    run_job(__doc__, "margin_mse.yaml")
