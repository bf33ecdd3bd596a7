"""Prepare the MS MARCO passage files for the MS MARCO recipes (raykd/recipes/msmarco/).

The launcher of `raykd prepare-msmarco` (raykd/commands/prepare_msmarco.py), for a checkout
and `ray job submit -- python jobs/prepare_msmarco.py ...`; `--help` lists the options.
"""

from raykd.commands.prepare_msmarco import main

if __name__ == "__main__":
    main(prog="python jobs/prepare_msmarco.py")
