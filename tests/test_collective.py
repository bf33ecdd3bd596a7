"""CollectiveKD: ColBERT-PRF expansions, the token index, the collective teacher's in-batch
scores, and the recipe end to end with a late-interaction student (METHODS.md 4)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from raykd.config import PRFSpec, recipe_from_dict, teacher_spec
from raykd.errors import ConfigError
from raykd.index.late_interaction import TokenIndex
from raykd.teachers.prf import (
    Expansions,
    expand_queries,
    initial_positions,
    kmeans,
    most_frequent,
)

DIM = 8


def toy_token_index(docs: list[list[int]], noise: float = 0.01, seed: int = 0) -> TokenIndex:
    """A flat token index whose token id `t` always embeds near the unit vector e_(t - 100),
    with a little per-occurrence noise."""
    rng = np.random.default_rng(seed)
    ids = np.array([t for doc in docs for t in doc], dtype=np.int32)
    vectors = np.eye(DIM, dtype=np.float64)[ids - 100] + noise * rng.standard_normal((len(ids),
                                                                                      DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64)
    return TokenIndex("toy", [f"d{i}" for i in range(len(docs))], offsets, ids,
                      vectors.astype(np.float16), kind="flat")


# Feedback passages 0-2 each repeat one token; 3-6 are the rest of the collection.
DOCS = [[101, 101], [102, 102, 102], [100, 100], [100, 104], [100, 101], [105], [105, 105]]


def test_idf_counts_a_token_once_per_passage():
    """Guards the IDF of ColBERT-PRF: log((1 + N) / (df + 1)) with df in passages, so a token
    repeated inside one passage is not made common by it."""
    idf = toy_token_index(DOCS).idf()
    n = len(DOCS)
    assert idf[100] == pytest.approx(math.log((1 + n) / (3 + 1)))  # passages 2, 3, 4
    assert idf[101] == pytest.approx(math.log((1 + n) / (2 + 1)))  # twice in 0, once in 4
    assert idf[102] == pytest.approx(math.log((1 + n) / (1 + 1)))  # three times in 1


def test_initial_centroids_are_spread_over_the_feedback_passages():
    """Guards `kmeans_init=avg_step_position`: clusters shared out over the passages (earlier
    ones get the remainder), evenly spaced inside each, never past a passage's end."""
    rows = initial_positions([10, 4, 6], clusters=5)
    # 2 + 2 + 1 clusters; passage starts are rows 0, 10 and 14.
    assert rows.tolist() == [0, 9, 10, 13, 14]
    # A short passage gives fewer distinct positions than its share.
    assert initial_positions([2], clusters=4).tolist() == [0, 1]
    # An empty passage gets no share: both clusters go to the 3-token passage (rows 0-2).
    assert initial_positions([0, 3], clusters=2).tolist() == [0, 2]


def test_kmeans_converges_to_separated_groups_deterministically():
    rng = np.random.default_rng(1)
    centres = np.array([[5.0, 0.0], [0.0, 5.0], [-5.0, -5.0]])
    points = np.concatenate([c + 0.1 * rng.standard_normal((20, 2)) for c in centres])
    init = points[[0, 20, 40]]
    found = kmeans(points, init)
    assert np.allclose(found, [points[i * 20:(i + 1) * 20].mean(0) for i in range(3)],
                       atol=1e-5)
    assert np.array_equal(found, kmeans(points, init))
    assert most_frequent([7, 3, 3, 7, -1]) == 7 and most_frequent([-1]) == -1


