"""Train a student with a method's bundled recipe (raykd/recipes/<method>.yaml), plus overrides.

    raykd run adam                       # ADAM on bundled SciFact, the bundled MiniLM student
    raykd run ckl --quick                # a smoke run: a tiny budget
    raykd run ckl --full                 # every labelled train query, lr 5e-5
    raykd run ckl --print-recipe         # the resolved recipe, nothing run
    raykd run ckl train.lr=3e-5 name=ckl-lr3e-5
    raykd run ckl --recipe my_recipe.yaml
    raykd run msmarco/margin_mse         # a paper's MS MARCO setting (raykd/recipes/msmarco/)

`raykd run <method> --help` lists the options. The launchers `python jobs/<method>.py` run the
same code.
"""

from __future__ import annotations

import argparse
import sys

from raykd.cli import run_job
from raykd.commands import describe, method_rows
from raykd.recipes import bundled_path, recipe_names

PROG = "raykd run"


def recipe_header(method: str) -> str:
    """The leading `#` comment of a method's bundled recipe, as plain lines."""
    lines = []
    for line in bundled_path(method).read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].strip())
    return "\n".join(lines)


def method_help(method: str, prog: str) -> str:
    """The help text of one method job: its recipe's header, then how to run it."""
    examples = [("", f"the bundled recipe, raykd/recipes/{method}.yaml"),
                ("--quick", "a smoke run: a few steps on short passages"),
                ("--full", "every labelled train query (709), one pass at lr 5e-5"),
                ("--print-recipe", "the resolved recipe, nothing run"),
                (f"train.lr=3e-5 name={method}-lr3e-5", "dotted overrides"),
                ("--recipe my_recipe.yaml", "another recipe, the same job")]
    width = max(len(f"{prog} {args}") for args, _ in examples) + 2
    shown = "\n".join(f"    {f'{prog} {args}'.rstrip():<{width}}# {what}"
                      for args, what in examples)
    return f"""{recipe_header(method)}

{shown}

Overrides are dotted `field=value` pairs (YAML values); `train.*`, `loss.*`, `teacher.*`,
`data.*`, `dark.*` and `eval.*` apply to every stage, `stages.N.field` to one. Outputs:
outputs/<name>/ (student, results.json, MLflow); a rerun with the same name resumes at the
first unfinished stage.
"""


def run_method(method: str, argv=None, prog: str | None = None) -> dict:
    """One method job: `raykd run <method> ...` and `python jobs/<method>.py ...`."""
    prog = prog or f"{PROG} {method}"
    return run_job(method_help(method, prog), f"{method}.yaml", argv, prog=prog)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    methods = recipe_names()
    listing = "\n".join(method_rows())
    p = argparse.ArgumentParser(
        prog=prog,
        usage=f"{prog} <method> [--quick | --full] [--name N] [--print-recipe] [--verbose] "
              "[overrides...]",
        description=describe(__doc__, PROG, prog), epilog=f"methods:\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("method", choices=methods, metavar="method", help=argparse.SUPPRESS)
    p.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p


def main(argv=None, prog: str = PROG) -> dict:
    args = build_parser(prog).parse_args(sys.argv[1:] if argv is None else argv)
    return run_method(args.method, args.args, prog=f"{prog} {args.method}")
