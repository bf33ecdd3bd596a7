"""Distillation on labelled plus corpus pseudo-queries (listwise KL, teacher corrected by labels).

    python jobs/corpus_kd.py                                  # raykd/recipes/corpus_kd.yaml
    python jobs/corpus_kd.py data.pseudo.count=2000 data.pseudo.rule=title name=ckd-title
    python jobs/corpus_kd.py data.queries=corpus name=ckd-unlabelled-only

Prints the student's metrics after training (dev and test).

The same job as `raykd run corpus_kd` (raykd/commands/run.py); `--help` lists its options.
"""

from raykd.commands.run import run_method

if __name__ == "__main__":
    run_method("corpus_kd", prog="python jobs/corpus_kd.py")