def test_prf_expansion_on_a_toy_index_keeps_the_rarest_tokens_by_idf():
    """Guards 4(b) steps 2-4: one centroid per feedback token group, named by the most frequent
    of its nearest index tokens, weighted IDF x beta, the heaviest kept, heaviest first."""
    index = toy_token_index(DOCS)
    params = PRFSpec(docs=3, clusters=3, expansions=2, beta=2.0, neighbours=3)
    out = expand_queries(index, {"q": [0, 1, 2, 5], "short": [5]}, params)

    assert out.centroids.shape == (2, 2, DIM) and out.weights.shape == (2, 2)
    idf = index.idf()
    # Feedback of q: tokens 101, 102, 100 (passage 5 is beyond docs=3). By IDF: 102 > 101 > 100.
    assert out.tokens[0].tolist() == [102, 101]
    assert out.weights[0] == pytest.approx([2.0 * idf[102], 2.0 * idf[101]])
    assert out.weights[0][0] > out.weights[0][1]
    # The centroids are the (unnormalised) means of their token groups.
    expected = np.asarray(index.vectors[2:5], np.float32).mean(0)  # passage 1's three 102s
    assert np.allclose(out.centroids[0, 0], expected, atol=1e-3)
    # One feedback token gives one centroid; the second row is padding with zero weight.
    assert out.tokens[1].tolist() == [105, -1]
    assert out.weights[1][1] == 0 and not out.centroids[1, 1].any()


def test_expansions_round_trip_and_an_unknown_query_fails(tmp_path):
    index = toy_token_index(DOCS)
    out = expand_queries(index, {"a": [0, 1], "b": [3]}, PRFSpec(docs=2, clusters=2,
                                                                   expansions=2, neighbours=2))
    loaded = Expansions.load(out.save(tmp_path / "x.npz"))
    centroids, weights = loaded.lookup(["b", "a"])
    assert np.array_equal(centroids[1], out.centroids[0])
    assert np.array_equal(weights[0], out.weights[1])
    assert loaded.meta["params"]["clusters"] == 2
    with pytest.raises(KeyError, match="no PRF expansion for queries \\['zzz'\\]"):
        loaded.lookup(["a", "zzz"])


@pytest.mark.parametrize("prf, message", [
    ({"expansions": 30, "clusters": 24}, "prf.expansions.*30 expansions cannot come from 24"),
    ({"docs": 0}, "prf.docs.*greater than or equal to 1"),
])
def test_bad_prf_settings_name_the_field(tiny_encoder_dir, prf, message):
    teacher = {"kind": "collective", "model": tiny_encoder_dir, "prf": prf}
    stage = {"name": "s", "teacher": teacher, "loss": {"name": "collective"}}
    with pytest.raises(ConfigError, match=f"stages.0.teacher.{message}"):
        recipe_from_dict({"name": "x", "stages": [stage]})


def test_recipe_validation_names_late_interaction_fields(tiny_encoder_dir):
    base = {"name": "x", "stages": [{"name": "s", "loss": {"name": "infonce"}}]}
    with pytest.raises(ConfigError, match="student.pooling.*only a bi_encoder student"):
        recipe_from_dict({**base, "student": {"kind": "late_interaction", "pooling": "mean"}})
    with pytest.raises(ConfigError, match="student.similarity"):
        recipe_from_dict({**base, "student": {"kind": "late_interaction", "similarity": "dot"}})
    teacher = {"kind": "collective", "model": tiny_encoder_dir, "similarity": "dot"}
    with pytest.raises(ConfigError, match="stages.0.teacher.similarity.*'cosine' or 'l2'"):
        recipe_from_dict({**base, "stages": [{**base["stages"][0], "teacher": teacher}]})


def test_token_index_search_equals_brute_force_maxsim(ray_local, toy_beir_dir, tiny_encoder_dir,
                                                      tmp_path):
    """Guards late-interaction retrieval: faiss candidates then exact MaxSim give the same top-k
    as scoring every passage, and the stored index is reused by key."""
    from raykd.data.beir import BeirDataset
    from raykd.index.late_interaction import corpus_token_index, query_tokens, retrieve

    dataset = BeirDataset.from_dir(toy_beir_dir)
    options = {"similarity": "l2", "passage_max_length": 24, "query_max_length": 12}
    index, encoder = corpus_token_index(tiny_encoder_dir, dataset.corpus_path, options,
                                        cache_dir=str(tmp_path / "cache"), concurrency=1)
    assert len(index) == 48 and index.num_tokens == int(index.offsets[-1]) > 48
    queries = dict(list(dataset.queries("dev").items())[:4])
    ranked = retrieve(index, encoder, queries, k=5, depth=index.num_tokens)

    for qid, q in zip(queries, query_tokens(encoder, list(queries.values())), strict=True):
        every = index.maxsim(q, np.arange(len(index)), "l2")
        top = np.lexsort((np.arange(len(index)), -every))[:5]
        assert [p for p, _ in ranked[qid]] == [index.pids[r] for r in top]
        assert [s for _, s in ranked[qid]] == pytest.approx(every[top].tolist(), abs=1e-4)

    again, _ = corpus_token_index(tiny_encoder_dir, dataset.corpus_path, options,
                                  cache_dir=str(tmp_path / "cache"), concurrency=1)
    assert again.folder == index.folder and isinstance(again.vectors, np.memmap)


