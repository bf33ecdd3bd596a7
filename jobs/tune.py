"""Ray Tune sweeps over any recipe field, with ASHA on a periodic dev probe.

    python jobs/tune.py --space ckl_scifact --print-plan   # a bundled space: validate, list
    python jobs/tune.py --space ckl_scifact                # run the sweep
    python jobs/tune.py --recipe ckl \\
        'loss.params.temperature=choice:[0.5,1,2]' train.lr=loguniform:1e-5:1e-4 \
        --search random --num-samples 8 --trial-cpus 1 --max-concurrent 1

Outputs: <storage>/sweeps/<name>/trials.json and best_recipe.yaml (run it with
`jobs/<method>.py --recipe`), one MLflow parent run with a child run per trial.
`--help` describes the space syntax and every option.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raykd.tune.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
