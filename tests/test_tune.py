"""Ray Tune sweeps: space syntax, validation before any trial, and a real 2-trial ASHA sweep."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from raykd.errors import ConfigError
from raykd.tune.space import as_overrides, grid_trials, parse_space, random_trials
from raykd.tune.sweep import SweepOptions, plan_sweep


def toy_sweep_data(root) -> str:
    """The toy BEIR set with 24 dev queries (3 per topic), so the dev probe is fine-grained."""
    from conftest import write_toy_beir

    root = Path(write_toy_beir(root, queries_per_topic=8))
    rows = {"dev": [], "train": []}
    for line in (root / "qrels" / "dev.tsv").read_text().splitlines()[1:]:
        rows["dev"].append(line)
    for line in (root / "qrels" / "train.tsv").read_text().splitlines()[1:]:
        q = int(line.split("\t")[0].rsplit("-q", 1)[1])
        rows["dev" if q in (2, 3) else "train"].append(line)
    for split, lines in rows.items():
        (root / "qrels" / f"{split}.tsv").write_text(
            "\n".join(["query-id\tcorpus-id\tscore", *lines]) + "\n")
    return str(root)


def write_base_recipe(path: Path, dataset: str, encoder: str, storage: Path, uri: str) -> Path:
    import yaml

    recipe = {
        "name": "toy-ckl", "method": "ckl", "storage": str(storage),
        "student": {"model": encoder, "pooling": "mean", "similarity": "dot",
                    "passage_max_length": 24, "query_max_length": 12},
        "stages": [{
            "name": "distill", "teacher": {"kind": "bm25"},
            "data": {"dataset": dataset, "split": "train", "negatives_from": "bm25",
                     "depth": 10, "num_negatives": 3},
            "loss": {"name": "ckl", "params": {"gamma": 2.0, "alpha": 1.0, "temperature": 1.0}},
            "train": {"batch_size": 4, "max_steps": 8, "lr": 1e-3, "log_every": 4},
            "eval": {"split": "dev", "k": 10}}],
        "tracking": {"tracking_uri": uri, "experiment": "sweeps"},
    }
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def test_space_syntax_cli_and_yaml():
    """Guards the documented domains: choice/uniform/loguniform/randint, constants, YAML
    lists and mappings, and override text that reads back as the same float."""
    dims = parse_space(["loss.params.temperature=choice:[0.5,1,2]",
                        "train.lr=loguniform:1e-5:1e-4", "train.seed=7"],
                       {"loss.params.gamma": [1, 2], "data.num_negatives": {"randint": [3, 8]}})
    kinds = {d.field: d.kind for d in dims}
    assert kinds == {"loss.params.gamma": "choice", "data.num_negatives": "randint",
                     "loss.params.temperature": "choice", "train.lr": "loguniform",
                     "train.seed": "choice"}
    samples = random_trials(dims, 20, seed=3)
    assert samples == random_trials(dims, 20, seed=3)  # seeded
    assert all(1e-5 <= s["train.lr"] <= 1e-4 and 3 <= s["data.num_negatives"] < 8
               for s in samples)
    assert as_overrides({"train.lr": 1e-05}) == ["train.lr=1.0e-05"]
    from raykd.config import parse_value

    assert parse_value(as_overrides({"x": 1e-05})[0].split("=")[1]) == 1e-05
    with pytest.raises(ConfigError, match="grid search takes choices only"):
        grid_trials(dims)
    with pytest.raises(ConfigError, match="space.train.lr"):
        parse_space(["train.lr=loguniform:0:1e-4"])
    with pytest.raises(ConfigError, match="unknown domain 'normal'"):
        parse_space([], {"train.lr": {"normal": [0, 1]}})


def test_a_bad_sampled_field_fails_before_any_trial(tmp_path, toy_beir_dir, tiny_encoder_dir):
    """Guards eager validation: every planned trial goes through the recipe validation; the
    error names the field and the trial, and nothing is written."""
    recipe = write_base_recipe(tmp_path / "r.yaml", toy_beir_dir, tiny_encoder_dir,
                               tmp_path / "out", "sqlite:///" + str(tmp_path / "m.db"))
    dims = parse_space(["train.batch_size=choice:[4,0]"])
    with pytest.raises(ConfigError, match=r"stages\.0\.train\.batch_size.*trial 1"):
        plan_sweep(SweepOptions(recipe=str(recipe), name="bad", dims=dims))
    dims = parse_space(["loss.params.temperature=uniform:-1:2"])
    with pytest.raises(ConfigError, match="temperature"):
        plan_sweep(SweepOptions(recipe=str(recipe), name="bad", dims=dims, search="random"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad,field", [({"probe_every": 0}, "probe_every"),
                                       ({"reduction_factor": 1}, "reduction_factor"),
                                       ({"search": "bayes"}, "search"),
                                       ({"probe_source": "dense"}, "probe_source"),
                                       ({"trial_cpus": 0}, "trial_cpus"),
                                       ({"max_concurent": 2}, "max_concurent"),
                                       ({"select": "test"}, "select"),
                                       ({"seeds": []}, "seeds"),
                                       ({"seeds": [13, 13]}, "seeds"),
                                       ({"seeds": [13, 14], "search": "optuna"}, "seeds"),
                                       ({"seeds": [13, 14], "dims": parse_space(
                                           ["data.seed=choice:[1,2]"])}, "seeds")])
def test_sweep_options_are_validated_on_construction(bad, field):
    """Guards the validated sweep spec: a bad value or a misspelt key is a ConfigError naming
    the field, before any plan is made; defaults follow the search."""
    with pytest.raises(ConfigError) as err:
        SweepOptions(**{"recipe": "r.yaml", "name": "s", "dims": [], **bad})
    assert err.value.field == field
    assert SweepOptions(recipe="r.yaml", name="s", dims=[]).num_samples == 1
    assert SweepOptions(recipe="r.yaml", name="s", dims=[], search="random").num_samples == 8


def test_selecting_by_dev_picks_the_finished_trial_with_the_best_full_dev_retrieval(tmp_path):
    """Guards `select="dev"`: the trials run the recipe's dev evaluation, the dev measure is
    read from each run's results.json (last stage), and the best trial is the completed one
    with the highest dev value, whatever the probe says; a stopped trial or one without a dev
    value is never chosen."""
    from raykd.tune.sweep import best_config, dev_measure, group_configs

    def run(name: str, stages: list[dict] | None) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        if stages is not None:
            (folder / "results.json").write_text(json.dumps({"stages": stages}))
        return folder

    two_stages = [{"metrics": {"nDCG@10": 0.9}}, {"metrics": {"nDCG@10": 0.61, "RR@10": 0.5}}]
    assert dev_measure(run("t00", two_stages), "nDCG@10") == pytest.approx(0.61)
    assert dev_measure(run("t01", [{"metrics": {"nDCG@10": 0.64}}]), "nDCG@10") == 0.64
    assert dev_measure(run("t02", [{"metrics": {}}]), "nDCG@10") is None  # no evaluation
    assert dev_measure(run("t03", None), "nDCG@10") is None  # stopped: no results.json

    rows = [{"trial": f"t0{i}", "status": status, "values": {"train.lr": i},
             "probe/nDCG@10": probe, "dev/nDCG@10": dev}
            for i, (status, probe, dev) in enumerate([("completed", 0.70, 0.61),
                                                      ("completed", 0.66, 0.64),
                                                      ("completed", 0.71, None),
                                                      ("stopped", 0.69, 0.70),
                                                      ("error", 0.90, 0.90)])]
    keys = ["probe/nDCG@10", "dev/nDCG@10"]

    def best(rows, key):
        chosen = best_config(group_configs(rows, keys), key)
        return chosen and chosen["trials"]

    assert best(rows, "dev/nDCG@10") == ["t01"]
    assert best(rows, "probe/nDCG@10") == ["t02"]
    assert best(rows[3:], "dev/nDCG@10") == ["t03"]  # no completed one with a value
    assert best(rows[4:], "dev/nDCG@10") is None


def test_seeds_run_every_config_at_each_seed_and_pick_the_best_mean(
        tmp_path, toy_beir_dir, tiny_encoder_dir):
    """Guards `seeds`: each config is planned once per seed with every seeded field of every
    stage set to it, and the best config is the one with the highest mean over its seeds, not
    the one with the best single seed; a config missing a seed's value is passed over."""
    from raykd.config import SEEDED_FIELDS
    from raykd.tune.sweep import _validate, best_config, group_configs

    recipe = write_base_recipe(tmp_path / "r.yaml", toy_beir_dir, tiny_encoder_dir,
                               tmp_path / "out", "sqlite:///" + str(tmp_path / "m.db"))
    dims = parse_space(["loss.params.temperature=choice:[1,2]"])
    plan = plan_sweep(SweepOptions(recipe=str(recipe), name="s", dims=dims, seeds=[13, 14, 15]))
    assert [(t["loss.params.temperature"], t["train.seed"]) for t in plan.trials] == [
        (1, 13), (1, 14), (1, 15), (2, 13), (2, 14), (2, 15)]
    assert "seeds: 13, 14, 15: each config at every seed" in plan.describe()
    stage = _validate(plan.options, plan.trials[4], "4").stages[0]
    assert (stage.data.seed, stage.data.pseudo.seed, stage.dark.seed, stage.train.seed,
            stage.loss.params["temperature"]) == (14, 14, 14, 14, 2)
    assert not (tmp_path / "out").exists()

    key = "dev/nDCG@10"
    rows = [{"trial": f"t0{i}", "status": "completed", key: dev,
             "values": {"loss.params.temperature": temperature,
                        **dict.fromkeys(SEEDED_FIELDS, seed)}}
            for i, (temperature, seed, dev) in enumerate([
                (1, 13, 0.75), (1, 14, 0.60), (1, 15, 0.61),  # the best seed, mean 0.6533
                (2, 13, 0.70), (2, 14, 0.69), (2, 15, 0.68)])]  # mean 0.69
    configs = group_configs(rows, [key])
    assert [c["trials"] for c in configs] == [["t00", "t01", "t02"], ["t03", "t04", "t05"]]
    assert configs[1][key] == pytest.approx(0.69)
    assert configs[1][f"{key} sd"] == pytest.approx(0.01)
    assert best_config(configs, key)["values"] == {"loss.params.temperature": 2}
    rows[4].update(status="stopped", **{key: None})  # ASHA stopped one seed of config 2
    configs = group_configs(rows, [key])
    assert (configs[1]["status"], configs[1][key]) == ("stopped", None)
    assert best_config(configs, key)["values"] == {"loss.params.temperature": 1}


