"""Margin-MSE distillation (Hofstatter et al. 2020) of the teacher into a bi-encoder.

    python jobs/margin_mse.py                 # bundled SciFact, bundled MiniLM student
    python jobs/margin_mse.py --quick         # a smoke run in a few minutes
    python jobs/margin_mse.py train.lr=3e-5 name=margin_mse-lr3e-5

Recipe: raykd/recipes/margin_mse.yaml. Outputs: outputs/<name>/ (student, results.json, MLflow).

The same job as `raykd run margin_mse` (raykd/commands/run.py); `--help` lists its options.
"""

from raykd.commands.run import run_method

if __name__ == "__main__":
    run_method("margin_mse", prog="python jobs/margin_mse.py")
