"""Score candidate groups with a teacher on Ray Data actors, with a score cache.

The launcher of `raykd score-teacher` (raykd/commands/score_teacher.py), for a checkout
and `ray job submit -- python jobs/score_teacher.py ...`; `--help` lists the options.
"""

from raykd.commands.score_teacher import main

if __name__ == "__main__":
    main(prog="python jobs/score_teacher.py")
