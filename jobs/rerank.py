"""Evaluate a teacher by re-ranking first-stage candidates (or another run's top).

The launcher of `raykd rerank` (raykd/commands/rerank.py), for a checkout
and `ray job submit -- python jobs/rerank.py ...`; `--help` lists the options.
"""

from raykd.commands.rerank import main

if __name__ == "__main__":
    main(prog="python jobs/rerank.py")
