"""Queries nobody labelled: pseudo-queries from the corpus as a stage's query source, their
candidates, teacher scores and training; the config errors; the label-corrected KL target."""

from __future__ import annotations

import pytest
import torch

from raykd.config import recipe_from_dict
from raykd.data.beir import BeirDataset
from raykd.data.groups import iter_groups
from raykd.errors import ConfigError
from raykd.losses import build_loss
from raykd.losses.common import lift_positives


def _recipe(toy_beir_dir, tiny_encoder_dir, storage, *, queries="both", loss=None, **data):
    return recipe_from_dict({
        "name": f"pseudo-{queries}", "storage": str(storage), "test_split": None,
        "student": {"model": tiny_encoder_dir, "pooling": "mean", "similarity": "dot",
                    "passage_max_length": 24, "query_max_length": 12},
        "stages": [{
            "name": "kd", "teacher": {"kind": "bm25"},
            "data": {"dataset": toy_beir_dir, "split": "train", "negatives_from": "bm25",
                     "depth": 10, "num_negatives": 3, "queries": queries,
                     "pseudo": {"count": 12, "rule": "title"}, **data},
            "loss": loss or {"name": "kl", "params": {"positive_margin": 1.0}},
            "train": {"num_workers": 1, "batch_size": 4, "max_steps": 3, "lr": 1e-3,
                      "log_every": 1},
            "eval": {"split": None}}]})


def test_both_query_sources_train_on_labelled_and_pseudo_groups(ray_local, toy_beir_dir,
                                                                tiny_encoder_dir, tmp_path):
    """Guards the unlabelled-query path end to end: pseudo-query groups carry the source
    passage without its query and no label, the teacher scores every candidate, and the
    trainer sees both kinds of group."""
    from raykd.pipeline.runner import RecipeRunner

    recipe = _recipe(toy_beir_dir, tiny_encoder_dir, tmp_path / "out")
    summary = RecipeRunner(recipe, echo=lambda *_: None).run()
    stage = summary["stages"][0]
    assert stage["steps"] == 3
    dataset = BeirDataset.from_dir(toy_beir_dir)
    corpus = {row["pid"]: row for row in dataset.iter_corpus()}
    labelled_texts = {t.lower() for t in dataset.all_queries().values()}
    scored = [g for f in sorted((tmp_path / "out" / recipe.name / "stages").glob("*/scored/*"))
              if f.suffix == ".parquet" for g in iter_groups(f)]
    pseudo = [g for g in scored if g["qid"].startswith("pseudo:")]
    labelled = [g for g in scored if not g["qid"].startswith("pseudo:")]
    assert len(labelled) == len(dataset.queries("train"))
    assert len(pseudo) == 12
    for group in pseudo:
        source = group["qid"].removeprefix("pseudo:")
        assert group["pids"][0] == source and group["kinds"][0] == "source"
        assert group["query"] == corpus[source]["title"]  # the title rule
        assert group["texts"][0] == corpus[source]["text"]  # the title removed from it
        assert source not in group["pids"][1:]
        assert set(group["labels"]) == {0}
        assert group["query"].lower() not in labelled_texts
        assert all(map(torch.isfinite, torch.tensor(group["teacher_scores"])))
    assert all(1 in g["labels"] for g in labelled)
    record = (tmp_path / "out" / "candidates").glob("corpus-pseudo-*/_mining.yaml")
    assert "12 made" in next(record).read_text()


def test_query_source_config_errors_name_the_field(toy_beir_dir, tiny_encoder_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"stages\.0\.data.*pseudo\.count"):
        recipe_from_dict({"name": "r", "stages": [{"name": "a", "data": {"queries": "corpus"}}]})
    with pytest.raises(ConfigError, match=r"stages\.0\.data\.queries.*'bogus'|queries"):
        recipe_from_dict({"name": "r", "stages": [{"name": "a", "data": {"queries": "bogus"}}]})
    with pytest.raises(ConfigError, match=r"stages\.0\.data\.pseudo.*max_words"):
        recipe_from_dict({"name": "r", "stages": [{"name": "a", "data": {
            "pseudo": {"count": 3, "min_words": 9, "max_words": 4}}}]})
    with pytest.raises(ConfigError, match=r"stages\.0\.data\.pseudo\.rule"):
        recipe_from_dict({"name": "r", "stages": [{"name": "a", "data": {
            "pseudo": {"count": 3, "rule": "abstract"}}}]})
    with pytest.raises(ConfigError, match=r"stages\.0.*infonce.*positive"):
        _recipe(toy_beir_dir, tiny_encoder_dir, tmp_path,
                loss={"name": "infonce", "params": {}})
    with pytest.raises(ConfigError, match="confusing"):
        _recipe(toy_beir_dir, tiny_encoder_dir, tmp_path, query_filter="confusing")


