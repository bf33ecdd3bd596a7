"""Cross-fitting: query folds by id, training without one fold, and a teacher that scores each
query with the member trained without that query's fold."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from raykd.config import HoldoutSpec, load_recipe, recipe_from_dict, spec_key, teacher_spec
from raykd.data.folds import fold_of, outside_fold
from raykd.data.groups import iter_groups, write_groups_parquet
from raykd.errors import ConfigError
from raykd.pipeline.steps.candidates import held_out_candidates
from raykd.teachers import build_teacher
from raykd.teachers.cross_fit import CrossFitTeacher


def test_a_querys_fold_is_a_stable_hash_of_its_id():
    """Guards the fold rule every member and scorer must share: sha256 of the id, mod n."""
    for qid in ("0", "42", "q-1093", "ü"):
        by_hand = int.from_bytes(hashlib.sha256(qid.encode()).digest()[:8], "big") % 3
        assert fold_of(qid, 3) == by_hand
    counts = np.bincount([fold_of(str(i), 2) for i in range(2000)], minlength=2)
    assert 900 < counts[0] < 1100 and counts.sum() == 2000
    with pytest.raises(ValueError, match="folds"):
        fold_of("1", 0)


def test_outside_fold_keeps_exactly_the_other_folds():
    groups = [{"qid": str(i)} for i in range(50)]
    kept = [g["qid"] for g in outside_fold(groups, 2, 1)]
    assert kept == [g["qid"] for g in groups if fold_of(g["qid"], 2) == 0]
    assert 0 < len(kept) < 50


def test_a_holdout_leaves_the_mining_key_alone(tmp_path):
    """The held-out fold is filtered after mining: the candidate cache is shared with the
    stage that trains on every query."""
    path = tmp_path / "r.yaml"
    path.write_text("name: r\nstages:\n  - {name: a}\n")
    plain = load_recipe(path).stages[0].data
    held = load_recipe(path, ["data.holdout.folds=2", "data.holdout.fold=1"]).stages[0].data
    assert held.holdout == HoldoutSpec(folds=2, fold=1)
    assert held.labelled_key() == plain.labelled_key()
    assert "holdout" not in plain.labelled_key()


def _group(qid: str, n: int = 3) -> dict:
    return {"qid": qid, "query": f"query {qid}", "pids": [f"{qid}-{j}" for j in range(n)],
            "texts": [f"text {qid} {j}" for j in range(n)], "labels": [1] + [0] * (n - 1)}


def test_held_out_candidates_drop_the_fold_and_are_cached(tmp_path):
    source = tmp_path / "mined"
    source.mkdir()
    write_groups_parquet(source / "groups.parquet", [_group(str(i)) for i in range(40)])
    said = []
    ctx = SimpleNamespace(candidates_root=tmp_path / "candidates", echo=said.append)
    out = held_out_candidates(ctx, str(source), HoldoutSpec(folds=2, fold=0))
    kept = [g["qid"] for f in sorted(Path(out).glob("*.parquet"))
            for g in iter_groups(f)]
    assert kept == [str(i) for i in range(40) if fold_of(str(i), 2) == 1]
    assert len(said) == 1 and f"{len(kept)} groups outside fold 0 of 2" in said[0]
    assert held_out_candidates(ctx, str(source), HoldoutSpec(folds=2, fold=0)) == out
    assert len(said) == 1  # the second call read the cache
    other = held_out_candidates(ctx, str(source), HoldoutSpec(folds=2, fold=1))
    assert other != out
    write_groups_parquet(source / "groups.parquet", [_group(str(i)) for i in range(40, 60)])
    rewritten = held_out_candidates(ctx, str(source), HoldoutSpec(folds=2, fold=0))
    assert rewritten != out  # new contents, not the stale filtered copy
    assert [g["qid"] for g in iter_groups(Path(rewritten) / "groups.parquet")] == [
        str(i) for i in range(40, 60) if fold_of(str(i), 2) == 1]


def _scores_file(path, groups, offset: float) -> str:
    """A precomputed teacher's file: each group's scores are `offset + position`."""
    with open(path, "w") as out:
        for g in groups:
            out.write(json.dumps({**g, "teacher_scores": [offset + j for j in
                                                          range(len(g["pids"]))]}) + "\n")
    return str(path)


def test_each_query_is_scored_by_the_teacher_of_its_fold(tmp_path):
    groups = [_group(str(i)) for i in range(12)]
    files = [_scores_file(tmp_path / f"f{k}.jsonl", groups, 100.0 * (k + 1)) for k in range(2)]
    spec = teacher_spec(kind="cross_fit", folds=[{"kind": "precomputed", "path": f}
                                                 for f in files])
    teacher = build_teacher(spec)
    assert isinstance(teacher, CrossFitTeacher)
    scored = teacher.score_groups(groups)
    for group, scores in zip(groups, scored, strict=True):
        fold = fold_of(group["qid"], 2)
        np.testing.assert_allclose(scores, [100.0 * (fold + 1) + j for j in range(3)])
    assert {fold_of(g["qid"], 2) for g in groups} == {0, 1}  # both teachers were used
    swapped = build_teacher(teacher_spec(kind="cross_fit", folds=[
        {"kind": "precomputed", "path": f} for f in reversed(files)]))
    assert swapped.fingerprint != teacher.fingerprint
    assert spec_key(spec)["folds"][0]["path"] == files[0]
    with pytest.raises(ValueError, match="each query.s id"):
        teacher.score(["q"], ["p"])


def test_a_cross_fit_teacher_needs_two_folds():
    with pytest.raises(ConfigError) as err:
        recipe_from_dict({"name": "r", "stages": [{"name": "a", "teacher": {
            "kind": "cross_fit", "folds": [{"kind": "bm25"}]}}]})
    assert err.value.field == "stages.0.teacher.folds"
