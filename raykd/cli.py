"""The command line shared by the method jobs: a recipe plus overrides. `raykd run <method>`
(raykd/commands/run.py) and the launchers `jobs/<method>.py` run it:

    raykd run margin_mse                                   # the bundled recipe
    raykd run margin_mse --quick                           # a tiny budget, for a smoke run
    raykd run margin_mse --full                            # every labelled query, lr 5e-5
    raykd run margin_mse train.lr=3e-5 loss.params.temperature=2 name=mm-lr3e-5
    raykd run margin_mse --recipe my_recipe.yaml
    python jobs/margin_mse.py --quick                      # the same job, from a checkout

Overrides are dotted `field=value` pairs (YAML values); `train.*`, `loss.*`, `teacher.*`,
`data.*`, `dark.*` and `eval.*` apply to every stage, `stages.N.field` to one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from raykd.config import Recipe, load_recipe
from raykd.data.beir import BeirDataset
from raykd.errors import ConfigError, DataError, one_line_errors
from raykd.recipes import require_file
from raykd.runtime import add_verbose_argument, init_ray, job_storage, setup_logging
from raykd.storage import is_uri

# Small budgets for smoke runs: a few steps, small lists, short passages, dev-only evaluation.
# A smoke run in minutes on a laptop CPU: 32 training queries, 8 steps, and a 2-layer student
# on short passages, so that encoding the corpus for the before/after evaluation is cheap.
# Its metrics show that the pipeline works, not what the method is worth.
QUICK_OVERRIDES = [
    "train.max_steps=8",
    "train.batch_size=4",
    "train.checkpoint_every=null",
    "data.num_negatives=3",
    "data.max_queries=32",
    "student.num_layers=2",
    "student.passage_max_length=96",
    "student.query_max_length=32",
    "eval.passage_max_length=128",
    "teacher_corpus_store=false",
]

# Every labelled train query: 709 queries, one pass of 88 steps of 8, at lr 5e-5 (what dev
# chose), instead of the recipes' shared 320-query, 40-step budget; `make run` is ADAM with it,
# 11 min from empty caches on 2 CPUs (README, "Quickstart" and "Distillation on SciFact").
FULL_OVERRIDES = [
    "train.lr=5e-5",
    "data.max_queries=null",
]
# The budget dev chose for the label-only and the KD students on SciFact: `--full` for three
# passes (264 steps) with passages at the evaluation length, 256 tokens (README, "Does
# distillation beat training on labels alone?"): 30 to 36 min a run alone on 2 CPUs.
LONG_OVERRIDES = [*FULL_OVERRIDES, "train.epochs=3", "student.passage_max_length=256"]
PRESETS = {"quick": QUICK_OVERRIDES, "full": FULL_OVERRIDES, "long": LONG_OVERRIDES}


def parse_args(description: str, default_recipe: str, argv=None,
               prog: str | None = None) -> argparse.Namespace:
    """`default_recipe`: a bundled recipe (`adam.yaml`, in raykd/recipes/)."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default=default_recipe,
                        help="a recipe YAML, or the name of a bundled one (`ckl`) "
                             f"(default: raykd/recipes/{default_recipe})")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--quick", action="store_true",
                        help="a tiny budget: a few steps on short passages (smoke run)")
    budget.add_argument("--full", action="store_true",
                        help="every labelled train query, one pass at lr 5e-5 (88 steps)")
    budget.add_argument("--long", action="store_true",
                        help="--full for three passes (264 steps) at 256 passage tokens")
    parser.add_argument("--name", default=None, help="run name (same name = resume)")
    parser.add_argument("--storage", default=None, help="output root (default: recipe storage)")
    parser.add_argument("--print-recipe", action="store_true",
                        help="print the resolved recipe and exit")
    add_verbose_argument(parser)
    parser.add_argument("overrides", nargs="*", help="dotted field=value overrides")
    return parser.parse_args(argv)