def test_lift_positives_by_hand():
    """A positive below a negative is raised to margin above the best negative; one already
    above by more keeps its score; a row without a positive and padding are unchanged."""
    teacher = torch.tensor([[1.0, 3.0, 2.0], [9.0, 3.0, 2.0], [1.0, 3.0, 2.0], [1.0, 5.0, 0.0]])
    pos = torch.tensor([[True, False, False], [True, False, False], [False] * 3,
                        [True, False, False]])
    valid = torch.tensor([[True] * 3, [True] * 3, [True] * 3, [True, False, True]])
    out = lift_positives(teacher, pos, valid, margin=0.5)
    assert out.tolist() == [[3.5, 3.0, 2.0], [9.0, 3.0, 2.0], [1.0, 3.0, 2.0], [1.0, 5.0, 0.0]]


def test_kl_positive_margin_changes_only_the_target():
    """KL with positive_margin equals plain KL against the lifted teacher, and a margin that
    is not a finite number >= 0 is refused when the loss is built."""
    student = torch.tensor([[0.2, 0.9, -0.3], [0.5, 0.1, 0.0]], requires_grad=True)
    teacher = torch.tensor([[1.0, 3.0, 2.0], [0.0, 0.5, 1.5]])
    pos = torch.tensor([[True, False, False], [False, False, False]])
    lifted = build_loss("kl", positive_margin=2.0)(student, teacher, pos)
    by_hand = build_loss("kl")(student, lift_positives(teacher, pos, torch.ones_like(pos), 2.0),
                               pos)
    assert torch.allclose(lifted, by_hand)
    assert not torch.allclose(lifted, build_loss("kl")(student, teacher, pos))
    for bad in (-1.0, float("inf"), "big"):
        with pytest.raises(ValueError, match="positive_margin"):
            build_loss("kl", positive_margin=bad)


def test_kl_label_weight_adds_infonce_on_the_labelled_rows_only():
    """KL with label_weight w is plain KL plus w times InfoNCE (temperature 1) averaged over
    the rows that have a labelled positive, by hand; a pseudo-query row (no positive) adds no
    label term; a weight below 0 is refused when the loss is built."""
    student = torch.tensor([[0.2, 0.9, -0.3], [0.5, 0.1, 0.0], [1.0, -1.0, 0.3]])
    teacher = torch.tensor([[1.0, 3.0, 2.0], [0.0, 0.5, 1.5], [2.0, 0.0, 1.0]])
    pos = torch.tensor([[True, False, False], [False] * 3, [False, False, True]])
    kl = build_loss("kl")(student, teacher, pos)
    logq = torch.log_softmax(student, dim=-1)
    infonce = -(logq[0, 0] + logq[2, 2]) / 2  # rows 0 and 2 are labelled
    mixed = build_loss("kl", label_weight=0.5)(student, teacher, pos)
    assert torch.allclose(mixed, kl + 0.5 * infonce)
    unlabelled = torch.zeros_like(pos)
    assert torch.allclose(build_loss("kl", label_weight=0.5)(student, teacher, unlabelled),
                          build_loss("kl")(student, teacher, unlabelled))
    with pytest.raises(ValueError, match="label_weight"):
        build_loss("kl", label_weight=-1.0)


def test_source_as_positive_makes_inverse_cloze_training_groups(ray_local, toy_beir_dir,
                                                               tiny_encoder_dir, tmp_path):
    """Guards the control run: with `pseudo.source_as_positive` a contrastive loss (which needs
    a positive) trains on pseudo-queries, each group's source labelled as its positive."""
    from raykd.pipeline.runner import RecipeRunner

    recipe = _recipe(toy_beir_dir, tiny_encoder_dir, tmp_path / "out", queries="corpus",
                     loss={"name": "infonce", "params": {}},
                     pseudo={"count": 12, "rule": "title", "source_as_positive": True})
    summary = RecipeRunner(recipe, echo=lambda *_: None).run()
    assert summary["stages"][0]["steps"] == 3
    folder = next((tmp_path / "out" / "candidates").glob("corpus-pseudo-*"))
    groups = [g for f in sorted(folder.glob("*.parquet")) for g in iter_groups(f)]
    assert len(groups) == 12
    assert all(g["labels"][0] == 1 and set(g["labels"][1:]) == {0} and g["kinds"][0] == "pos"
               for g in groups)
