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
    (["loss.name=kl", "loss.params.exclude_positives=true", "loss.params.positive_margin=1"],
     "stages.0.loss", "set positive_margin=null"),
    (["stages.3.train.lr=1"], "stages.3.train.lr", "not an index"),
    (["train.lr"], "train.lr", "field.path=value"),
    (["student.pooling=max"], "student.pooling", "mean"),
    (["data.holdout.folds=2", "data.holdout.fold=2"], "stages.0.data.holdout",
     "fold 2 does not exist among 2 folds"),
    (["data.holdout.folds=1", "data.holdout.fold=0"], "stages.0.data.holdout.folds",
     "greater than or equal to 2"),
    (["data.holdout.fold=0"], "stages.0.data.holdout.folds", "Field required"),
    (["data.mining_index=hnsw"], "stages.0.data.mining_index", "'ivf'"),
    (["data.mining_nprobe=0"], "stages.0.data.mining_nprobe", "greater than or equal to 1"),
])
def test_invalid_recipe_fails_naming_the_field(tmp_path, override, field, hint):
    """Guards early validation: a bad value fails before any work, naming field and options."""
    path = tmp_path / "r.yaml"
    path.write_text("name: r\nstages:\n  - {name: a, loss: {name: ckl}}\n")
    with pytest.raises(ConfigError) as err:
        load_recipe(path, override)
    assert err.value.field == field
    assert hint in str(err.value)


def test_mining_index_fields_leave_existing_candidate_cache_keys_unchanged():
    """Guards the candidate cache: the dense mining index fields enter a DataSpec's key only
    when set, so every recipe's mined candidates made before they existed are still found
    (the hashes below are the keys before the fields were added); a setting changes it."""
    from raykd.config import DataSpec
    from raykd.fingerprint import stable_hash

    assert stable_hash(DataSpec().labelled_key()) == "8a7e7064ab6542ef"
    adam = load_recipe(RECIPES_DIR / "adam.yaml").stages[0].data
    assert stable_hash(adam.labelled_key()) == "dcacd1f40119b704"
    assert stable_hash(DataSpec(mining_index="auto").labelled_key()) == "8a7e7064ab6542ef"
    changed = {stable_hash(DataSpec(mining_index="ivf").labelled_key()),
               stable_hash(DataSpec(mining_nprobe=128).labelled_key())}
    assert len(changed) == 2 and "8a7e7064ab6542ef" not in changed


def test_mining_resources_never_enter_the_candidate_cache_key():
    """Guards the candidate cache: where mining runs (encoder pool, GPUs, searcher CPUs) does
    not change what it mines, so the key is the one before the fields existed, at their
    defaults and set; a bad value is refused naming the field."""
    from raykd.config import DataSpec
    from raykd.fingerprint import stable_hash

    placed = DataSpec(mining_concurrency=8, mining_gpus_per_actor=1.0, mining_search_cpus=8)
    assert stable_hash(placed.labelled_key()) == "8a7e7064ab6542ef"
    assert stable_hash(DataSpec().labelled_key()) == "8a7e7064ab6542ef"
    with pytest.raises(ConfigError) as err:
        load_recipe(RECIPES_DIR / "adam.yaml", ["stages.0.data.mining_search_cpus=0"])
    assert err.value.field == "stages.0.data.mining_search_cpus"
    with pytest.raises(ConfigError, match="embedding_cache"):
        load_recipe(RECIPES_DIR / "adam.yaml", ["embedding_cache=s3://bucket/emb"])


def test_structural_errors_name_the_problem():
    """Guards recipe-level checks: no stages, duplicate names, incomplete teachers."""
    with pytest.raises(ConfigError, match="stages"):
        recipe_from_dict({"name": "r", "stages": []})
    with pytest.raises(ConfigError, match="unique"):
        recipe_from_dict({"name": "r", "stages": [{"name": "a"}, {"name": "a"}]})
    with pytest.raises(ConfigError, match="members"):
        recipe_from_dict({"name": "r", "stages": [{"name": "a", "teacher": {"kind": "ensemble"}}]})


TEACHER_KINDS = {
    "cross_encoder": ({"model": "m"}, "CrossEncoderTeacherSpec"),
    "bi_encoder": ({"model": "m"}, "BiEncoderTeacherSpec"),
    "late_interaction": ({"model": "m"}, "LateInteractionTeacherSpec"),
    "collective": ({"model": "m"}, "CollectiveTeacherSpec"),
    "bm25": ({}, "BM25TeacherSpec"),
    "precomputed": ({"path": "scores.tsv"}, "PrecomputedTeacherSpec"),
    "ensemble": ({"members": [{"kind": "bm25"}]}, "EnsembleTeacherSpec"),
    "cross_fit": ({"folds": [{"kind": "bm25"}, {"kind": "bm25", "k1": 0.9}]},
                  "CrossFitTeacherSpec"),
}


