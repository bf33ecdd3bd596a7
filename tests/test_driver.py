"""The stage driver end to end: mining, teacher scoring, training, evaluation, MLflow, resume."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from raykd.config import recipe_from_dict
from raykd.errors import ConfigError
from raykd.pipeline.runner import RecipeRunner
from raykd.train.hooks import FailOnce


def tiny_recipe(name, toy_beir_dir, tiny_encoder_dir, storage, stages=None, eval_extra=None,
                **extra):
    stage = {
        "name": "mm",
        "teacher": {"kind": "bm25"},
        "data": {"dataset": toy_beir_dir, "split": "train", "negatives_from": "bm25",
                 "depth": 10, "num_negatives": 3},
        "loss": {"name": "margin_mse"},
        "train": {"num_workers": 1, "batch_size": 4, "max_steps": 4, "lr": 1e-3,
                  "log_every": 1, "checkpoint_every": 2},
        "eval": {"split": "dev", "k": 10, **(eval_extra or {})},
    }
    return recipe_from_dict({
        "name": name, "storage": str(storage),
        "student": {"model": tiny_encoder_dir, "pooling": "mean", "similarity": "dot",
                    "passage_max_length": 24, "query_max_length": 12},
        "stages": stages or [stage], **extra})


def test_recipe_run_lands_in_a_real_mlflow_server(ray_local, mlflow_server, toy_beir_dir,
                                                  tiny_encoder_dir, tmp_path, monkeypatch):
    """Guards tracking end to end: params, step metrics, eval metrics, lineage and a student
    that SentenceTransformer loads, all in one MLflow run (with a nested stage run)."""
    import mlflow.artifacts
    from mlflow.tracking import MlflowClient
    from sentence_transformers import SentenceTransformer

    from raykd.students import BiEncoder

    # trained on passages cut to 8 tokens, evaluated at 32 (the toy passages have ~16): the
    # saved student must serve at 32
    recipe = tiny_recipe("e2e", toy_beir_dir, tiny_encoder_dir, tmp_path / "out",
                         eval_extra={"query_max_length": 32, "passage_max_length": 32},
                         student={"model": tiny_encoder_dir, "pooling": "mean",
                                  "similarity": "dot", "passage_max_length": 8,
                                  "query_max_length": 8},
                         tracking={"tracking_uri": mlflow_server, "experiment": "e2e"},
                         eval_initial=True)
    summary = RecipeRunner(recipe).run()
    assert summary["stages"][0]["steps"] == 4
    assert set(summary["test"]) == {"nDCG@10", "RR@10", "R@100", "R@1000"}

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("e2e")
    runs = client.search_runs([experiment.experiment_id], "tags.`raykd.run` = 'e2e'")
    parent = next(r for r in runs if r.data.tags["raykd.stage"] == "")
    child = next(r for r in runs if r.data.tags["raykd.stage"] == "mm")
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert parent.data.params["stages.0.loss.name"] == "margin_mse"
    assert parent.data.params["student.model"] == tiny_encoder_dir
    assert "test/nDCG_at_10" in parent.data.metrics
    assert any(k.startswith("lineage.dataset.") for k in parent.data.tags)
    assert parent.data.tags["raykd.git_commit"] != ""
    assert child.data.tags["lineage.teacher_fingerprint"].startswith("bm25-")
    assert "dev/nDCG_at_10" in child.data.metrics
    steps = [m.step for m in client.get_metric_history(child.info.run_id, "train/loss")]
    assert steps == [1, 2, 3, 4]

    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert plots == {"plots/loss_curve.png", "plots/teacher_vs_student.png"}
    # the student is an MLflow model (sentence-transformers flavour): its model folder (MLflow
    # reaches a model's mlflow-artifacts: location through the process-wide tracking URI)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    model = mlflow.artifacts.download_artifacts(f"runs:/{parent.info.run_id}/student",
                                                dst_path=str(tmp_path / "dl"))
    local = str(Path(model) / "model.sentence_transformer")
    texts = ["cell mitosis", "bank interest rate"]
    st = SentenceTransformer(local, device="cpu").encode(texts)
    np.testing.assert_allclose(st, BiEncoder.from_pretrained(local).encode_passages(texts),
                               atol=1e-5)
    results = json.loads((tmp_path / "out" / "e2e" / "results.json").read_text())
    assert results["test"] == pytest.approx(summary["test"])
    # the before-training metrics are in results.json too, on the eval and the test split
    assert set(results["initial"]) == {"dev", "test"}
    assert results["initial"]["test"]["nDCG@10"] == pytest.approx(
        summary["initial"]["test"]["nDCG@10"])

    # plain sentence-transformers, in a process that cannot import raykd, scores the logged
    # student's test run as raykd's evaluation did (run.trec keeps 6 decimals)
    ours = _trec_scores(tmp_path / "out" / "e2e" / "eval-test" / "run.trec")
    theirs = _sentence_transformers_scores(local, toy_beir_dir, ours)
    assert theirs.keys() == ours.keys() and len(ours) > 20
    for pair, score in ours.items():
        assert theirs[pair] == pytest.approx(score, abs=1e-4), pair


def test_a_run_keeps_artefacts_and_its_student_model_on_the_mlflow_server(
        ray_local, mlflow_server, mlflow_server_root, toy_beir_dir, tiny_encoder_dir, tmp_path,
        monkeypatch, capsys):
    """Guards MLflow on a tracking server: the artefacts and the student, an MLflow model with
    its signature, are on the server's artefact store, not the job's disk; the model loads with
    `mlflow.pyfunc` and encodes as raykd does; a rerun with the same recipe resumes the same
    MLflow run, one with other params (from another storage) is refused in one line."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from raykd.errors import one_line_errors
    from raykd.students import BiEncoder

    def recipe(storage, lr=1e-3):
        stage = tiny_recipe("served", toy_beir_dir, tiny_encoder_dir, storage
                            ).stages[0].model_dump(mode="json")
        stage["train"].update(max_steps=2, lr=lr)
        stage["eval"] = {"split": None, "query_max_length": 32, "passage_max_length": 32}
        return tiny_recipe("served", toy_beir_dir, tiny_encoder_dir, storage, stages=[stage],
                           test_split=None,
                           student={"model": tiny_encoder_dir, "pooling": "mean",
                                    "similarity": "dot", "passage_max_length": 8,
                                    "query_max_length": 8},
                           tracking={"tracking_uri": mlflow_server, "experiment": "served"})

    out = tmp_path / "out"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)  # a user's, kept by the run
    summary = RecipeRunner(recipe(out)).run()
    assert os.environ["MLFLOW_TRACKING_URI"] == mlflow_server
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("served")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    query = "tags.`raykd.run` = 'served' and tags.`raykd.stage` = ''"
    (parent,) = client.search_runs([experiment.experiment_id], query)
    run_id = parent.info.run_id
    assert summary["mlflow_model"] == f"runs:/{run_id}/student"

    # on the server's store, not under the job's storage
    store = mlflow_server_root / "artifacts" / experiment.experiment_id
    assert (store / run_id / "artifacts" / "recipe.yaml").exists()
    assert (store / run_id / "artifacts" / "plots" / "loss_curve.png").exists()
    (model_dir,) = [p.parent for p in store.glob("models/*/artifacts/MLmodel")]
    assert (model_dir / "model.sentence_transformer" / "model.safetensors").exists()
    assert not list(out.rglob("MLmodel")) and not (out / "mlartifacts").exists()

    # the pyfunc model: strings in, float32 vectors out, the vectors raykd evaluates with
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/student")
    signature = model.metadata.signature
    assert signature.inputs.input_types() == [mlflow.types.DataType.string]
    assert signature.outputs.inputs[0].type == np.dtype("float32")
    texts = ["cell mitosis division chromosome spindle nucleus cell mitosis division",
             "bank interest rate inflation central money bank interest rate inflation"]
    ours = BiEncoder.from_pretrained(summary["student"], query_max_length=32,
                                     passage_max_length=32).encode_passages(texts)
    theirs = np.asarray(model.predict(texts))
    assert theirs.shape == ours.shape == (2, 32)
    np.testing.assert_allclose(theirs, ours, atol=1e-5)

    # the same recipe again: the same MLflow run, explicitly, and no second model
    lines: list[str] = []
    RecipeRunner(recipe(out), echo=lines.append).run()
    assert any("already done" in line for line in lines)
    (again,) = client.search_runs([experiment.experiment_id], query)
    assert again.info.run_id == run_id and again.info.status == "FINISHED"
    assert len(client.search_logged_models([experiment.experiment_id])) == 1

    # other params under the name (from a fresh storage: only MLflow knows the name): refused
    # in one line, before anything is written, the run and its params untouched
    elsewhere = tmp_path / "elsewhere"
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused, one_line_errors():
        RecipeRunner(recipe(elsewhere, lr=2e-3)).run()
    assert refused.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: config field 'stages.0.train.lr': MLflow run " + run_id)
    assert "'0.001'" in line and "'0.002'" in line and "new `name`" in line
    assert not (elsewhere / "served" / "recipe.yaml").exists()
    (after,) = client.search_runs([experiment.experiment_id], query)
    assert after.data.params["stages.0.train.lr"] == "0.001"
    assert after.info.status == "FINISHED"


