"""Re-ranking evaluation: first-stage union, teacher scores through the scoring stage, cascades,
and option checking."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from raykd.config import teacher_spec
from raykd.data.beir import BeirDataset
from raykd.data.groups import iter_groups
from raykd.errors import ConfigError
from raykd.eval.metrics import evaluate_run, read_trec_run
from raykd.eval.rerank import (
    CANDIDATE_RECALL,
    load_teacher_spec,
    ranked_ids,
    rerank,
    resolve_teacher,
    teacher_preset,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bm25_rerank(ray_local, toy_beir_dir, tiny_encoder_dir, tmp_path_factory):
    """BM25 teacher re-ranking the toy dev split's BM25 + tiny-dense union (depth 10)."""
    work = tmp_path_factory.mktemp("rerank")
    dataset = BeirDataset.from_dir(toy_beir_dir)
    kwargs = {"depth": 10, "first_stage_model": tiny_encoder_dir, "work_dir": work / "work",
              "score_cache": str(work / "cache"), "embedding_cache": str(work / "emb"),
              "concurrency": 1}
    result = rerank(dataset, "dev", teacher_preset("bm25"), **kwargs)
    result.save(work / "out")
    return dataset, result, kwargs, work


def test_bm25_rerank_metrics_equal_hand_computed_scores(bm25_rerank):
    """Guards score/candidate misalignment in the rerank path: every candidate's score is the
    BM25 teacher's own score of that (query, passage), and the metrics are those of that run."""
    from raykd.teachers.factory import build_teacher

    dataset, result, _, work = bm25_rerank
    groups = list(iter_groups(result.info["candidates"]))
    teacher = build_teacher(teacher_spec(kind="bm25"), str(dataset.root))
    hand = {}
    for g in groups:
        scores = teacher.score([g["query"]] * len(g["texts"]), g["texts"])
        hand[g["qid"]] = dict(zip(g["pids"], scores.tolist(), strict=True))
    assert set(hand) == set(result.run) == set(dataset.queries("dev"))
    for qid, scores in hand.items():
        assert set(scores) == set(result.run[qid])
        np.testing.assert_allclose([result.run[qid][p] for p in scores], list(scores.values()),
                                   rtol=1e-5, atol=1e-6)
    expected = evaluate_run(dataset.qrels("dev"), hand, ["nDCG@10", "RR@10", "R@100"])
    for name, value in expected.items():
        assert result.metrics[name] == pytest.approx(value, abs=1e-9)
    # The union holds the BM25 top-10 and the dense top-10, so its recall bounds any re-ranking.
    assert 10 <= min(len(g["pids"]) for g in groups) <= max(len(g["pids"]) for g in groups) <= 20
    assert result.metrics[CANDIDATE_RECALL] >= result.metrics["R@10"]
    saved = read_trec_run(work / "out" / "run.trec")
    assert ranked_ids(saved["cells-q1"]) == ranked_ids(result.run["cells-q1"])


def test_bm25_rerank_scores_equal_bm25_retrieval_on_the_candidates(bm25_rerank):
    """Guards a drift between the BM25 teacher and BM25 retrieval (bm25s): on the candidate set
    the re-ranked scores are the retrieval scores, so the two rankings agree."""
    from raykd.eval.retrieval import bm25_retrieval

    dataset, result, _, _ = bm25_rerank
    retrieved = bm25_retrieval(dataset, "dev", k=48).run
    for qid, scores in result.run.items():
        common = [p for p in scores if retrieved[qid].get(p, 0.0) > 0]
        assert common
        np.testing.assert_allclose([scores[p] for p in common],
                                   [retrieved[qid][p] for p in common], rtol=1e-4, atol=1e-5)


def test_rerun_is_served_from_the_score_cache(bm25_rerank):
    """Guards the promise that reruns are free: the same rerank scores no pair twice."""
    dataset, first, kwargs, _ = bm25_rerank
    again = rerank(dataset, "dev", teacher_preset("bm25"), **kwargs)
    assert again.info["pairs_scored"] == 0
    assert again.metrics == first.metrics


