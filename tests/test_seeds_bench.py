"""bench/seeds.py's seedless systems (`--fixed`): a run file paired against a row's seeds."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from raykd.eval.metrics import write_trec_run
from raykd.pipeline.files import last_stage_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def seeds():
    spec = importlib.util.spec_from_file_location("bench_seeds", ROOT / "bench" / "seeds.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


QRELS = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1}, "q4": {"d4": 1}}


def test_fixed_system_is_paired_against_the_reference_seed_means(seeds, tmp_path):
    # the system ranks its relevant passage first on q1 and q2 (nDCG 1) and misses q3 and q4
    run = {"q1": {"d1": 2.0, "x": 1.0}, "q2": {"d2": 2.0, "x": 1.0},
           "q3": {"x": 2.0}, "q4": {"x": 2.0}}
    path = tmp_path / "run.trec"
    write_trec_run(path, run)
    base = {13: {"per_query": {"q1": 0.5, "q2": 0.5, "q3": 0.5, "q4": 0.0}},
            14: {"per_query": {"q1": 0.7, "q2": 0.3, "q3": 0.3, "q4": 0.2}}}
    entry = seeds.fixed_system("BM25", path, QRELS, base)
    assert entry["test_ndcg10"] == (pytest.approx(0.5), None)
    assert entry["test_r100"] == (pytest.approx(0.5), None)
    # reference seed means: 0.6, 0.4, 0.4, 0.1 -> differences +0.4, +0.6, -0.4, -0.1
    assert entry["vs_baseline"]["delta"] == pytest.approx(0.125)
    assert entry["vs_baseline"]["seeds"] == [13, 14]
    line = seeds.table({"BM25": entry}, reference="contrastive-len256-e3").splitlines()[-1]
    assert line.startswith("| BM25 | - | - | 0.5000 | 0.5000 | +0.1250 [")


def test_fixed_flag_names_a_missing_run_file_before_any_run(seeds, tmp_path, capsys,
                                                          monkeypatch):
    monkeypatch.setattr(seeds, "run", lambda *a: pytest.fail("a run started"))
    with pytest.raises(SystemExit):
        seeds.main(["--rows", "contrastive-all", "--seeds", "99",
                    "--fixed", f"BM25={tmp_path / 'nothing.trec'}"])
    assert f"--fixed BM25: no run file {tmp_path / 'nothing.trec'}" in capsys.readouterr().err


def test_fixed_flag_refuses_a_value_without_a_label(seeds, capsys):
    with pytest.raises(SystemExit):
        seeds.main(["--table", "--fixed", "outputs/eval/bm25-test/run.trec"])
    assert "--fixed takes LABEL=RUN" in capsys.readouterr().err


def test_dev_delta_pairs_the_last_stage_dev_runs_and_skips_rows_without_them(seeds, tmp_path):
    """Guards the dev column: the paired Δ of two rows' seed-averaged per-query dev values,
    read from each run's last stage (`stages/*/eval-dev/run.trec`), and none where a run
    has no dev file."""
    base = {13: {"dev_per_query": {"q1": 1.0, "q2": 0.0, "q3": 0.5, "q4": 0.5}},
            14: {"dev_per_query": {"q1": 0.0, "q2": 0.0, "q3": 0.5, "q4": 0.5}}}
    got = {13: {"dev_per_query": {"q1": 1.0, "q2": 1.0, "q3": 0.5, "q4": 1.0}},
           14: {"dev_per_query": {"q1": 1.0, "q2": 0.0, "q3": 0.5, "q4": 1.0}}}
    # seed means 0.5, 0, 0.5, 0.5 against 1, 0.5, 0.5, 1 -> differences +0.5, +0.5, 0, +0.5
    record = seeds.paired_dev(base, got, [13, 14])
    assert record["delta"] == pytest.approx(0.375) and record["seeds"] == [13, 14]
    assert seeds.paired_dev(base, {**got, 14: {"dev_per_query": None}}, [13, 14]) is None
    for stage in ("00-first", "01-second"):
        (tmp_path / "stages" / stage / "eval-dev").mkdir(parents=True)
        (tmp_path / "stages" / stage / "eval-dev" / "run.trec").write_text("")
    assert last_stage_run(tmp_path, "dev") == (
        tmp_path / "stages" / "01-second" / "eval-dev" / "run.trec")
    assert last_stage_run(tmp_path, "test") is None
    assert last_stage_run(tmp_path / "stages" / "00-first", "dev") is None


def test_every_teacher_file_a_row_names_is_a_valid_teacher(seeds):
    """Guards the rows' teacher files (bench/recipes/teachers/): each loads as a TeacherSpec
    (an ensemble's weights one per member, every field checked), so a broken file fails here,
    not minutes into a run."""
    from raykd.config import load_teacher_spec

    named = {o.split("=", 1)[1] for row in seeds.ROWS for o in row.overrides
             if o.startswith("teacher=")}
    assert "bench/recipes/teachers/bm25_lo3_e3.yaml" in named
    for path in sorted(named):
        assert load_teacher_spec(ROOT / path).kind, path