def _tiny_collective_stage(toy_beir_dir, tiny_encoder_dir, **train):
    li = {"similarity": "l2", "mask_punctuation": True, "query_max_length": 12,
          "passage_max_length": 24}
    return li, {
        "name": "distill",
        "teacher": {"kind": "collective", "model": tiny_encoder_dir, **li,
                    "prf": {"docs": 2, "clusters": 4, "expansions": 2}},
        "data": {"dataset": toy_beir_dir, "split": "train", "negatives_from": "teacher",
                 "depth": 10, "num_negatives": 2},
        "loss": {"name": "collective", "params": {"teacher_temperature": 0.25}},
        "train": {"num_workers": 1, "batch_size": 4, "max_steps": 4, "lr": 1e-3,
                  "log_every": 1, "checkpoint_every": 2, **train},
        "eval": {"split": "dev", "k": 10},
    }


def test_collective_teacher_adds_weighted_expansion_terms(tiny_encoder_dir, tmp_path):
    """Guards 4(c): t(q, d) = sum_i max_j -|q_i - d_j|^2 + sum_e w_e max_j -|c_e - d_j|^2, for
    every query against every passage of the process's batch."""
    from raykd.train.batching import collate_groups
    from raykd.train.online_teacher import build_online_teacher

    li, stage = _tiny_collective_stage(None, tiny_encoder_dir)
    spec = teacher_spec(**stage["teacher"])
    rng = np.random.default_rng(0)
    centroids = rng.standard_normal((2, 2, 32)).astype(np.float32)
    weights = np.array([[1.5, 0.5], [2.0, 0.0]], np.float32)
    path = Expansions(["q1", "q2"], centroids, weights, np.zeros((2, 2), np.int32)).save(
        tmp_path / "e.npz")
    teacher = build_online_teacher(spec, torch.device("cpu"), {"expansions": str(path)})
    batch = collate_groups({
        "qid": ["q2", "q1"], "query": ["river delta flow", "insulin and glucose"],
        "texts": [["the river meets the sea.", "bank rates rise"], ["insulin, the pancreas"]],
        "labels": [[1, 0], [1]]}, list_size=2)
    got = teacher.in_batch_scores(batch, 0, 1)
    assert got.shape == (2, 4)

    model = teacher.model

    def tokens(text, side):
        inputs = model.tokenize([text], side)
        vectors, mask = (model.embed_queries if side == "query" else model.embed_passages)(inputs)
        return vectors[0][mask[0].bool()].double()

    def best(q, d):  # [n] max_j -|q_i - d_j|^2
        return (-torch.cdist(q, d) ** 2).amax(1)

    rows = {"q1": 0, "q2": 1}
    for b, (qid, query) in enumerate(zip(batch.qids, batch.queries, strict=True)):
        q = tokens(query, "query")
        c = torch.from_numpy(centroids[rows[qid]]).double()
        w = torch.from_numpy(weights[rows[qid]]).double()
        for col in range(4):
            p = batch.passage_index.flatten()[col]
            if p < 0:
                assert got[b, col] == 0  # padding column
                continue
            d = tokens(batch.passages[p], "passage")
            expected = best(q, d).sum() + (w * best(c, d)).sum()
            assert float(got[b, col]) == pytest.approx(float(expected), rel=1e-4, abs=1e-3)