def test_a_server_experiment_with_local_artefacts_is_named_in_one_line(mlflow_server, tmp_path,
                                                                        caplog):
    """Guards experiments created before artefacts went through the server: a `file://`
    location is kept (MLflow fixes it at creation) and said in one warning line."""
    from mlflow.tracking import MlflowClient

    from raykd.tracking import Tracker

    MlflowClient(mlflow_server).create_experiment("legacy", (tmp_path / "arts").as_uri())
    with caplog.at_level("WARNING", logger="raykd.tracking"):
        Tracker("old", "legacy", mlflow_server).finish()
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert (tmp_path / "arts").as_uri() in warning and mlflow_server in warning
    assert "\n" not in warning


def _trec_scores(path) -> dict[tuple[str, str], float]:
    rows = (line.split() for line in open(path))
    return {(qid, pid): float(score) for qid, _, pid, _, score, _ in rows}


ST_SCORER = """
import importlib.abc, json, sys
class NoRaykd(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "raykd" or name.startswith("raykd."):
            raise ImportError("raykd is blocked in this process")
sys.meta_path.insert(0, NoRaykd())
from sentence_transformers import SentenceTransformer
model_dir, data_dir, pairs_file = sys.argv[1:]
pairs = json.load(open(pairs_file))
corpus = {}
for line in open(f"{data_dir}/corpus.jsonl"):
    doc = json.loads(line)
    title = doc.get("title") or ""
    corpus[doc["_id"]] = f"{title} {doc['text']}".strip() if title else doc["text"]
queries = {json.loads(l)["_id"]: json.loads(l)["text"] for l in open(f"{data_dir}/queries.jsonl")}
model = SentenceTransformer(model_dir, device="cpu")
qids, pids = sorted({q for q, _ in pairs}), sorted({p for _, p in pairs})
q = dict(zip(qids, model.encode_query([queries[i] for i in qids])))
p = dict(zip(pids, model.encode_document([corpus[i] for i in pids])))
assert not any(m.startswith("raykd") for m in sys.modules)
print(json.dumps([[a, b, float(q[a] @ p[b])] for a, b in pairs]))
"""


