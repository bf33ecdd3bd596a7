"""Cross-encoder teacher training: lists, loss, Ray Train run, saved folder, option checks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from raykd.config import teacher_spec
from raykd.data.beir import BeirDataset
from raykd.data.groups import iter_groups
from raykd.errors import ConfigError
from raykd.train.cross_encoder import (
    build_lists,
    evaluate_listwise_loss,
    listwise_loss,
    make_train_spec,
    mine_training_groups,
    plan_training,
    score_training_groups,
    train_cross_encoder,
)

ROOT = Path(__file__).resolve().parents[1]
LENGTHS = {"query_max_length": 16, "passage_max_length": 48}


@pytest.fixture(scope="module")
def trained(ray_local, toy_beir_dir, tiny_encoder_dir, tmp_path_factory):
    """A tiny cross-encoder trained on the toy train split: BM25-mined 1+3 lists, listwise CE
    plus a KL to BM25 teacher scores computed by the scoring stage."""
    work = tmp_path_factory.mktemp("train_teacher")
    dataset = BeirDataset.from_dir(toy_beir_dir)
    groups_path = work / "groups.parquet"
    report, _ = mine_training_groups(dataset, "train", groups_path, source="bm25", depth=20,
                                     num_negatives=3, use_ray=False)
    scored = score_training_groups(groups_path, work / "scores", teacher_spec(kind="bm25"),
                                   dataset, cache=str(work / "cache"), concurrency=1,
                                   num_shards=2)
    spec = make_train_spec(model=tiny_encoder_dir, max_steps=40, batch_size=4, lr=5e-3,
                           num_negatives=3, warmup_ratio=0.0, weight_decay=0.0,
                           cpus_per_worker=1, distill_weight=0.2, log_every=8, **LENGTHS)
    result = train_cross_encoder(scored.output_dir, work / "ce", spec,
                                 storage_path=str(work / "ray"))
    groups = list(iter_groups(groups_path))
    return dataset, groups, result, report, tiny_encoder_dir


def test_training_lowers_the_listwise_loss(trained):
    """Guards the training loop end to end (lists, loss sign, optimiser, saving the trained and
    not the initial weights): the saved model's listwise CE on the training lists is well below
    the untrained model's, and the logged loss falls."""
    _, groups, result, report, tiny = trained
    assert report.groups == 16 and result.steps == 40
    torch.manual_seed(0)  # the untrained classification head is random
    before = evaluate_listwise_loss(tiny, groups, num_negatives=3, max_length=64)
    after = evaluate_listwise_loss(result.model_dir, groups, num_negatives=3, max_length=64)
    assert before == pytest.approx(np.log(4), abs=0.3)
    assert after < before - 0.3
    assert result.last_loss < result.first_loss
    assert all(np.isfinite(row["kl"]) and row["kl"] >= 0 for row in result.history)


def test_saved_folder_is_a_cross_encoder_teacher(trained):
    """Guards the hand-off to the scoring side: the saved folder (via `teacher.yaml`) builds
    with `build_teacher` and ranks the training positive above its negatives for most queries."""
    from raykd.eval.rerank import load_teacher_spec
    from raykd.teachers.factory import build_teacher

    _, groups, result, _, _ = trained
    spec = load_teacher_spec(result.teacher_spec)
    assert spec.kind == "cross_encoder" and spec.passage_max_length == 48
    teacher = build_teacher(spec)
    assert teacher.model.config.num_labels == 1
    wins = 0
    for g in groups:
        scores = teacher.score([g["query"]] * len(g["texts"]), g["texts"])
        assert scores.shape == (len(g["texts"]),) and np.isfinite(scores).all()
        pos = [s for s, y in zip(scores, g["labels"], strict=True) if y == 1]
        neg = [s for s, y in zip(scores, g["labels"], strict=True) if y == 0]
        wins += max(pos) > max(neg)
    assert wins >= 0.75 * len(groups)


def test_lists_put_one_seeded_positive_first_and_pad_short_lists():
    """Guards list building: exactly one positive per list, in column 0, drawn reproducibly
    per (seed, epoch, qid); short lists are padded and masked, teacher scores stay aligned."""
    batch = {"qid": ["a", "b"], "query": ["qa", "qb"],
             "texts": [["p1", "n1", "p2", "n2", "n3"], ["p", "n"]],
             "labels": [[1, 0, 1, 0, 0], [1, 0]],
             "teacher_scores": [[5.0, 1.0, 4.0, 2.0, 3.0], [9.0, 8.0]]}
    lists = build_lists(batch, 3, seed=1, with_teacher=True)
    assert lists.valid.tolist() == [[True] * 4, [True, True, False, False]]
    first = lists.passages[0]
    assert first in ("p1", "p2") and lists.passages[1:4] == ["n1", "n2", "n3"]
    assert lists.teacher[0, 0] == (5.0 if first == "p1" else 4.0)
    assert lists.teacher[1, :2].tolist() == [9.0, 8.0] and lists.passages[6:] == ["", ""]
    assert build_lists(batch, 3, seed=1).passages == lists.passages
    draws = {build_lists(batch, 3, seed=1, epoch=e).passages[0] for e in range(12)}
    assert draws == {"p1", "p2"}
    with pytest.raises(ValueError, match="no labelled positive"):
        build_lists({"qid": ["c"], "query": ["q"], "texts": [["x"]], "labels": [[0]]}, 3)


