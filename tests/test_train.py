"""Training on Ray Train with 2 CPU workers: DDP and DeepSpeed, failures, resume by name."""

from __future__ import annotations

import random

import pytest
import torch
from steplog import StepLog

from raykd.config import Stage
from raykd.losses import build_loss
from raykd.students import BiEncoder
from raykd.train.batching import Scorer, collate_groups
from raykd.train.hooks import FailOnce, KillOnce
from raykd.train.loop import WorkerConfig, restore_paths
from raykd.train.trainer import make_trainer, plan_steps

WORDS = ("cell gene protein cancer vitamin river bank rate tumor immune virus drug "
         "heart brain lung liver bone blood sugar insulin").split()


def toy_groups(n: int = 32, seed: int = 0) -> list[dict]:
    """Queries whose positive repeats the query words; teacher scores = word overlap."""
    rng = random.Random(seed)
    groups = []
    for i in range(n):
        query_words = rng.sample(WORDS, 3)
        pos = " ".join(query_words + rng.sample(WORDS, 3))
        negs = [" ".join(rng.sample([w for w in WORDS if w not in query_words], 6))
                for _ in range(3)]
        texts = [pos, *negs]
        scores = [float(len(set(query_words) & set(t.split()))) * 2.0 for t in texts]
        groups.append({"qid": f"q{i}", "query": " ".join(query_words),
                       "pids": [f"p{i}-{j}" for j in range(4)], "texts": texts,
                       "labels": [1, 0, 0, 0], "teacher_scores": scores,
                       "kinds": ["pos", "neg", "neg", "neg"]})
    return groups


STUDENT = {"pooling": "mean", "similarity": "dot", "passage_max_length": 24,
           "query_max_length": 12}


def make_stage(backend: str = "ddp", **train) -> Stage:
    settings = {"backend": backend, "num_workers": 2, "batch_size": 4, "lr": 3e-3,
                "epochs": 2, "warmup_ratio": 0.0, "log_every": 1, "max_grad_norm": 1.0}
    settings.update(train)
    return Stage.model_validate({"name": "s", "loss": {"name": "kl"}, "train": settings})


def dataset_loss(student_path: str, groups: list[dict], loss_name: str = "kl") -> float:
    """Mean loss of a student over all groups, computed in-process (no Ray)."""
    model = BiEncoder.from_pretrained(student_path, **STUDENT).eval()
    loss = build_loss(loss_name)
    batch = collate_groups({k: [g[k] for g in groups] for k in groups[0]}, 4)
    with torch.no_grad():
        q, p = model(model.tokenize(batch.queries, "query"),
                     model.tokenize(batch.passages, "passage"))
        scores = Scorer(model, False, 0, 1).scores(q, p, batch)
        return float(loss(student=scores, teacher=batch.teacher, pos_mask=batch.pos_mask,
                          valid_mask=batch.valid_mask))


def fit(ray_local, tmp_path, stage, student_dir, groups, name, **worker):
    steps_per_epoch, total = plan_steps(len(groups), stage)
    config = WorkerConfig(stage=stage.model_dump(mode="json"), student_path=student_dir,
                          student_options=STUDENT, list_size=4,
                          steps_per_epoch=steps_per_epoch, total_steps=total, **worker)
    log = StepLog(tmp_path / f"{name}.steps.jsonl")
    trainer = make_trainer(config, ray_local.data.from_items(groups), stage, name,
                           str(tmp_path / "storage"), [log.callback()])
    return trainer.fit(), log, total