def _sentence_transformers_scores(model_dir, data_dir, pairs) -> dict[tuple[str, str], float]:
    import subprocess
    import sys
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump([list(k) for k in pairs], f)
    out = subprocess.run([sys.executable, "-c", ST_SCORER, str(model_dir), str(data_dir), f.name],
                         capture_output=True, text=True, check=True,
                         env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                              "PATH": "/usr/bin:/bin"})
    return {(a, b): s for a, b, s in json.loads(out.stdout.strip().splitlines()[-1])}


def test_driver_resumes_at_the_first_unfinished_stage(ray_local, toy_beir_dir,
                                                      tiny_encoder_dir, tmp_path):
    """Guards stage-level resume: after a failure in stage 2, a rerun skips stage 1 and
    continues stage 2 from its checkpoint (step 2 of 4, not from zero); stage 2 starts from
    stage 1's student. This is also the suite's resume-by-name check (the trainer-level one,
    `test_stopped_run_resumes_by_name`, runs under `make test-full`)."""
    from ray.train import WorkerGroupError
    from steplog import StepLog

    base = tiny_recipe("two", toy_beir_dir, tiny_encoder_dir, tmp_path / "out").stages[0]
    first = base.model_copy(update={"name": "first", "eval": base.eval.model_copy(
        update={"split": None})})
    second = base.model_copy(update={"name": "second"})
    stages = [s.model_dump(mode="json") for s in (first, second)]
    recipe = tiny_recipe("two", toy_beir_dir, tiny_encoder_dir, tmp_path / "out", stages=stages,
                         test_split=None)
    lines: list[str] = []
    runner = RecipeRunner(recipe, step_hooks={1: [FailOnce(3, tmp_path / "died")]},
                          echo=lines.append)
    with pytest.raises(WorkerGroupError):
        runner.run()
    assert runner.first_unfinished() == 1
    lines.clear()
    log = StepLog(tmp_path / "rerun.steps.jsonl")
    summary = RecipeRunner(recipe, echo=lines.append, train_callbacks=[log.callback()]).run()
    assert any("already done" in line and "'first'" in line for line in lines)
    assert [s["name"] for s in summary["stages"]] == ["first", "second"]
    assert summary["stages"][1]["steps"] == 4
    assert [e["step"] for e in log.entries()] == [3, 4]  # from the step-2 checkpoint
    rerun = tiny_recipe("two", toy_beir_dir, tiny_encoder_dir, tmp_path / "out",
                        stages=stages, test_split=None)
    assert RecipeRunner(rerun).first_unfinished() == 2
    changed = rerun.model_copy(update={"test_split": "test"})
    with pytest.raises(ConfigError, match="test_split"):
        RecipeRunner(changed).run()


