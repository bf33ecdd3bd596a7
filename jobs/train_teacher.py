"""Fine-tune a cross-encoder teacher, then evaluate it by re-ranking.

The launcher of `raykd train-teacher` (raykd/commands/train_teacher.py), for a checkout
and `ray job submit -- python jobs/train_teacher.py ...`; `--help` lists the options.
"""

from raykd.commands.train_teacher import main

if __name__ == "__main__":
    main(prog="python jobs/train_teacher.py")