def _one_stage(teacher=None, student=None) -> dict:
    stage = {"name": "a", "loss": {"name": "kl"}, **({"teacher": teacher} if teacher else {})}
    return {"name": "r", "stages": [stage], **({"student": student} if student else {})}


@pytest.mark.parametrize("kind", sorted(TEACHER_KINDS))
def test_each_teacher_kind_parses_to_its_own_class(kind):
    """Guards the discriminated union: `kind` picks the spec class, which holds only that
    kind's fields (a bm25 spec has no `model`, an encoder spec no `k1`)."""
    from raykd.config import TEACHER_SPECS

    fields, name = TEACHER_KINDS[kind]
    teacher = recipe_from_dict(_one_stage({"kind": kind, **fields})).stages[0].teacher
    assert type(teacher).__name__ == name and type(teacher) is TEACHER_SPECS[kind]
    assert teacher.kind == kind and teacher.model_dump()["kind"] == kind
    assert ("k1" in type(teacher).model_fields) == (kind == "bm25")
    assert ("members" in type(teacher).model_fields) == (kind == "ensemble")


@pytest.mark.parametrize("teacher,student,field,hint", [
    ({"kind": "bi_encoder", "model": "m", "k1": 0.9}, None, "stages.0.teacher.k1",
     "only a bm25 teacher has `k1` (this teacher is bi_encoder)"),
    ({"kind": "bm25", "members": [{"kind": "bm25"}]}, None, "stages.0.teacher.members",
     "only an ensemble teacher has `members` (this teacher is bm25)"),
    ({"members": [{"kind": "bm25"}, {"kind": "bi_encoder", "model": "m", "prf": {}}]}, None,
     "stages.0.teacher.members.1.prf", "only a collective teacher has `prf`"),
    ({"kind": "bm25", "similarity": "cosine"}, None, "stages.0.teacher.similarity",
     "only a bi_encoder or late_interaction or collective teacher"),
    ({"kind": "bm25", "colour": 1}, None, "stages.0.teacher.colour", "unknown field"),
    ({"kind": "bm52"}, None, "stages.0.teacher.kind", "(got 'bm52')"),
    ({"kind": "cross_encoder"}, None, "stages.0.teacher.model", "Field required"),
    ({"kind": "collective", "model": "m", "similarity": "dot"}, None,
     "stages.0.teacher.similarity", "'cosine' or 'l2' (got 'dot')"),
    (None, {"kind": "late_interaction", "scale": 20.0}, "student.scale",
     "only a bi_encoder student has `scale` (this student is late_interaction)"),
    (None, {"kind": "bi_encoder", "projection_dim": 8}, "student.projection_dim",
     "only a late_interaction student has `projection_dim`"),
    (None, {"similarity": "l2"}, "student.similarity", "'dot' or 'cosine' (got 'l2')"),
])
def test_a_field_of_another_kind_fails_naming_it(teacher, student, field, hint):
    """Guards the per-kind specs: a field the kind does not have (also inside an ensemble
    member) is one ConfigError naming its path and the kinds that have it, not ignored."""
    with pytest.raises(ConfigError) as err:
        recipe_from_dict(_one_stage(teacher, student))
    assert err.value.field == field
    assert hint in str(err.value)
    assert "\n" not in str(err.value)


def test_default_kinds_and_nested_members_are_discriminated():
    """Guards the defaults: a teacher without `kind` is an ensemble, a student without it a
    bi-encoder; an ensemble's members are discriminated by their own kind."""
    from raykd.config import (
        BiEncoderStudentSpec,
        BiEncoderTeacherSpec,
        BM25TeacherSpec,
        EnsembleTeacherSpec,
        student_spec,
        teacher_spec,
    )

    recipe = recipe_from_dict(_one_stage(
        {"members": [{"kind": "bm25", "k1": 0.9},
                     {"kind": "bi_encoder", "model": "minilm", "scale": 20.0}]},
        {"model": "minilm", "scale": 20.0}))
    teacher = recipe.stages[0].teacher
    assert isinstance(teacher, EnsembleTeacherSpec)
    assert [type(m) for m in teacher.members] == [BM25TeacherSpec, BiEncoderTeacherSpec]
    assert teacher.members[0].k1 == 0.9 and teacher.members[1].scale == 20.0
    assert isinstance(recipe.student, BiEncoderStudentSpec) and recipe.student.scale == 20.0
    assert isinstance(recipe_from_dict(_one_stage()).student, BiEncoderStudentSpec)
    assert [p.kind for p in teacher.parts()] == ["ensemble", "bm25", "bi_encoder"]
    assert teacher_spec(members=[{"kind": "bm25"}]) == EnsembleTeacherSpec(
        kind="ensemble", members=[BM25TeacherSpec(kind="bm25")])
    assert student_spec().kind == "bi_encoder"