def test_a_run_that_trained_nothing_does_not_lock_its_name(ray_local, mlflow_server, toy_beir_dir,
                                                          tiny_encoder_dir, tmp_path):
    """Guards the rerun policy: a run that stopped before training (a malformed candidates
    line) reruns under its name with a changed recipe, not refused as 'a different value'; its
    MLflow run then holds the new params, the stopped attempt's kept under `<name>~<id>`."""
    from mlflow.tracking import MlflowClient

    from raykd.errors import DataError, user_error

    bad = tmp_path / "groups.jsonl"
    bad.write_text('{"qid": "q1", "pids": \n')
    tracking = {"tracking_uri": mlflow_server, "experiment": "rerun"}

    def recipe(lr: float):
        stage = tiny_recipe("typo", toy_beir_dir, tiny_encoder_dir, tmp_path / "out"
                            ).stages[0].model_dump(mode="json")
        stage["data"]["candidates"] = str(bad)
        stage["train"]["lr"] = lr
        return tiny_recipe("typo", toy_beir_dir, tiny_encoder_dir, tmp_path / "out",
                           stages=[stage], tracking=tracking)

    with pytest.raises(DataError) as first:
        RecipeRunner(recipe(1e-3)).run()
    assert isinstance(user_error(first.value), DataError), first.value
    lines: list[str] = []
    with pytest.raises(DataError) as second:  # the same bad line, not the name's lock
        RecipeRunner(recipe(2e-3), echo=lines.append).run()
    assert isinstance(user_error(second.value), DataError), second.value
    assert any("trained nothing" in line and "stages.0.train.lr" in line for line in lines)

    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("rerun")
    (now,) = client.search_runs([exp.experiment_id],
                                "tags.`raykd.run` = 'typo' and tags.`raykd.stage` = ''")
    assert now.data.params["stages.0.train.lr"] == "0.002"
    (before,) = client.search_runs(
        [exp.experiment_id], "tags.`raykd.run` LIKE 'typo~%' and tags.`raykd.stage` = ''")
    assert before.data.params["stages.0.train.lr"] == "0.001"
    assert before.info.status == "FAILED"


def test_adam_then_data_progressive_stage(ray_local, toy_beir_dir, tiny_encoder_dir, tmp_path):
    """Guards the method wiring: ADAM's dark examples reach the teacher and the loss (kept
    fraction logged), and a PROD data-progressive stage trains on confusing queries only."""
    from raykd.data.groups import iter_groups

    base = tiny_recipe("methods", toy_beir_dir, tiny_encoder_dir, tmp_path / "out").stages[0]
    adam = base.model_copy(update={
        "name": "adam",
        "dark": base.dark.model_copy(update={"enabled": True, "k": 2}),
        "loss": base.loss.model_copy(update={"name": "adam", "params": {"rho": 0.5}}),
        "eval": base.eval.model_copy(update={"split": None}),
    })
    dpd = base.model_copy(update={
        "name": "dpd",
        "data": base.data.model_copy(update={"negatives_from": "student", "sampling": "hardest",
                                             "query_filter": "confusing"}),
        "loss": base.loss.model_copy(update={"name": "prod", "params": {"lambda_reg": 1.0}}),
        "train": base.train.model_copy(update={"batch_size": 1, "max_steps": 2}),
        "eval": base.eval.model_copy(update={"split": None}),
    })
    recipe = tiny_recipe("methods", toy_beir_dir, tiny_encoder_dir, tmp_path / "out",
                         stages=[s.model_dump(mode="json") for s in (adam, dpd)],
                         test_split=None, tracking={"enabled": False})
    lines: list[str] = []
    summary = RecipeRunner(recipe, echo=lines.append).run()
    scored = tmp_path / "out" / "methods" / "stages" / "00-adam" / "scored"
    groups = [g for f in sorted(scored.glob("*.parquet")) for g in iter_groups(f)]
    kinds = [k for g in groups for k in g["kinds"]]
    assert kinds.count("dark_mix") == kinds.count("dark_mask") == len(groups)
    for g in groups:
        dark = [i for i, k in enumerate(g["kinds"]) if k.startswith("dark")]
        assert all(g["labels"][i] == 0 for i in dark)
        assert len(g["teacher_scores"]) == len(g["pids"])
    assert any("dark examples:" in line for line in lines)
    assert any("data-progressive:" in line for line in lines)
    assert [s["name"] for s in summary["stages"]] == ["adam", "dpd"]
