"""Ray Tune sweeps over any recipe field, with ASHA on a periodic dev probe.

The launcher of `raykd tune` (raykd/commands/tune.py), for a checkout
and `ray job submit -- python jobs/tune.py ...`; `--help` lists the options.
"""

from raykd.commands.tune import main

if __name__ == "__main__":
    main(prog="python jobs/tune.py")
