"""Ray Tune sweeps over recipe fields: spaces (`space`), the sweep driver (`sweep`) and the
trial trainable (`trial`). Command line: `raykd tune` (raykd/commands/tune.py)."""

from raykd.tune.space import Dimension, parse_space
from raykd.tune.sweep import SweepOptions, SweepPlan, plan_sweep, run_sweep

__all__ = ["Dimension", "SweepOptions", "SweepPlan", "parse_space", "plan_sweep", "run_sweep"]