def test_seeds_from_the_command_line_or_the_space_file(tmp_path):
    """Guards the CLI: `--seeds 13,14` or a space file's `seeds:` runs each config at those
    seeds (the command line wins); a bad list is a one-line usage error."""
    from raykd.commands.tune import build_parser, options_from_args

    args = build_parser().parse_args(["--space", "adam_dark_scifact", "--seeds", "13,14"])
    plan = plan_sweep(options_from_args(args))
    assert plan.options.seeds == [13, 14] and len(plan.trials) == 8
    space = tmp_path / "space.yaml"
    space.write_text("recipe: adam\nseeds: [13, 14, 15]\nspace:\n  dark.rho_mix: [0.3, 0.5]\n")
    assert options_from_args(build_parser().parse_args(["--space", str(space)])).seeds == [
        13, 14, 15]
    with pytest.raises(SystemExit) as err:
        build_parser().parse_args(["--space", str(space), "--seeds", "13,x"])
    assert err.value.code == 2

    dev = SweepOptions(recipe="r.yaml", name="s", dims=[], select="dev")
    probe = SweepOptions(recipe="r.yaml", name="s", dims=[])
    assert dev.selection_metric == "dev/nDCG@10" and probe.selection_metric == "probe/nDCG@10"
    assert "eval.split=null" in probe.trial_base() and "eval.split=null" not in dev.trial_base()


