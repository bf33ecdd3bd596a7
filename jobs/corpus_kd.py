"""Distillation on labelled plus corpus pseudo-queries (listwise KL, teacher corrected by labels).

    python jobs/corpus_kd.py                                  # raykd/recipes/corpus_kd.yaml
    python jobs/corpus_kd.py data.pseudo.count=2000 data.pseudo.rule=title name=ckd-title
    python jobs/corpus_kd.py data.queries=corpus name=ckd-unlabelled-only

Prints the student's metrics after training (dev and test).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raykd.cli import run_job  # noqa: E402

if __name__ == "__main__":
    run_job(__doc__, "corpus_kd.yaml")
