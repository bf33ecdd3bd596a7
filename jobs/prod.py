"""PROD: teacher-progressive then data-progressive distillation, one recipe of stages.

    python jobs/prod.py                  # dense teacher -> ensemble -> confusing queries
    python jobs/prod.py --quick
    python jobs/prod.py stages.2.repeat=3 name=prod-dpd3    # three data-progressive rounds

A rerun with the same name resumes at the first unfinished stage. Recipe: raykd/recipes/prod.yaml.

The same job as `raykd run prod` (raykd/commands/run.py); `--help` lists its options.
"""

from raykd.commands.run import run_method

if __name__ == "__main__":
    run_method("prod", prog="python jobs/prod.py")