def _at(node: dict, field: str):
    for key in field.split("."):
        node = node[key]
    return node


@pytest.mark.parametrize("space", sorted(
    p.name for p in (Path(__file__).parents[1] / "raykd" / "recipes" / "spaces").glob("*.yaml")))
def test_bundled_space_files_plan_and_every_trial_carries_its_values(space):
    """Guards the shipped sweeps: each space file parses, plans one trial per point of its
    grid, and each trial's recipe holds its swept values (on every stage) and the space's own
    trial-only overrides."""
    from raykd.commands.tune import build_parser, options_from_args
    from raykd.recipes import bundled_path
    from raykd.tune.sweep import _validate

    # by its bare name, as the README gives it; the space names its recipe by name too
    args = build_parser().parse_args(["--space", Path(space).stem])
    plan = plan_sweep(options_from_args(args))
    raw = yaml.safe_load(bundled_path(Path(space).stem, "space").read_text())
    assert Path(plan.options.recipe) == bundled_path(raw["recipe"])
    assert raw["search"] == "grid" and set(raw["space"]) == {d.field for d in plan.options.dims}
    assert len(plan.trials) == math.prod(len(d.values) for d in plan.options.dims) >= 4
    assert len({tuple(sorted(t.items())) for t in plan.trials}) == len(plan.trials)
    for i, values in enumerate(plan.trials):
        recipe = _validate(plan.options, values, str(i)).model_dump(mode="json")
        for field, value in values.items():
            for stage in recipe["stages"]:
                assert _at(stage, field) == pytest.approx(value), (space, i, field)
        for item in raw["trial_overrides"]:
            field, _, value = item.partition("=")
            expected = yaml.safe_load(value)
            if field in recipe:
                assert recipe[field] == expected, (space, field)
            else:
                assert all(_at(stage, field) == expected for stage in recipe["stages"]), field


