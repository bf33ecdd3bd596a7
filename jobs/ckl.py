"""Contrastively weighted KL (CKL) distillation plus InfoNCE into a bi-encoder.

    python jobs/ckl.py                 # bundled SciFact, bundled MiniLM student
    python jobs/ckl.py --quick         # a smoke run in a few minutes
    python jobs/ckl.py train.lr=3e-5 name=ckl-lr3e-5

Recipe: raykd/recipes/ckl.yaml. Outputs: outputs/<name>/ (student, results.json, MLflow).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raykd.cli import run_job  # noqa: E402

if __name__ == "__main__":
    run_job(__doc__, "ckl.yaml")