def resolve(args: argparse.Namespace) -> Recipe:
    preset = next((name for name in PRESETS if getattr(args, name)), None)
    overrides = [*PRESETS.get(preset, []), *args.overrides]
    if args.name:
        overrides.append(f"name={args.name}")
    elif preset:
        overrides.append(f"name={Path(args.recipe).stem}-{preset}")
    if args.storage:
        overrides.append(f"storage={job_storage(args.storage)}")
    recipe = load_recipe(args.recipe, overrides)
    storage = job_storage(recipe.storage)
    if storage != recipe.storage:  # a relative storage in Ray's working-dir copy of the code
        recipe = load_recipe(args.recipe, [*overrides, f"storage={storage}"])
    return recipe


def run_job(description: str, default_recipe: str, argv=None, prog: str | None = None) -> dict:
    """Parse, validate (before any work), run the recipe, print a summary."""
    args = parse_args(description, default_recipe, argv, prog)
    setup_logging(verbose_flag=args.verbose)
    with one_line_errors():  # before any work
        args.recipe = str(require_file(args.recipe, "recipe", "--recipe"))
        recipe = resolve(args)
        check_inputs(recipe)
    if args.print_recipe:
        print(f"recipe: {args.recipe}", file=sys.stderr)  # which file: the JSON is all stdout
        print(json.dumps(recipe.model_dump(mode="json"), indent=2))
        return {}
    from raykd.pipeline.runner import RecipeRunner

    init_ray()
    start = time.perf_counter()
    with one_line_errors():  # a bad input found mid-run
        summary = RecipeRunner(recipe).run()
    wall = time.perf_counter() - start
    print(f"\n[raykd] {recipe.name}: {len(recipe.stages)} stage(s) in {wall / 60:.1f} min")
    for split, metrics in summary.get("initial", {}).items():
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        print(f"  before {split:<5} {shown}")
    for stage in summary["stages"]:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in stage["metrics"].items())
        print(f"  stage {stage['name']:<20} steps {stage['steps']:>5}  {shown}")
    if summary["test"]:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in summary["test"].items())
        print(f"  after  test  {shown}")
    print(f"  student: {summary['student']}")
    where = recipe.run_dir() if is_uri(recipe.storage) else Path(recipe.run_dir()).resolve()
    print(f"  results: {where}")
    if recipe.tracking.enabled:
        model = summary.get("mlflow_model")
        print(f"  mlflow:  {tracking_uri(recipe)}" + (f" (student: {model})" if model else ""))
    summary["wall_seconds"] = wall
    return summary


def tracking_uri(recipe: Recipe) -> str:
    from raykd.tracking import resolve_tracking_uri

    return resolve_tracking_uri(recipe.tracking.tracking_uri, recipe.storage)


def check_inputs(recipe: Recipe) -> None:
    """Every stage's dataset folder and the qrels of the splits it reads exist, before Ray or
    MLflow start (a typo then costs nothing and leaves no half-started run behind)."""
    for i, stage in enumerate(recipe.stages):
        if stage.data.candidates:
            if not Path(stage.data.candidates).exists():
                raise ConfigError(f"stages.{i}.data.candidates",
                                  f"{stage.data.candidates} does not exist")
            continue
        try:
            dataset = BeirDataset.from_dir(stage.data.dataset_dir())
        except DataError as err:
            raise ConfigError(f"stages.{i}.data.dataset", str(err)) from None
        splits = {stage.data.split: "data.split", stage.eval.split: "eval.split"}
        if i == len(recipe.stages) - 1 and recipe.test_split:
            splits.setdefault(recipe.test_split, "test_split")
        for split, field in splits.items():
            if split and split not in dataset.splits():
                where = field if field == "test_split" else f"stages.{i}.{field}"
                raise ConfigError(where, f"no qrels for split {split!r} in {dataset.root} "
                                         f"(have {dataset.splits()})")
