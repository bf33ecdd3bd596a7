"""Mine hard negatives for a split and write candidate groups.

The launcher of `raykd mine-negatives` (raykd/commands/mine_negatives.py), for a checkout
and `ray job submit -- python jobs/mine_negatives.py ...`; `--help` lists the options.
"""

from raykd.commands.mine_negatives import main

if __name__ == "__main__":
    main(prog="python jobs/mine_negatives.py")
