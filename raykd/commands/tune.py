"""Ray Tune sweeps over any recipe field, with ASHA on a periodic dev probe.

A recipe, a search space, the search, ASHA and the resources:

    raykd tune --space ckl_scifact --print-plan     # a bundled space, by name: validate, list
    raykd tune --space ckl_scifact                  # run the sweep
    raykd tune --recipe ckl --name ckl-t \\
        'loss.params.temperature=choice:[0.5,1,2]' 'loss.params.gamma=choice:[1,2]'
    raykd tune --recipe my_recipe.yaml --search random --num-samples 8 \\
        train.lr=loguniform:1e-5:1e-4 stages.0.loss.params.temperature=uniform:0.5:4

Positional items: `field=<domain>` is a search dimension (domains: choice:[a,b,...],
uniform:lo:hi, loguniform:lo:hi, randint:lo:hi); any other `field=value` is a recipe override
for every trial and the best recipe. `--trial-override field=value` applies to trials only
(e.g. a shorter budget). Fields are the recipe's dotted paths: `train.*`, `loss.*`,
`teacher.*`, `data.*`, `dark.*`, `eval.*` apply to every stage, `stages.N.field` to one.
Outputs: <storage>/sweeps/<name>/trials.json and best_recipe.yaml (run it with `raykd run
<method> --recipe`), one MLflow parent run with a child run per trial.

`--space` and `--recipe` (and a space file's `recipe:`) take a file or the name of a bundled
one (raykd/recipes/spaces/, raykd/recipes/). A space file (YAML) holds the same settings;
command-line options win over it:

    recipe: ckl                   # a recipe file, or a bundled recipe's name
    name: ckl-scifact-sweep
    search: grid                  # grid | random | optuna
    num_samples: 1                # random/optuna: trials; grid: repeats
    seeds: [13, 14, 15]           # optional: each config at every seed, the best by the mean
    overrides: []                 # trials and the best recipe
    trial_overrides: [train.max_steps=24]
    probe: {every: 6, depth: 20, queries: 50, source: bm25}
    asha: {grace_period: 1, reduction_factor: 2}
    select: probe                 # the best trial by its last probe, or dev: by full dev
                                  # retrieval of the trials that finish
    resources: {trial_cpus: 1, max_concurrent: 1, teacher_concurrency: 1}
    space:
      stages.0.loss.params.temperature: "choice:[0.5, 1, 2, 4]"
      loss.params.gamma: [0.5, 2]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from raykd.commands import describe
from raykd.errors import ConfigError, one_line_errors
from raykd.recipes import require_file
from raykd.runtime import (
    add_verbose_argument,
    in_ray_working_dir,
    init_ray,
    job_storage,
    setup_logging,
)
from raykd.tune.space import KINDS, parse_space
from raykd.tune.sweep import SweepOptions, plan_sweep, run_sweep

SECTIONS = {"probe": {"every": "probe_every", "depth": "probe_depth", "queries": "probe_queries",
                      "source": "probe_source", "measure": "measure"},
            "asha": {"grace_period": "grace_period", "reduction_factor": "reduction_factor"},
            "resources": {"trial_cpus": "trial_cpus", "trial_workers": "trial_workers",
                          "max_concurrent": "max_concurrent",
                          "teacher_concurrency": "teacher_concurrency"}}
TOP_KEYS = {"recipe", "name", "search", "num_samples", "seed", "seeds", "overrides",
            "trial_overrides", "space", "full_eval", "select", *SECTIONS}


PROG = "raykd tune"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=describe(__doc__, PROG, prog),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", help="a space file (YAML, above) or a bundled space's name")
    p.add_argument("--recipe", help="base recipe YAML or a bundled recipe's name (default: the "
                                    "space file's)")
    p.add_argument("--name", help="sweep name: trials are <name>-tNN, results in "
                                  "<storage>/sweeps/<name>/")
    p.add_argument("--search", choices=["grid", "random", "optuna"])
    p.add_argument("--num-samples", type=int, help="random/optuna trials (grid: repeats)")
    p.add_argument("--seed", type=int, help="random search's draws, optuna's sampler (0)")
    p.add_argument("--seeds", type=_seed_list, metavar="S1,S2,...",
                   help="run every config at each seed (its sampled queries, negatives, data "
                        "order and dropout) and pick the best by its mean over them")
    p.add_argument("--trial-cpus", type=float, help="CPUs per training worker of a trial (1)")
    p.add_argument("--trial-workers", type=int, help="training workers per trial (1)")
    p.add_argument("--max-concurrent", type=int, help="trials running at once (1)")
    p.add_argument("--teacher-concurrency", type=int,
                   help="teacher-scoring / encoding actors, warm-up and trials (1)")
    p.add_argument("--probe-every", type=int, help="steps between dev probes (10)")
    p.add_argument("--probe-depth", type=int, help="first-stage candidates per dev query (20)")
    p.add_argument("--probe-queries", type=int, help="dev queries sampled for the probe (50)")
    p.add_argument("--probe-source", choices=["bm25", "union"])
    p.add_argument("--grace-period", type=int, help="ASHA: probes before a trial may stop (1)")
    p.add_argument("--reduction-factor", type=int, help="ASHA reduction factor (2)")
    p.add_argument("--full-eval", action="store_true", default=None,
                   help="also run each stage's full-retrieval dev evaluation in trials")
    p.add_argument("--select", choices=["probe", "dev"],
                   help="the best trial: the highest last probe (probe, the default), or the "
                        "highest full dev retrieval of the trials that finish (dev: they run "
                        "the recipe's dev evaluation)")
    p.add_argument("--trial-override", action="append", default=[], metavar="FIELD=VALUE",
                   help="an override for trials only (repeatable)")
    p.add_argument("--storage", help="output root (default: the recipe's storage)")
    p.add_argument("--print-plan", action="store_true",
                   help="validate every trial, print the plan and exit (no Ray)")
    p.add_argument("items", nargs="*", help="field=<domain> dimensions and field=value overrides")
    add_verbose_argument(p)
    return p


def _seed_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"a comma-separated list of integers, got {text!r}"
                                         ) from None


def _is_dimension(item: str) -> bool:
    value = item.split("=", 1)[1] if "=" in item else ""
    return value.split(":", 1)[0].strip() in KINDS and ":" in value


def options_from_args(args: argparse.Namespace) -> SweepOptions:
    """Space file first, then the command line; validates names and the space."""
    file: dict = {}
    if args.space:
        file = yaml.safe_load(require_file(args.space, "space", "--space").read_text()) or {}
        unknown = sorted(set(file) - TOP_KEYS)
        if unknown:
            raise ConfigError(unknown[0], f"unknown key in {args.space}; known: "
                                          f"{', '.join(sorted(TOP_KEYS))}")
    settings: dict = {}
    for section, keys in SECTIONS.items():
        for key, value in (file.get(section) or {}).items():
            if key not in keys:
                raise ConfigError(f"{section}.{key}", f"unknown; known: {', '.join(keys)}")
            settings[keys[key]] = value
    for key in ("search", "num_samples", "seed", "seeds", "full_eval", "select"):
        if key in file:
            settings[key] = file[key]
    for key in ("search", "num_samples", "seed", "seeds", "trial_cpus", "trial_workers",
                "max_concurrent", "teacher_concurrency", "probe_every", "probe_depth",
                "probe_queries", "probe_source", "grace_period", "reduction_factor", "full_eval",
                "select"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    recipe = args.recipe or file.get("recipe")
    if not recipe:
        raise ConfigError("recipe", "give --recipe or `recipe:` in the space file")
    dims_cli = [i for i in args.items if _is_dimension(i)]
    overrides = [*(file.get("overrides") or []), *(i for i in args.items if not _is_dimension(i))]
    name = args.name or file.get("name") or f"{Path(recipe).stem}-sweep"
    recipe_path = require_file(recipe, "recipe", "--recipe" if args.recipe else "recipe")
    if args.storage:
        overrides.append(f"storage={job_storage(args.storage)}")
    elif in_ray_working_dir():  # the recipe's relative storage: not in Ray's copy of the code
        from raykd.config import load_recipe

        storage = load_recipe(str(recipe_path), overrides).storage
        if job_storage(storage) != storage:
            overrides.append(f"storage={job_storage(storage)}")
    return SweepOptions(recipe=str(recipe_path), name=name,
                        dims=parse_space(dims_cli, file.get("space")), overrides=overrides,
                        trial_overrides=[*(file.get("trial_overrides") or []),
                                         *args.trial_override], **settings)


def _mean_sd(entry: dict, key: str) -> str:
    if entry.get(key) is None:
        return f"{key} -"
    sd = entry.get(f"{key} sd")
    return f"{key} {entry[key]:.4f}" + (f" +- {sd:.4f}" if sd is not None else "")


@one_line_errors()
def main(argv=None, prog: str = PROG) -> dict:
    args = build_parser(prog).parse_args(argv)
    setup_logging(verbose_flag=args.verbose)
    try:
        plan = plan_sweep(options_from_args(args))
    except (ConfigError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.print_plan:
        print(plan.describe())
        return {}
    init_ray()
    summary = run_sweep(plan)
    metric, chosen = summary["metric"], summary["selected_by"]
    print(f"\n[raykd] sweep {summary['sweep']}: {len(summary['trials'])} trial(s), the best "
          f"by {chosen}")
    for row in summary["trials"]:
        shown = " ".join(f"{k}={v}" for k, v in row["values"].items())
        values = "  ".join(f"{k} {row[k]:.4f}" if row.get(k) is not None else f"{k} -"
                           for k in dict.fromkeys([metric, chosen]))
        print(f"  {row['trial']:<28} {row['status']:<9} {values}  {shown}")
    if any(len(c["trials"]) > 1 for c in summary["configs"]):
        print("  configs (mean +- sd over their trials):")
        for config in summary["configs"]:
            shown = " ".join(f"{k}={v}" for k, v in config["values"].items())
            values = "  ".join(_mean_sd(config, k) for k in dict.fromkeys([metric, chosen]))
            print(f"  {'+'.join(config['trials']):<28} {config['status']:<9} {values}  {shown}")
    if summary["best"]:
        print(f"  best: {' '.join(summary['best']['trials'])} -> {summary['best']['recipe']}")
    print(json.dumps({"trials": str(Path(summary['best']['recipe']).parent / 'trials.json')
                      if summary["best"] else None}))
    return summary
