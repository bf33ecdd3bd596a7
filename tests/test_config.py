"""Recipes: YAML into typed configs, dotted overrides, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from raykd.config import load_recipe, recipe_from_dict
from raykd.errors import ConfigError
from raykd.recipes import RECIPES_DIR

RECIPES = sorted((Path(__file__).resolve().parents[1] / "raykd" / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_bundled_recipes_validate(path):
    """Guards the shipped recipes: every stage's loss builds, a loss that needs teacher scores
    has a teacher, and that teacher builds (models from the bundled files, BM25 over the
    stage's corpus) with a fingerprint that names its kind; an in-batch loss's teacher is one
    that can score online."""
    from raykd.data.beir import BeirDataset
    from raykd.losses import build_loss
    from raykd.students import resolve_model
    from raykd.teachers.factory import build_teacher
    from raykd.train.online_teacher import ONLINE_TEACHERS

    recipe = load_recipe(path)
    assert recipe.stages
    for stage in recipe.stages:
        loss = build_loss(stage.loss.name, **stage.loss.params)
        if getattr(loss, "needs_teacher", False):
            assert stage.teacher is not None, f"{path.name}: stage {stage.name} has no teacher"
        if stage.teacher is None:
            continue
        if getattr(loss, "in_batch", False):  # scored in the training step, by an online teacher
            assert stage.teacher.kind in ONLINE_TEACHERS, f"{path.name}: {stage.teacher.kind}"
            assert Path(resolve_model(stage.teacher.model)).is_dir()
            continue
        corpus = BeirDataset.from_dir(stage.data.dataset_dir()).corpus_path
        teacher = build_teacher(stage.teacher, str(corpus))
        assert teacher.fingerprint.startswith(stage.teacher.kind)


def test_overrides_reach_every_stage_or_one(tmp_path):
    """Guards dotted overrides: shortcuts fan out to all stages, indices pick one."""
    path = tmp_path / "r.yaml"
    path.write_text("name: r\nstages:\n  - {name: a}\n  - {name: b}\n")
    recipe = load_recipe(path, ["train.lr=3e-5", "stages.1.loss.params.temperature=2",
                                "student.num_layers=3", "name=other"])
    assert [s.train.lr for s in recipe.stages] == [3e-5, 3e-5]
    assert recipe.stages[1].loss.params == {"temperature": 2}
    assert recipe.stages[0].loss.params == {}
    assert recipe.student.num_layers == 3 and recipe.name == "other"


@pytest.mark.parametrize("override,field,hint", [
    (["train.lrr=1"], "stages.0.train.lrr", "unknown field"),
    (["train.backend=horovod"], "stages.0.train.backend", "ddp"),
    (["train.zero_stage=4"], "stages.0.train.zero_stage", "less than or equal to 3"),
    (["loss.name=nope"], "stages.0.loss", "margin_mse"),
    (["loss.params.gamma=-1"], "stages.0.loss", "gamma"),
    (["stages.3.train.lr=1"], "stages.3.train.lr", "not an index"),
    (["train.lr"], "train.lr", "field.path=value"),
    (["student.pooling=max"], "student.pooling", "mean"),
])
def test_invalid_recipe_fails_naming_the_field(tmp_path, override, field, hint):
    """Guards early validation: a bad value fails before any work, naming field and options."""
    path = tmp_path / "r.yaml"
    path.write_text("name: r\nstages:\n  - {name: a, loss: {name: ckl}}\n")
    with pytest.raises(ConfigError) as err:
        load_recipe(path, override)
    assert err.value.field == field
    assert hint in str(err.value)


def test_structural_errors_name_the_problem():
    """Guards recipe-level checks: no stages, duplicate names, incomplete teachers."""
    with pytest.raises(ConfigError, match="stages"):
        recipe_from_dict({"name": "r", "stages": []})
    with pytest.raises(ConfigError, match="unique"):
        recipe_from_dict({"name": "r", "stages": [{"name": "a"}, {"name": "a"}]})
    with pytest.raises(ConfigError, match="members"):
        recipe_from_dict({"name": "r", "stages": [{"name": "a", "teacher": {"kind": "ensemble"}}]})


def test_a_teacher_is_referenced_by_name_or_file_not_pasted(tmp_path):
    """Guards shared teacher definitions: `teacher: <bundled name>` or a spec file's path
    resolves to the file's spec, a field override after it edits that spec, and a name that
    is no file fails naming the stage's field and the bundled names."""
    from raykd.config import TeacherSpec, load_teacher_spec

    bundled = load_teacher_spec(RECIPES_DIR / "teachers" / "bm25_minilm.yaml")
    assert bundled.kind == "ensemble" and [m.kind for m in bundled.members] == ["bm25",
                                                                               "bi_encoder"]
    path = tmp_path / "r.yaml"
    path.write_text("name: r\nstages:\n  - {name: a, teacher: bm25_minilm, loss: {name: kl}}\n")
    assert load_recipe(path).stages[0].teacher == bundled

    own = tmp_path / "mine.yaml"
    own.write_text("teacher: {kind: bm25, k1: 0.9}\n")
    recipe = load_recipe(path, [f"teacher={own}", "teacher.b=0.4"])
    assert recipe.stages[0].teacher == TeacherSpec(kind="bm25", k1=0.9, b=0.4)

    with pytest.raises(ConfigError) as err:
        load_recipe(path, ["teacher=no_such_teacher"])
    assert err.value.field == "stages.0.teacher"
    assert "no_such_teacher" in str(err.value) and "bm25_minilm" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_recipe(path, ["teacher=no_such_teacher", "teacher.b=0.4"])
    assert "no_such_teacher" in str(err.value)


def test_dump_and_reload_round_trip(tmp_path):
    """Guards resolved-recipe files: what is written loads back to the same recipe."""
    from raykd.config import dump_recipe

    recipe = load_recipe(RECIPES[0], ["train.lr=1e-4"])
    dump_recipe(recipe, tmp_path / "resolved.yaml")
    assert load_recipe(tmp_path / "resolved.yaml") == recipe


def test_repeat_zero_leaves_a_stage_out():
    """Guards the ablation switch: `stages.N.repeat=0` drops that stage from the run, and a
    recipe with nothing left to run is refused."""
    from raykd.pipeline.runner import RecipeRunner

    recipe = load_recipe(RECIPES_DIR / "prod.yaml", ["stages.2.repeat=0"])
    assert [s.name for s in RecipeRunner(recipe).stages] == ["tpd-dense", "tpd-ensemble"]
    with pytest.raises(ConfigError, match="nothing to run"):
        load_recipe(RECIPES_DIR / "prod.yaml",
                    [f"stages.{i}.repeat=0" for i in range(3)])


@pytest.mark.parametrize("args,message", [
    (["--recipe", "nope.yaml"], "config field '--recipe': nope.yaml: no such recipe file"),
    (["data.dataset=/nonexistent/beir"], "config field 'stages.0.data.dataset': "
                                         "/nonexistent/beir: not a BEIR folder"),
    (["eval.split=dve"], "config field 'stages.0.eval.split': no qrels for split 'dve'"),
])
def test_a_job_with_bad_input_says_one_line_before_any_work(args, message, tmp_path):
    """Guards the user's path: a missing recipe, dataset folder or split is one line on
    stderr and exit 2, before Ray or MLflow start (so no run is created under its name)."""
    import subprocess
    import sys

    job = Path(__file__).resolve().parents[1] / "jobs" / "adam.py"
    done = subprocess.run([sys.executable, str(job), "--storage", str(tmp_path / "out"), *args],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: " + message), done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_user_error_unwraps_ray_task_errors():
    """A DataError raised inside a Ray task reaches the job as RayTaskError(...): the job
    prints the DataError's own line; any other exception is a bug and keeps its traceback."""
    from ray.exceptions import RayTaskError

    from raykd.errors import DataError, user_error

    bad = DataError("corpus.jsonl", 2, "_id", "duplicate id '7'")
    try:
        raise RuntimeError("wrapped") from RayTaskError("read", "tb", bad)
    except RuntimeError as err:
        assert user_error(err) is bad
    # Ray re-raises a task's error as a class that is both RayTaskError and the cause: the
    # job prints the cause's own line, not Ray's 'ray::task() (pid=...)' wrapper
    posing = RayTaskError("_fp", "tb", bad).as_instanceof_cause()
    assert isinstance(posing, DataError) and str(posing) != str(bad)
    assert user_error(posing) is bad
    assert user_error(RayTaskError("read", "tb", ValueError("bug"))) is None
    assert user_error(KeyError("x")) is None
