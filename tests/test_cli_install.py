"""raykd as an installed tool: the wheel carries the recipes, spaces and teacher specs, and the
`raykd` console script and `python -m raykd` run from the installed copy, outside the checkout.

The wheel is built from a copy of the package's sources (no build folder left in the checkout)
with the test environment's own setuptools, and installed with `pip install --target`; nothing
is downloaded (`--no-index`, `--no-build-isolation`, `--no-deps`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from raykd.cli import QUICK_OVERRIDES
from raykd.commands import COMMANDS
from raykd.config import load_recipe
from raykd.recipes import bundled_names, bundled_path, family_names

ROOT = Path(__file__).resolve().parents[1]
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel, site folder, an empty working folder outside the checkout)."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "raykd", src / "raykd",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    env = {**os.environ, "PIP_NO_INDEX": "1"}
    subprocess.run([*PIP, "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(tmp / "dist"), str(src)], check=True, env=env, timeout=600,
                   capture_output=True)
    (wheel,) = (tmp / "dist").glob("raykd-*.whl")
    site = tmp / "site"
    subprocess.run([*PIP, "install", "-q", "--no-deps", "--no-index", "--target", str(site),
                    str(wheel)], check=True, env=env, timeout=600, capture_output=True)
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    return wheel, site, elsewhere


def _run(cmd: list[str], site: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def test_the_wheel_carries_the_recipes_and_the_entry_point(installed):
    wheel, _, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for method in [*bundled_names("recipe"), *family_names()]:  # msmarco/prod too
        assert f"raykd/recipes/{method}.yaml" in names
    for kind, folder in (("space", "spaces"), ("teacher", "teachers")):
        for name in bundled_names(kind):
            assert f"raykd/recipes/{folder}/{name}.yaml" in names
    assert {"raykd/__main__.py", "raykd/commands/run.py", "raykd/datasets/scifact/queries.jsonl",
            *(f"raykd/commands/{m}.py" for m in COMMANDS.values())} <= names
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "raykd = raykd.commands:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.mark.parametrize("how", ["script", "module"])
def test_installed_raykd_run_prints_the_installed_adam_recipe(installed, how):
    """`raykd run adam --quick --print-recipe` outside the checkout reads the installed copy's
    adam.yaml: the copy is marked (student.scale 19.5, the checkout's says 20), the printed
    recipe is the adam recipe with the quick budget and the mark, and it names its file."""
    _, site, elsewhere = installed
    recipe_file = site / "raykd" / "recipes" / "adam.yaml"
    assert recipe_file.is_file(), "the wheel installed no adam.yaml"
    text = bundled_path("adam").read_text()
    assert recipe_file.read_text() in (text, text.replace("  scale: 20.0\n", "  scale: 19.5\n", 1))
    assert "  scale: 20.0\n" in text
    recipe_file.write_text(text.replace("  scale: 20.0\n", "  scale: 19.5\n", 1))
    cmd = ([str(site / "bin" / "raykd")] if how == "script"
           else [sys.executable, "-m", "raykd"])
    done = _run([*cmd, "run", "adam", "--quick", "--print-recipe"], site, elsewhere)
    assert done.returncode == 0, done.stderr
    assert f"recipe: {recipe_file}" in done.stderr.splitlines()
    printed = json.loads(done.stdout)
    expected = load_recipe(bundled_path("adam"),
                           [*QUICK_OVERRIDES, "name=adam-quick", "student.scale=19.5"])
    assert printed == expected.model_dump(mode="json")
    assert printed["method"] == "adam" and printed["student"]["scale"] == 19.5
    assert list(elsewhere.iterdir()) == []  # printing a recipe writes nothing


def test_installed_raykd_help_lists_every_method_and_tool(installed):
    _, site, elsewhere = installed
    done = _run([str(site / "bin" / "raykd"), "--help"], site, elsewhere)
    assert done.returncode == 0, done.stderr
    first_words = [line.split()[0] for line in done.stdout.splitlines() if line.strip()]
    for name in [*bundled_names("recipe"), *(c for c in COMMANDS if c != "run")]:
        assert first_words.count(name) == 1, name