def test_cascade_reranks_only_the_top_k_and_keeps_the_tail(bm25_rerank, tiny_encoder_dir):
    """Guards the cascade: only the top K of the base run get teacher scores, they stay above
    the rest, and the tail keeps the base run's order (so R@depth is the base run's)."""
    dataset, base, kwargs, work = bm25_rerank
    spec = teacher_preset("bi_encoder", tiny_encoder_dir)
    result = rerank(dataset, "dev", spec, cascade_run=work / "out" / "run.trec", cascade_k=3,
                    **{k: v for k, v in kwargs.items() if k != "depth"})
    assert result.info["pairs"] == 3 * len(base.run)
    for qid, scores in result.run.items():
        base_order = ranked_ids(base.run[qid])
        order = ranked_ids(scores)
        assert set(order[:3]) == set(base_order[:3])
        assert order[3:] == base_order[3:]
    base_recall = evaluate_run(dataset.qrels("dev"), base.run, ["R@3", "R@10"])
    assert result.metrics["R@3"] == pytest.approx(base_recall["R@3"])
    assert evaluate_run(dataset.qrels("dev"), result.run, ["R@10"])["R@10"] == pytest.approx(
        base_recall["R@10"])


def test_ensemble_preset_is_bm25_plus_minilm_zscore_equal_weights():
    """Guards the default teacher's definition (the measured one in the README)."""
    spec = teacher_preset("ensemble")
    assert spec.kind == "ensemble" and spec.normalization == "zscore" and spec.weights is None
    assert [m.kind for m in spec.members] == ["bm25", "bi_encoder"]
    assert spec.members[1].model == "minilm"


def test_spec_files_load_and_bad_specs_name_the_field(tmp_path):
    """Guards spec files: YAML/JSON (bare or under `teacher:`) load; a bad field is a
    ConfigError that names it and the file."""
    good = tmp_path / "t.yaml"
    good.write_text("teacher:\n  kind: cross_encoder\n  model: /m\n  passage_max_length: 192\n")
    assert resolve_teacher(str(good)).passage_max_length == 192
    bad = tmp_path / "bad.json"
    bad.write_text('{"kind": "cross_encoder", "model": "/m", "batch_size": 0}')
    with pytest.raises(ConfigError, match=r"teacher\.batch_size.*bad\.json"):
        load_teacher_spec(bad)


@pytest.mark.parametrize("call, match", [
    (lambda: teacher_preset("cross_encoder"), r"needs a model"),
    (lambda: resolve_teacher("colbert"), r"neither a preset"),
    (lambda: teacher_preset("bm25", "minilm"), r"takes no model"),
])
def test_bad_teacher_choices_fail_clearly(call, match):
    """Guards the teacher options: a cross-encoder without a model, an unknown preset, a model
    given to BM25 are ConfigErrors that say what to do."""
    with pytest.raises(ConfigError, match=match):
        call()


def test_bad_rerank_options_fail_before_any_work(toy_beir_dir, tmp_path):
    """Guards option checking: a cascade without its run (or K), K < 1, depth < 1 and a run
    that misses the split's queries fail with ConfigError before any scoring."""
    dataset = BeirDataset.from_dir(toy_beir_dir)
    spec = teacher_preset("bm25")
    with pytest.raises(ConfigError, match="cascade"):
        rerank(dataset, "dev", spec, cascade_k=5)
    with pytest.raises(ConfigError, match="cascade"):
        rerank(dataset, "dev", spec, cascade_run="x.trec", cascade_k=0)
    with pytest.raises(ConfigError, match="depth"):
        rerank(dataset, "dev", spec, depth=0)
    partial = tmp_path / "partial.trec"
    partial.write_text("cells-q1 Q0 cells-d1 1 3.0 x\n")
    with pytest.raises(ConfigError, match=r"ranks nothing for 7 of the 8"):
        rerank(dataset, "dev", spec, cascade_run=partial, cascade_k=5)


def _job(name: str):
    spec = importlib.util.spec_from_file_location(f"job_{name}", ROOT / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rerank_job_rejects_bad_options_before_starting_ray(toy_beir_dir, capsys):
    """Guards the CLI: bad options are one `error:` line and exit 2, before Ray or a model
    starts."""
    job = _job("rerank")
    for argv, message in [(["--teacher", "cross_encoder"], "needs a model"),
                          (["--teacher", "bm25", "--cascade", "5"], "cascade"),
                          (["--teacher", "bm25", "--split", "nope"], "no qrels for split 'nope'")]:
        with pytest.raises(SystemExit) as done:
            job.main([*argv, "--data", toy_beir_dir])
        assert done.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and message in err[-1], (argv, err)