def test_kind_overrides_switch_the_spec(tmp_path):
    """Guards command-line kinds: `teacher.kind=bm25` on a referenced ensemble leaves a plain
    bm25 teacher (the ensemble's fields go, as the old flat spec ignored them), a member's
    kind and fields are overridden by index, and `student.kind` switches the student."""
    path = tmp_path / "r.yaml"
    path.write_text("name: r\nstages:\n  - {name: a, teacher: bm25_minilm, loss: {name: kl}}\n")
    assert load_recipe(path, ["teacher.kind=bm25", "teacher.k1=1.2"]).stages[0].teacher \
        .model_dump() == {"kind": "bm25", "batch_size": 32, "k1": 1.2, "b": 0.75}
    member = load_recipe(path, ["teacher.members.1.model=other",
                                "teacher.members.0.k1=1.1"]).stages[0].teacher.members
    assert (member[0].k1, member[1].model) == (1.1, "other")
    switched = load_recipe(path, ["teacher.members.1.kind=cross_encoder"]).stages[0].teacher
    assert switched.members[1].kind == "cross_encoder" and switched.members[1].model == "minilm"
    late = load_recipe(path, ["student.kind=late_interaction", "student.projection_dim=8"])
    assert late.student.kind == "late_interaction" and late.student.projection_dim == 8
    with pytest.raises(ConfigError) as err:
        load_recipe(path, ["teacher.members.1.k1=2"])
    assert err.value.field == "stages.0.teacher.members.1.k1"


def test_cache_keys_of_specs_keep_their_flat_form():
    """Guards the caches built before the specs were split per kind: `spec_key` is the flat
    spec's dump (every kind's fields at their defaults), so the bundled teacher's key is the
    one it always had; and a run's recipe.yaml saved in that flat form loads again."""
    from raykd.config import load_teacher_spec, spec_key, without_flat_defaults
    from raykd.fingerprint import stable_hash

    spec = load_teacher_spec(RECIPES_DIR / "teachers" / "bm25_minilm.yaml")
    assert stable_hash(spec_key(spec)) == "de0f5e75b4ee9f61"
    assert stable_hash(spec_key(spec, exclude={"batch_size"})) == "d95c6b6018037763"
    recipe = load_recipe(RECIPES_DIR / "adam.yaml")
    assert stable_hash(spec_key(recipe.student)) == "72fc6c9051251ff5"
    flat = recipe.model_dump(mode="json")
    flat["student"] = spec_key(recipe.student)
    flat["stages"][0]["teacher"] = spec_key(spec)
    with pytest.raises(ConfigError, match="only a late_interaction student has `projection_dim`"):
        recipe_from_dict(flat)
    assert recipe_from_dict(without_flat_defaults(flat)) == recipe


def test_a_teacher_is_referenced_by_name_or_file_not_pasted(tmp_path):
    """Guards shared teacher definitions: `teacher: <bundled name>` or a spec file's path
    resolves to the file's spec, a field override after it edits that spec, and a name that
    is no file fails naming the stage's field and the bundled names."""
    from raykd.config import load_teacher_spec, teacher_spec

    bundled = load_teacher_spec(RECIPES_DIR / "teachers" / "bm25_minilm.yaml")
    assert bundled.kind == "ensemble" and [m.kind for m in bundled.members] == ["bm25",
                                                                               "bi_encoder"]
    path = tmp_path / "r.yaml"
    path.write_text("name: r\nstages:\n  - {name: a, teacher: bm25_minilm, loss: {name: kl}}\n")
    assert load_recipe(path).stages[0].teacher == bundled

    own = tmp_path / "mine.yaml"
    own.write_text("teacher: {kind: bm25, k1: 0.9}\n")
    recipe = load_recipe(path, [f"teacher={own}", "teacher.b=0.4"])
    assert recipe.stages[0].teacher == teacher_spec(kind="bm25", k1=0.9, b=0.4)

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
