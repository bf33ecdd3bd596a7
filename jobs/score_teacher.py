"""Score candidate groups with a teacher on Ray Data actors, with a score cache.

The launcher of `raykd score-teacher` (raykd/commands/score_teacher.py), for a checkout
and `ray job submit -- python jobs/score_teacher.py ...`; `--help` lists the options.
"""

import sys
from pathlib import Path

# Python puts this file's folder (jobs/), not the repository root, on sys.path: when raykd is
# not installed (a cluster's working_dir upload, a bare checkout) this line finds the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raykd.commands.score_teacher import main  # noqa: E402

if __name__ == "__main__":
    main(prog="python jobs/score_teacher.py")
