"""The `raykd` command and its launchers: one code path per job, the listing in `raykd --help`,
bundled files by bare name, and evaluate's qrels check before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from raykd.commands import COMMANDS, summary
from raykd.errors import ConfigError
from raykd.recipes import bundled_file, bundled_names, bundled_path, require_file
from raykd.recipes import summary as recipe_summary

ROOT = Path(__file__).resolve().parents[1]
METHODS = bundled_names("recipe")
TOOLS = [name for name in COMMANDS if name != "run"]


def _run(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env={**os.environ, **(env or {})})


def test_the_methods_are_the_bundled_recipes():
    """Guards the method list: one per packaged recipe, each with a one-line summary, and the
    launchers jobs/<method>.py are exactly these (plus the tools' launchers)."""
    assert METHODS == ["adam", "ckl", "collective_kd", "contrastive", "corpus_kd", "margin_mse",
                       "prod"]
    launchers = sorted(p.stem for p in (ROOT / "jobs").glob("*.py"))
    assert launchers == sorted([*METHODS, *(COMMANDS[t] for t in TOOLS)])
    for name in [*METHODS]:
        assert 0 < len(recipe_summary(name)) <= 80, name
    for name in TOOLS:
        assert 0 < len(summary(COMMANDS[name])) <= 80, name


def test_help_lists_every_method_and_tool_on_one_line_each():
    done = _run("-m", "raykd", "--help")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for name in METHODS:
        (line,) = [x for x in lines if x.split()[:1] == [name]]
        assert line.endswith(recipe_summary(name)), line
    for name in TOOLS:
        (line,) = [x for x in lines if x.split()[:1] == [name]]
        assert line.endswith(summary(COMMANDS[name])), line
    assert "raykd run <method>" in done.stdout


@pytest.mark.parametrize("args,message", [
    ([], "the following arguments are required: command"),
    (["trian"], "argument command: invalid choice: 'trian'"),
    (["run", "adm"], "argument method: invalid choice: 'adm'"),
    (["run", "adam", "--recipe", "nope"],
     "error: config field '--recipe': nope: no such recipe file (bundled recipes: adam, ckl"),
])
def test_bad_commands_are_one_line_and_exit_2(args, message):
    done = _run("-m", "raykd", *args)
    assert done.returncode == 2
    assert message in done.stderr.strip().splitlines()[-1], done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("args,field,message", [
    (["evaluate", "--data", "{missing}"], None, "not a BEIR folder"),
    (["rerank", "--data", "{missing}"], None, "not a BEIR folder"),
    (["rerank", "--teacher", "{missing}.yaml"], "teacher", "is neither a preset"),
    (["mine-negatives", "--data", "{missing}"], None, "not a BEIR folder"),
    (["train-teacher", "--data", "{missing}"], None, "not a BEIR folder"),
    (["train-teacher", "--distill-from", "ensemble"], "distill_weight", "--distill-weight > 0"),
    (["score-teacher", "--candidates", "{missing}", "--teacher-kind", "bm25"], "--candidates",
     "does not exist"),
    (["score-teacher", "--candidates", "{file}", "--teacher-kind", "bm25"], "--corpus",
     "pass --corpus"),
])
def test_every_tool_refuses_bad_input_in_one_line_before_ray(tmp_path, args, field, message):
    """Guards the one error style: a tool given a missing folder or file, or options that do
    not fit, prints one `error:` line naming the field or path and exits 2, with no traceback
    and before Ray starts (measured before: tracebacks of 20-90 lines, exit 1)."""
    missing, existing = tmp_path / "missing", tmp_path / "groups.jsonl"
    existing.write_text("")
    argv = [a.format(missing=missing, file=existing) for a in args]
    done = _run("-m", "raykd", *argv, env={"RAY_ADDRESS": ""})
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, done.stderr
    assert (f"config field '{field}'" in last) if field else (str(missing) in last), last
    assert "Traceback" not in done.stderr
    assert "Started a local Ray instance" not in done.stderr


def test_raykd_debug_keeps_the_traceback(tmp_path):
    """RAYKD_DEBUG=1 shows where a user error was raised (exit 1, the full traceback)."""
    done = _run("-m", "raykd", "evaluate", "--data", str(tmp_path / "missing"),
                env={"RAYKD_DEBUG": "1"})
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "raykd.errors.DataError" in done.stderr


@pytest.mark.parametrize("job,command", [("adam", ["run", "adam"]),
                                         ("score_teacher", ["score-teacher"]),
                                         ("evaluate", ["evaluate"])])
def test_launcher_and_command_are_one_job(job, command):
    """`python jobs/<job>.py --help` and `raykd <command> --help` are the same parser and text,
    but for the name each is called by (examples included)."""
    launcher = _run(f"jobs/{job}.py", "--help")
    tool = _run("-m", "raykd", *command, "--help")
    assert launcher.returncode == tool.returncode == 0
    prog = "raykd " + " ".join(command)
    assert prog in tool.stdout
    assert " ".join(launcher.stdout.split()) == " ".join(
        tool.stdout.replace(prog, f"python jobs/{job}.py").split())


def test_help_texts_name_files_that_exist_and_keep_their_continuations():
    """score-teacher's example names a bundled teacher that resolves; evaluate's example keeps
    its backslash line continuation (a non-raw docstring would join the two lines); a method's
    --recipe default names the packaged recipe."""
    score = _run("-m", "raykd", "score-teacher", "--help").stdout
    assert "--teacher bm25_contrastive" in score
    assert bundled_file("bm25_contrastive", "teacher") is not None
    assert "jobs/recipes" not in score
    evaluate = _run("-m", "raykd", "evaluate", "--help").stdout
    assert "--mask-punctuation \\\n        --query-max-length 64" in evaluate
    run = " ".join(_run("-m", "raykd", "run", "adam", "--help").stdout.split())
    assert "(default: raykd/recipes/adam.yaml)" in run


def test_bundled_files_resolve_by_bare_name_path_or_package_path(tmp_path, monkeypatch):
    from raykd.eval.rerank import resolve_teacher

    monkeypatch.chdir(tmp_path)  # no checkout-relative path works by accident
    assert bundled_file("ckl") == bundled_file("ckl.yaml") == bundled_path("ckl")
    assert bundled_file("raykd/recipes/ckl.yaml") == bundled_path("ckl")
    assert bundled_file("ckl_scifact", "space") == bundled_path("ckl_scifact", "space")
    assert bundled_file("ckl_scifact") is None  # a space is not a recipe
    mine = tmp_path / "ckl"
    mine.write_text("name: mine\n")
    assert bundled_file("ckl") == Path("ckl")  # a file of that name in the cwd wins
    with pytest.raises(ConfigError, match=r"nope: no such space file \(bundled spaces: "
                                          r"adam_dark_scifact, adam_scifact, ckl_scifact\)"):
        require_file("nope", "space", "--space")
    spec = resolve_teacher("bm25_contrastive")
    assert spec.kind == "ensemble" and spec.weights == [0.9, 1.7]
    assert resolve_teacher(str(bundled_path("bm25_contrastive", "teacher"))) == spec


def test_run_print_recipe_by_bare_name_from_anywhere(tmp_path):
    done = _run("-m", "raykd", "run", "ckl", "--recipe", "margin_mse", "--quick",
                "--print-recipe", "train.lr=3e-5", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    recipe = json.loads(done.stdout)
    assert recipe["method"] == "margin_mse" and recipe["name"] == "margin_mse-quick"
    assert recipe["stages"][0]["train"]["lr"] == 3e-5
    assert f"recipe: {bundled_path('margin_mse')}" in done.stderr


def _resolved(tmp_path, method: str, *args: str) -> dict:
    """`raykd run <method> <args> --print-recipe`'s recipe."""
    done = _run("-m", "raykd", "run", method, *args, "--print-recipe", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_full_is_the_longer_budget_and_excludes_quick(tmp_path):
    """Guards the `--full` preset: every labelled train query at lr 5e-5 on top of the recipe,
    named `<recipe>-full`, overridable like any budget, and refused beside `--quick`."""
    recipe = _resolved(tmp_path, "adam", "--full")
    stage = recipe["stages"][0]
    assert recipe["name"] == "adam-full"
    assert stage["data"]["max_queries"] is None and stage["train"]["lr"] == 5e-5
    shipped = _resolved(tmp_path, "adam")["stages"][0]
    assert shipped["data"]["max_queries"] == 320 and shipped["train"]["lr"] != 5e-5
    later = _resolved(tmp_path, "adam", "--full", "train.lr=3e-5")
    assert later["stages"][0]["train"]["lr"] == 3e-5
    both = _run("-m", "raykd", "run", "adam", "--full", "--quick", "--print-recipe",
                cwd=tmp_path)
    assert both.returncode != 0 and "not allowed with argument" in both.stderr


def test_long_is_full_for_three_passes_at_256_tokens(tmp_path):
    """Guards the `--long` preset (the budget dev chose on SciFact): `--full`'s queries and
    learning rate, three passes, passages at 256 tokens, named `<recipe>-long`, and refused
    beside `--full`."""
    recipe = _resolved(tmp_path, "contrastive", "--long")
    stage = recipe["stages"][0]
    assert recipe["name"] == "contrastive-long"
    assert stage["data"]["max_queries"] is None and stage["train"]["lr"] == 5e-5
    assert stage["train"]["epochs"] == 3 and recipe["student"]["passage_max_length"] == 256
    both = _run("-m", "raykd", "run", "contrastive", "--long", "--full", "--print-recipe",
                cwd=tmp_path)
    assert both.returncode != 0 and "not allowed with argument" in both.stderr


def test_mine_negatives_flags_are_the_recipe_field_names(tmp_path, toy_beir_dir):
    """Guards one name per option across jobs: `--negatives-from`, `--rel` and
    `--passage-max-length` (as in the recipe's data / eval fields) mine BM25 groups."""
    from raykd.commands.mine_negatives import main
    from raykd.data.groups import iter_groups

    out = tmp_path / "groups.jsonl"
    report = main(["--data", toy_beir_dir, "--split", "train", "--negatives-from", "bm25",
                   "--rel", "1", "--passage-max-length", "64", "--num-negatives", "3",
                   "--depth", "10", "--out", str(out)])
    groups = list(iter_groups(out))
    assert report.outputs == [str(out)] and len(groups) == 16
    assert all(sum(g["labels"]) >= 1 and len(g["pids"]) == 4 for g in groups)
    with pytest.raises(SystemExit):
        main(["--data", toy_beir_dir, "--source", "bm25", "--out", str(out)])


def test_score_teacher_reads_a_spec_file_through_the_one_loader(tmp_path):
    """Guards the one TeacherSpec file loader (config.load_teacher_spec) under score-teacher:
    `--batch-size` overrides the file, and a bad field names itself and the file."""
    from raykd.commands.score_teacher import load_spec, parse_args

    spec_file = tmp_path / "t.yaml"
    spec_file.write_text("teacher:\n  kind: bi_encoder\n  model: minilm\n  batch_size: 8\n")
    args = parse_args(["--candidates", "c.jsonl", "--teacher", str(spec_file),
                       "--batch-size", "16"])
    spec = load_spec(args)
    assert (spec.kind, spec.model, spec.batch_size) == ("bi_encoder", "minilm", 16)
    spec_file.write_text("kind: bi_encoder\nmodel: minilm\nbatch_size: 0\n")
    with pytest.raises(ConfigError, match=r"teacher\.batch_size.*t\.yaml"):
        load_spec(parse_args(["--candidates", "c.jsonl", "--teacher", str(spec_file)]))
