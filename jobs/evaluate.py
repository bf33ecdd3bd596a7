"""Evaluate a student (default: the bundled MiniLM) or BM25 by full retrieval.

The launcher of `raykd evaluate` (raykd/commands/evaluate.py), for a checkout
and `ray job submit -- python jobs/evaluate.py ...`; `--help` lists the options.
"""

from raykd.commands.evaluate import main

if __name__ == "__main__":
    main(prog="python jobs/evaluate.py")
