"""The contrastive baseline: InfoNCE over the same negatives, no teacher.

    python jobs/contrastive.py                 # bundled SciFact, bundled MiniLM student
    python jobs/contrastive.py --quick         # a smoke run in a few minutes
    python jobs/contrastive.py train.lr=3e-5 name=contrastive-lr3e-5

Recipe: raykd/recipes/contrastive.yaml. Outputs: outputs/<name>/ (student, results.json, MLflow).

The same job as `raykd run contrastive` (raykd/commands/run.py); `--help` lists its options.
"""

from raykd.commands.run import run_method

if __name__ == "__main__":
    run_method("contrastive", prog="python jobs/contrastive.py")
