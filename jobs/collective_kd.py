"""CollectiveKD: a late-interaction student distilled from the same model with PRF-expanded
queries (in-batch KL, teacher-only temperature, row-max overwrite).

    python jobs/collective_kd.py                 # bundled SciFact, MiniLM as a late-interaction model
    python jobs/collective_kd.py --quick         # a smoke run
    python jobs/collective_kd.py train.lr=3e-5 name=ckd-lr3e-5

Recipe: raykd/recipes/collective_kd.yaml. Outputs: outputs/<name>/ (student, results.json, MLflow).

The same job as `raykd run collective_kd` (raykd/commands/run.py); `--help` lists its options.
"""

from raykd.commands.run import run_method

if __name__ == "__main__":
    run_method("collective_kd", prog="python jobs/collective_kd.py")
