"""Contrastively weighted KL (CKL) distillation plus InfoNCE into a bi-encoder.

    python jobs/ckl.py                 # bundled SciFact, bundled MiniLM student
    python jobs/ckl.py --quick         # a smoke run in a few minutes
    python jobs/ckl.py train.lr=3e-5 name=ckl-lr3e-5

Recipe: raykd/recipes/ckl.yaml. Outputs: outputs/<name>/ (student, results.json, MLflow).

The same job as `raykd run ckl` (raykd/commands/run.py); `--help` lists its options.
"""

from raykd.commands.run import run_method

if __name__ == "__main__":
    run_method("ckl", prog="python jobs/ckl.py")