def test_listwise_loss_is_softmax_ce_at_column_zero_plus_weighted_kl():
    """Guards the objective (METHODS 3(d)): CE = -log softmax(s)[0] over the valid entries
    only; the distillation term is distill_weight * T^2 * KL(teacher || student)."""
    from raykd.losses import kl_loss

    s = torch.tensor([[2.0, 1.0, 0.5, 9.0]])
    valid = torch.tensor([[True, True, True, False]])
    total, ce, kl = listwise_loss(s, valid)
    expected = -torch.log_softmax(s[:, :3], -1)[0, 0]
    assert float(ce) == pytest.approx(float(expected)) and float(total) == float(ce)
    t = torch.tensor([[3.0, 0.0, 1.0, 0.0]])
    total, ce, kl = listwise_loss(s, valid, t, distill_weight=0.5, temperature=2.0)
    ref = kl_loss(s, t, valid, student_temperature=2.0, teacher_temperature=2.0,
                  t2_scaling=True)
    assert float(kl) == pytest.approx(float(ref)) and float(total) == pytest.approx(
        float(ce) + 0.5 * float(ref))
    with pytest.raises(ValueError, match="teacher scores"):
        listwise_loss(s, valid, None, distill_weight=0.5)


@pytest.mark.parametrize("options, field", [
    ({"lr": 0}, "train_teacher.lr"),
    ({"num_negatives": 0}, "train_teacher.num_negatives"),
    ({"warmup_ratio": 1.0}, "train_teacher.warmup_ratio"),
    ({"batch_size": 0}, "train_teacher.batch_size"),
    ({"distill_weight": -1}, "train_teacher.distill_weight"),
    ({"learning_rate": 1e-5}, "train_teacher.learning_rate"),
])
def test_bad_training_options_name_the_field(options, field):
    """Guards eager validation: a bad or unknown option is a ConfigError naming its field."""
    with pytest.raises(ConfigError) as err:
        make_train_spec(**options)
    assert err.value.field == field


def test_too_few_queries_for_one_step_is_a_config_error():
    """Guards a silent zero-step run: a dataset smaller than one batch is refused."""
    with pytest.raises(ConfigError, match="cannot fill one step"):
        plan_training(3, make_train_spec(batch_size=4))
    assert plan_training(10, make_train_spec(batch_size=4, epochs=1.5)) == (2, 3)


def test_distillation_without_teacher_scores_is_refused(ray_local, trained, tmp_path):
    """Guards distilling from nothing: groups without teacher_scores and distill_weight > 0
    fail before any training starts."""
    from raykd.data.groups import write_groups_parquet

    _, groups, _, _, tiny = trained
    path = tmp_path / "plain.parquet"
    write_groups_parquet(path, groups)
    spec = make_train_spec(model=tiny, max_steps=1, batch_size=4, distill_weight=1.0, **LENGTHS)
    with pytest.raises(ConfigError, match="no teacher_scores"):
        train_cross_encoder(path, tmp_path / "ce", spec)


def test_train_teacher_job_rejects_bad_options_before_starting_ray(toy_beir_dir, capsys):
    """Guards the CLI: distillation options that do not go together, a missing model folder
    and bad numbers are one `error:` line naming the field (exit 2), before Ray starts."""
    path = ROOT / "jobs" / "train_teacher.py"
    module_spec = importlib.util.spec_from_file_location("job_train_teacher", path)
    job = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(job)
    cases = [(["--distill-weight", "0.5"], "distill_from"),
             (["--distill-from", "ensemble"], "distill_weight"),
             (["--model", "/no/such/model"], "model"),
             (["--lr", "-1"], "train_teacher.lr"),
             (["--eval-cascade", "20"], "cascade")]
    for argv, field in cases:
        with pytest.raises(SystemExit) as done:
            job.main([*argv, "--data", toy_beir_dir])
        assert done.value.code == 2, argv
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith(f"error: config field '{field}'"), (argv, last)
