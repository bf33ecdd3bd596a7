"""ADAM: distillation with adaptive dark examples and self-paced instance selection (main job).

    python jobs/adam.py                  # local Ray, bundled SciFact, MiniLM student
    python jobs/adam.py --quick          # a smoke run in a few minutes
    python jobs/adam.py --full           # every labelled train query: 709, 88 steps
    ray job submit --working-dir . -- python jobs/adam.py   # on a cluster (RAY_ADDRESS)
    python jobs/adam.py dark.k=4 dark.rho_mask=0.5 loss.params.rho=0.5 name=adam-k4

Prints the student's metrics before and after training. Recipe: raykd/recipes/adam.yaml.

The same job as `raykd run adam` (raykd/commands/run.py); `--help` lists its options.
"""

from raykd.commands.run import run_method

if __name__ == "__main__":
    run_method("adam", prog="python jobs/adam.py")