def test_two_trial_asha_sweep_shares_the_cache_and_its_best_recipe_reruns(
        ray_local, mlflow_server, tmp_path, tiny_encoder_dir, tmp_path_factory):
    """Guards the sweep end to end on real Ray, Tune, Train and MLflow: 2 grid trials over a
    temperature (a loss weight swept as a one-value choice), ASHA on the dev probe stops the
    second early (one trial at a time, one seeded worker: the probe values are reproducible,
    and the temperature-20 trial, run last, falls below the median of the first rung: measured
    0.566 against 0.571 with 4 trials, when the test took 305 s of the suite); no
    trial scores a teacher pair (the warm-up scored each once into the shared cache); one MLflow
    parent run with a nested child per trial; the best recipe reruns through the CKL job."""
    from mlflow.tracking import MlflowClient

    from raykd.cli import run_job
    from raykd.tune.sweep import run_sweep

    dataset = toy_sweep_data(tmp_path_factory.mktemp("toy_sweep"))
    storage = tmp_path / "out"
    recipe = write_base_recipe(tmp_path / "toy.yaml", dataset, tiny_encoder_dir, storage,
                               mlflow_server)
    # grid order: the temperature-20 trial comes last
    dims = parse_space(["loss.params.temperature=choice:[1,20]",
                        "loss.params.alpha=choice:[1]"])
    options = SweepOptions(recipe=str(recipe), name="toy", dims=dims, search="grid",
                           probe_every=1, probe_depth=10, probe_queries=None, grace_period=1,
                           reduction_factor=2, max_concurrent=1, trial_cpus=1,
                           teacher_concurrency=1, select="dev")
    summary = run_sweep(plan_sweep(options), echo=lambda line: None)
    metric = summary["metric"]
    rows = summary["trials"]
    assert len(rows) == 2 and not [r for r in rows if r["status"] == "error"], rows

    # ASHA: at least one trial stopped before the last probe, and completed ones ran all 8
    stopped = [r for r in rows if r["status"] == "stopped"]
    completed = [r for r in rows if r["status"] == "completed"]
    assert stopped, [(r["trial"], r["history"]) for r in rows]
    assert completed and all(r["iterations"] == summary["max_probes"] == 8 for r in completed)
    assert all(r["iterations"] < summary["max_probes"] for r in stopped)

    # one shared cache: the warm-up scored every pair once, the trials read them all
    (warm,) = summary["warm_up"].values()
    assert warm["scoring"][0]["pairs_scored"] > 0
    assert summary["cache_after"] == summary["cache_before"]
    for row in completed:
        assert row["pairs_scored"] == 0 and row["pairs_cached"] == warm["scoring"][0]["pairs"]
    assert len(list((storage / "candidates").glob("train-bm25-*"))) == 1

    # MLflow: a parent run, one nested child per trial with its values and probe history
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("sweeps")
    (parent,) = client.search_runs([exp.experiment_id], "tags.`raykd.kind` = 'sweep'")
    children = client.search_runs([exp.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(c.data.tags["raykd.run"] for c in children) == [f"toy-t0{i}" for i in range(2)]
    for child in children:
        row = next(r for r in rows if r["trial"] == child.data.tags["raykd.run"])
        assert child.data.params["trial.loss.params.temperature"] == str(
            row["values"]["loss.params.temperature"])
        assert child.data.tags["sweep.status"] == row["status"]
        history = client.get_metric_history(child.info.run_id, "probe/nDCG_at_10")
        logged = [m.value for m in sorted(history, key=lambda m: m.step)]
        # Every probe Tune saw is in MLflow; a stopped trial may log one more, measured
        # between ASHA's decision and the trial's end.
        assert logged[:len(row["history"])] == pytest.approx(row["history"])
        assert len(row["history"]) <= len(logged) <= len(row["history"]) + 1
    assert parent.data.metrics[f"best/{metric.replace('@', '_at_')}"] == pytest.approx(
        summary["best"][metric])

    # select="dev": the finished trial ran the full dev retrieval and was chosen by it
    assert summary["selected_by"] == "dev/nDCG@10"
    for row in completed:
        results = json.loads((storage / row["trial"] / "results.json").read_text())
        assert row["dev/nDCG@10"] == pytest.approx(results["stages"][-1]["metrics"]["nDCG@10"])
    assert summary["best"]["trials"] in [[r["trial"]] for r in completed]
    assert parent.data.metrics["best/dev/nDCG_at_10"] == pytest.approx(
        summary["best"]["dev/nDCG@10"])

    # the best recipe is a plain recipe with the base budget and evaluation, and it reruns
    best = Path(summary["best"]["recipe"])
    assert best.exists()
    result = run_job("CKL", "ckl.yaml", ["--recipe", str(best)])
    assert result["stages"][0]["steps"] == 8 and "nDCG@10" in result["test"]
    saved = json.loads((storage / "toy-best" / "results.json").read_text())
    assert saved["recipe"] == "toy-best"
    from raykd.config import load_recipe

    params = load_recipe(best).stages[0].loss.params
    assert params["temperature"] == summary["best"]["values"]["loss.params.temperature"]
    assert params["alpha"] == summary["best"]["values"]["loss.params.alpha"]
    assert load_recipe(best).stages[0].eval.split == "dev"  # the base evaluation, not the trials'