@pytest.mark.slow
def test_collective_kd_recipe_runs_end_to_end(ray_local, toy_beir_dir, tiny_encoder_dir,
                                              tmp_path):
    """Guards the CollectiveKD stage: negatives from the teacher's own ranking (never a labelled
    positive), PRF expansions for every training query, in-batch KL steps on a late-interaction
    student that starts from the teacher and is evaluated by late-interaction retrieval."""
    import pyarrow.parquet as pq

    from raykd.data.beir import BeirDataset
    from raykd.pipeline.runner import RecipeRunner
    from raykd.students.late_interaction import LateInteractionEncoder

    li, stage = _tiny_collective_stage(toy_beir_dir, tiny_encoder_dir)
    recipe = recipe_from_dict({"name": "ckd", "storage": str(tmp_path / "out"),
                               "student": {"model": tiny_encoder_dir, "kind": "late_interaction",
                                           **li},
                               "stages": [stage]})
    summary = RecipeRunner(recipe).run()
    result = summary["stages"][0]
    assert result["steps"] == 4
    assert set(result["metrics"]) == {"nDCG@10", "RR@10", "R@100", "R@1000"}
    assert set(summary["test"]) == set(result["metrics"])

    qrels = BeirDataset.from_dir(toy_beir_dir).qrels("train")
    groups = pq.read_table(result["candidates"]).to_pylist()
    assert len(groups) == len(qrels)
    for group in groups:
        negatives = [p for p, label in zip(group["pids"], group["labels"], strict=True)
                     if not label]
        assert len(negatives) == 2 and not set(negatives) & set(qrels[group["qid"]])

    expansions = list((tmp_path / "out" / "collective").glob("expansions-*.npz"))
    assert len(expansions) == 1
    loaded = Expansions.load(expansions[0])
    assert set(loaded.qids) == {g["qid"] for g in groups}
    assert loaded.centroids.shape == (len(groups), 2, 32) and (loaded.weights[:, 0] > 0).all()

    student = LateInteractionEncoder.from_pretrained(summary["student"])
    teacher = LateInteractionEncoder.from_pretrained(tiny_encoder_dir)
    assert student.options.similarity == "l2" and student.options.mask_punctuation
    moved = [not torch.equal(a, b) for a, b in zip(student.encoder.state_dict().values(),
                                                   teacher.encoder.state_dict().values(),
                                                   strict=True)]
    assert any(moved), "training left the student equal to the teacher"


def test_evaluate_job_late_interaction_ranks_by_maxsim(ray_local, toy_beir_dir, tiny_encoder_dir,
                                                       tmp_path):
    """`jobs/evaluate.py --late-interaction` (how CollectiveKD's zero-shot row is measured)
    writes the run of late-interaction retrieval with its options; its flags need it."""
    import importlib.util

    from raykd.data.beir import BeirDataset
    from raykd.eval.late_interaction import late_interaction_retrieval
    from raykd.eval.metrics import read_trec_run

    spec = importlib.util.spec_from_file_location(
        "evaluate_job", Path(__file__).resolve().parents[1] / "jobs" / "evaluate.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    cache = str(tmp_path / "cache")
    common = ["--model", tiny_encoder_dir, "--data", toy_beir_dir, "--split", "dev",
              "--k", "10", "--passage-max-length", "24", "--query-max-length", "12",
              "--concurrency", "1", "--embedding-cache", cache]
    job.main([*common, "--late-interaction", "--similarity", "l2", "--mask-punctuation",
              "--out", str(tmp_path / "late")])
    late = read_trec_run(tmp_path / "late" / "run.trec")

    # The same options find the job's token index by key; other options would miss it.
    expected = late_interaction_retrieval(
        tiny_encoder_dir, BeirDataset.from_dir(toy_beir_dir), "dev", k=10, concurrency=1,
        cache_dir=cache, student_options={"similarity": "l2", "mask_punctuation": True,
                                          "passage_max_length": 24, "query_max_length": 12}).run
    # One token index: the job's options, mask_punctuation included, keyed it as these did.
    assert len([d for d in Path(cache).iterdir() if d.name.startswith("tokens-")]) == 1
    assert late.keys() == expected.keys()
    for qid, scores in expected.items():
        assert set(late[qid]) == set(scores)
        assert [late[qid][p] for p in scores] == pytest.approx(list(scores.values()), abs=1e-4)
    with pytest.raises(SystemExit, match="need --late-interaction"):
        job.main([*common, "--similarity", "l2"])