def assert_student_is_zero_master(student, ckpt) -> None:
    """The exported student equals the fp32 weights DeepSpeed's own `zero_to_fp32` rebuilds
    from every rank's ZeRO shards: the export gathered the trained weights, not a partition."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from safetensors.torch import load_file

    master = get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag="deepspeed")
    master = {k.removeprefix("query_encoder."): v for k, v in master.items()}
    saved = load_file(str(student / "model.safetensors"))
    assert set(saved) == set(master)
    for key, value in saved.items():
        assert value.shape == master[key].shape, key
        assert torch.equal(value, master[key].to(value.dtype)), key


# ZeRO-3's two-worker training and its gathered export are in the suite through the SIGKILL
# resume test below; its own run here is under `make test-full`, to keep the suite in its time.
ZERO_BACKENDS = [("ddp", 0), ("deepspeed", 2),
                 pytest.param("deepspeed", 3, marks=pytest.mark.slow)]


@pytest.mark.parametrize("backend,zero", ZERO_BACKENDS)
def test_two_workers_finish_and_lower_the_loss(ray_local, tmp_path, tiny_encoder_dir, backend,
                                               zero):
    """Guards the training path: DDP and DeepSpeed ZeRO-2 / ZeRO-3 run 2 gloo workers and
    actually learn; under ZeRO-3 no rank holds whole weights, so the export must gather them."""
    groups = toy_groups()
    result, log, total = fit(ray_local, tmp_path, make_stage(backend, zero_stage=zero),
                             tiny_encoder_dir, groups, f"fit-{backend}")
    assert result.error is None
    with result.checkpoint.as_directory() as ckpt:
        state, student = restore_paths(ckpt)
        assert state["step"] == total and state["stage_done"]
        if backend == "deepspeed":  # every rank's ZeRO shard is persisted
            shards = (student.parent / "deepspeed").glob("zero_pp_rank_*_optim_states.pt")
            assert len(list(shards)) == 2
            assert_student_is_zero_master(student, ckpt)
        after = dataset_loss(str(student), groups)
    before = dataset_loss(tiny_encoder_dir, groups)
    assert after < 0.9 * before, (before, after)
    assert [e["step"] for e in log.entries()][-1] == total


def student_weights(student) -> dict:
    from safetensors.torch import load_file

    return load_file(str(student / "model.safetensors"))


# ZeRO-3 in the CI suite; the ZeRO-2 kill (its shards are checked by the training test above)
# runs under `make test-full`, to keep the suite within its time.
@pytest.mark.parametrize("zero", [pytest.param(2, marks=pytest.mark.slow), 3])
def test_zero_checkpoint_resumes_after_sigkill_to_the_identical_loss(
        ray_local, tmp_path, deterministic_encoder, zero):
    """Guards exact resume from ZeRO shards under a real process death: rank 0 is SIGKILLed at
    step 6 of 8 (checkpoint at step 3); Ray Train restarts the group from the sharded
    checkpoint, and every step after the restore reports the loss of an undisturbed run with
    the same seed, and ends on the same weights (so the optimiser moments were restored too).
    Dropout-free model, ordered ingest, gloo: the replay is exact."""
    groups = toy_groups()
    stage = make_stage("deepspeed", zero_stage=zero, checkpoint_every=3, max_failures=1,
                       max_steps=8)
    marker = tmp_path / "killed"
    runs = {}
    for name, hooks in (("clean", []), ("killed", [KillOnce(6, marker)])):
        result, log, total = fit(ray_local, tmp_path, stage, deterministic_encoder, groups,
                                 f"{name}-zero{zero}", step_hooks=hooks)
        assert result.error is None
        with result.checkpoint.as_directory() as ckpt:
            state, student = restore_paths(ckpt)
            assert state["step"] == total == 8 and state["stage_done"]
            assert_student_is_zero_master(student, ckpt)
            runs[name] = (log.entries(), student_weights(student))
    assert marker.exists()
    clean = {e["step"]: e["loss"] for e in runs["clean"][0]}
    steps = [e["step"] for e in runs["killed"][0]]
    restart = max(i for i in range(1, len(steps)) if steps[i] <= steps[i - 1])
    assert steps[restart] == 4 and steps[restart:] == [4, 5, 6, 7, 8], steps  # from step 3
    for entry in runs["killed"][0]:  # both attempts: every report matches the clean run
        assert entry["loss"] == pytest.approx(clean[entry["step"]], rel=1e-6, abs=1e-7), entry
    for key, value in runs["clean"][1].items():
        torch.testing.assert_close(runs["killed"][1][key], value, rtol=1e-6, atol=1e-7)


# The suite restores from a checkpoint after a worker failure in the ZeRO-3 SIGKILL test above;
# this DDP one runs under `make test-full`.
@pytest.mark.slow
def test_worker_failure_restores_from_checkpoint(ray_local, tmp_path, tiny_encoder_dir):
    """Guards FailureConfig: a worker that raises at step 5 restarts from step 4's checkpoint."""
    groups = toy_groups()
    stage = make_stage(checkpoint_every=2, max_failures=1)
    result, log, total = fit(ray_local, tmp_path, stage, tiny_encoder_dir, groups, "fail",
                             step_hooks=[FailOnce(5, tmp_path / "failed-once")])
    assert result.error is None
    assert (tmp_path / "failed-once").exists()
    steps = [e["step"] for e in log.entries()]
    assert steps[-1] == total
    # Reports up to 4, the failure at 5, then 5.. again after restoring step 4's checkpoint.
    assert steps.count(5) == 1 and steps.index(6) > steps.index(4)
    with result.checkpoint.as_directory() as ckpt:
        assert restore_paths(ckpt)[0]["step"] == total


# The suite resumes a run by name through the recipe driver
# (tests/test_driver.py::test_driver_resumes_at_the_first_unfinished_stage); this trainer-level
# check runs under `make test-full`.
@pytest.mark.slow
def test_stopped_run_resumes_by_name(ray_local, tmp_path, tiny_encoder_dir):
    """Guards resume-by-name: a run that died at step 5 continues from its step-4 checkpoint."""
    groups = toy_groups()
    stage = make_stage(checkpoint_every=2, max_failures=0)
    from ray.train import WorkerGroupError

    with pytest.raises(WorkerGroupError, match="injected failure at step 5"):
        fit(ray_local, tmp_path, stage, tiny_encoder_dir, groups, "resume",
            step_hooks=[FailOnce(5, tmp_path / "died")])
    first_log = StepLog(tmp_path / "resume.steps.jsonl").entries()
    assert max(e["step"] for e in first_log) == 4
    (tmp_path / "resume.steps.jsonl").unlink()
    second, log2, total = fit(ray_local, tmp_path, stage, tiny_encoder_dir, groups, "resume")
    assert second.error is None
    resumed = [e["step"] for e in log2.entries()]
    assert resumed[0] == 5 and resumed[-1] == total  # not from zero
