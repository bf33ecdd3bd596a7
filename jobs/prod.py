"""PROD: teacher-progressive then data-progressive distillation, one recipe of stages.

    python jobs/prod.py                  # dense teacher -> ensemble -> confusing queries
    python jobs/prod.py --quick
    python jobs/prod.py stages.2.repeat=3 name=prod-dpd3    # three data-progressive rounds

A rerun with the same name resumes at the first unfinished stage. Recipe: raykd/recipes/prod.yaml.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raykd.cli import run_job  # noqa: E402

if __name__ == "__main__":
    run_job(__doc__, "prod.yaml")
