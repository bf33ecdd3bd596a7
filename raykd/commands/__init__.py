"""The `raykd` command (also `python -m raykd`): one sub-command per job.

Each job is a module here with `main(argv=None, prog=...)`: `run` (the method jobs, one per
bundled recipe) and the tools. The launchers `jobs/<job>.py` (for `python jobs/adam.py` and
`ray job submit -- python jobs/adam.py`) call the same `main`.

`raykd --help` reads each command's one-line summary from its module's docstring and each
method's from its recipe, so it imports no job (no torch, no Ray) to print the list.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import sys
import textwrap
from pathlib import Path

# command -> its module in raykd.commands; `run` first, then the tools
COMMANDS = {
    "run": "run",
    "evaluate": "evaluate",
    "rerank": "rerank",
    "score-teacher": "score_teacher",
    "mine-negatives": "mine_negatives",
    "train-teacher": "train_teacher",
    "tune": "tune",
    "prepare-msmarco": "prepare_msmarco",
}
HERE = Path(__file__).resolve().parent


def summary(module: str) -> str:
    """The first line of a command module's docstring, read without importing it."""
    doc = ast.get_docstring(ast.parse((HERE / f"{module}.py").read_text(encoding="utf-8")))
    return (doc or "").strip().splitlines()[0] if doc else ""


def describe(doc: str, default_prog: str, prog: str) -> str:
    """A command's help text: its docstring, whose examples name `default_prog` (`raykd
    evaluate`), with `prog` (`python jobs/evaluate.py`) in their place."""
    return doc.replace(default_prog, prog) if prog != default_prog else doc


def rows(entries: dict[str, str], width: int) -> list[str]:
    """`  name   summary` lines, the summary wrapped under itself at 100 columns."""
    return [textwrap.fill(text, 100, initial_indent=f"  {name:<{width}}",
                          subsequent_indent=" " * (width + 2))
            for name, text in entries.items()]


def method_rows() -> list[str]:
    """One entry per bundled recipe (the methods `raykd run` knows, then the families' recipes
    such as `msmarco/prod`, in a column of their own), with its summary."""
    from raykd.recipes import bundled_names, family_names
    from raykd.recipes import summary as recipe_summary

    methods = {name: recipe_summary(name) for name in bundled_names("recipe")}
    out = rows(methods, max(len(n) for n in [*methods, *COMMANDS]) + 2)
    family = {name: recipe_summary(name) for name in family_names()}
    return out + (rows(family, max(map(len, family)) + 2) if family else [])


def listing() -> str:
    """The methods (from the bundled recipes) and the tools, one entry each."""
    tools = {name: summary(module) for name, module in COMMANDS.items() if name != "run"}
    lines = ["methods: raykd run <method> [--quick | --full] [--name N] [--print-recipe] "
             "[--verbose] [overrides...]"]
    lines += method_rows()
    lines += ["", "tools: raykd <tool> [options]"]
    lines += rows(tools, max(len(n) for n in COMMANDS) + 4)
    lines += ["", "`raykd <command> --help` lists a command's options. From a checkout, "
                  "`python jobs/<job>.py`", "runs the same code (jobs/adam.py, "
                  "jobs/score_teacher.py, ...), also under `ray job submit`."]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="raykd", usage="raykd <command> [options]",
        description="Knowledge distillation for neural retrieval on Ray: one command per job.",
        epilog=listing(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=list(COMMANDS), metavar="command", help=argparse.SUPPRESS)
    p.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p


def main(argv=None) -> None:
    """`raykd <command> ...`: dispatch to the command's `main`. Returns None (the console
    script exits 0); errors exit as the command's own do (a raykd error: one line, exit 2)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    module = importlib.import_module(f"{__name__}.{COMMANDS[args.command]}")
    module.main(args.args, prog=f"raykd {args.command}")
