"""Candidate generation: sampling policies, BM25 / dense / union mining, group files."""

from __future__ import annotations

import pytest

from raykd.data.beir import write_corpus, write_qrels, write_queries
from raykd.data.groups import iter_groups
from raykd.errors import ConfigError
from raykd.negatives import (
    NegativeSampler,
    interleave_rankings,
    mine_negatives,
    plan_groups,
    union_rankings,
)

RANKING = [f"p{i}" for i in range(20)]
POSITIVES = {"p3", "p7"}

CORPUS = [
    {"pid": "d1", "title": "Vitamin D and fractures",
     "text": "Vitamin D supplementation reduces hip fractures in elderly women."},
    {"pid": "d2", "title": "Vitamin D and immunity",
     "text": "Vitamin D levels modulate the immune response to infection."},
    {"pid": "d3", "title": "Hip fractures",
     "text": "Hip fractures in elderly patients raise mortality after surgery."},
    {"pid": "d4", "title": "Protein folding",
     "text": "Deep networks predict protein structures from amino acid sequences."},
    {"pid": "d5", "title": "Coral reefs", "text": "Ocean warming bleaches coral reefs worldwide."},
    {"pid": "d6", "title": "Insulin signalling",
     "text": "Insulin resistance in muscle precedes type 2 diabetes."},
    {"pid": "d7", "title": "Diabetes drugs",
     "text": "Metformin lowers glucose in type 2 diabetes patients."},
    {"pid": "d8", "title": "Sleep", "text": "Sleep deprivation impairs memory consolidation."},
]
QUERIES = {"q1": "vitamin d supplementation hip fractures elderly",
           "q2": "type 2 diabetes insulin resistance",
           "q3": "a query with no positive"}
QRELS = {"q1": {"d1": 1}, "q2": {"d6": 1}, "q3": {"d8": 0}}


@pytest.fixture
def toy_beir(tmp_path):
    root = tmp_path / "toy"
    write_corpus(root / "corpus.jsonl", CORPUS)
    write_queries(root / "queries.jsonl", QUERIES)
    write_qrels(root / "qrels" / "train.tsv", QRELS)
    return root


def test_hardest_takes_the_top_ranked_non_positives_in_rank_order():
    """Guards `hardest` (PROD's descend): positives skipped, nothing beyond the first n."""
    sampler = NegativeSampler(num_negatives=4, sampling="hardest", depth=100)
    assert sampler.sample("q", RANKING, POSITIVES) == [(0, "p0"), (1, "p1"), (2, "p2"), (4, "p4")]


def test_random_draws_from_top_k_without_positives_and_is_seeded_per_query():
    """Guards `random`: only the top `depth`, never a positive, no repeats, the same draw for a
    (seed, qid) whatever else is sampled first, a different draw for another seed."""
    sampler = NegativeSampler(num_negatives=5, sampling="random", depth=10, seed=7)
    first = sampler.sample("q1", RANKING, POSITIVES)
    pids = [p for _, p in first]
    assert len(set(pids)) == 5 and not set(pids) & POSITIVES
    assert all(rank < 10 for rank, _ in first)
    sampler.sample("q2", RANKING, POSITIVES)  # order of queries must not matter
    assert NegativeSampler(5, "random", 10, seed=7).sample("q1", RANKING, POSITIVES) == first
    draws = {tuple(NegativeSampler(5, "random", 10, seed=s).sample("q1", RANKING, POSITIVES))
             for s in range(6)}
    assert len(draws) > 1


def test_window_samples_only_ranks_inside_the_window():
    """Guards `window`: ranks in [start, end), positives excluded, short pools not padded."""
    sampler = NegativeSampler(num_negatives=3, sampling="window", depth=100, window=(5, 12))
    got = sampler.sample("q", RANKING, POSITIVES)
    assert len(got) == 3 and all(5 <= r < 12 and p not in POSITIVES for r, p in got)
    short = NegativeSampler(num_negatives=10, sampling="window", depth=100, window=(6, 9))
    assert sorted(short.sample("q", RANKING, POSITIVES)) == [(6, "p6"), (8, "p8")]


def test_bad_policy_is_a_config_error_naming_the_field():
    """Guards eager validation: a typo'd policy or inverted window fails before any mining."""
    with pytest.raises(ConfigError, match="data.sampling"):
        NegativeSampler(sampling="hard")
    with pytest.raises(ConfigError, match="data.window"):
        NegativeSampler(sampling="window", window=(9, 3))


def test_union_interleaves_ranks_and_dedupes():
    """Guards the union source: rank-by-rank round robin, first occurrence kept, depth cut."""
    assert interleave_rankings([["a", "b", "c"], ["b", "d", "e"]]) == ["a", "b", "d", "c", "e"]
    got = union_rankings({"q": ["a", "b"]}, {"q": ["c", "a"], "r": ["x"]}, depth=3)
    assert got == {"q": ["a", "c", "b"], "r": ["x"]}


def test_plan_excludes_any_judged_relevant_pid_and_skips_queries_without_positive():
    """Guards label leakage: a graded-relevant passage below min_rel is neither a positive nor a
    negative; a query with no positive yields no group."""
    plans = list(plan_groups({"q": ["a", "b", "c", "d"], "z": ["a"]},
                             {"q": {"b": 2, "c": 1}, "z": {"a": 0}},
                             NegativeSampler(num_negatives=5, sampling="hardest"), min_rel=2))
    assert [p["qid"] for p in plans] == ["q"]
    assert plans[0]["pids"] == ["b", "a", "d"] and plans[0]["labels"] == [1, 0, 0]
    assert plans[0]["kinds"] == ["pos", "neg", "neg"]


def test_bm25_mining_finds_the_lexical_near_misses(toy_beir, tmp_path):
    """Guards BM25 mining end to end: the hard negatives are the passages sharing the query's
    words, positives come first with label 1, texts come from the corpus, a query without a
    positive is skipped, and the same seed gives byte-identical files."""
    kwargs = dict(source="bm25", depth=3, num_negatives=2, sampling="hardest")
    report = mine_negatives(toy_beir, "train", tmp_path / "a.jsonl", **kwargs)
    groups = {g["qid"]: g for g in iter_groups(tmp_path / "a.jsonl")}
    assert report.groups == 2 and report.skipped_no_positive == 1 and report.negatives == 4
    assert groups["q1"]["pids"][0] == "d1" and set(groups["q1"]["pids"][1:]) == {"d2", "d3"}
    assert groups["q2"]["pids"][0] == "d6" and "d7" in groups["q2"]["pids"][1:]
    assert groups["q1"]["labels"] == [1, 0, 0] and groups["q1"]["kinds"] == ["pos", "neg", "neg"]
    text = {c["pid"]: f"{c['title']} {c['text']}" for c in CORPUS}
    assert groups["q1"]["texts"] == [text[p] for p in groups["q1"]["pids"]]
    kwargs["sampling"] = "random"
    mine_negatives(toy_beir, "train", tmp_path / "r1.jsonl", seed=3, **kwargs)
    mine_negatives(toy_beir, "train", tmp_path / "r2.jsonl", seed=3, **kwargs)
    assert (tmp_path / "r1.jsonl").read_bytes() == (tmp_path / "r2.jsonl").read_bytes()
    assert (tmp_path / "r1.jsonl.mining.yaml").is_file()


def test_max_queries_keeps_a_seeded_sample_of_labelled_queries(toy_beir_dir, tmp_path):
    """Guards the training-budget knob: exactly `max_queries` labelled queries, the same ones
    for the same seed, and a bad value fails naming the field."""
    from raykd.errors import ConfigError

    kwargs = dict(source="bm25", depth=5, num_negatives=2, max_queries=5)
    a = mine_negatives(toy_beir_dir, "train", tmp_path / "a.jsonl", seed=1, **kwargs)
    mine_negatives(toy_beir_dir, "train", tmp_path / "b.jsonl", seed=1, **kwargs)
    mine_negatives(toy_beir_dir, "train", tmp_path / "c.jsonl", seed=2, **kwargs)
    qids = [[g["qid"] for g in iter_groups(tmp_path / f"{n}.jsonl")] for n in "abc"]
    assert a.groups == 5 and len(set(qids[0])) == 5
    assert qids[0] == qids[1] and set(qids[0]) != set(qids[2])
    with pytest.raises(ConfigError, match="data.max_queries"):
        mine_negatives(toy_beir_dir, "train", tmp_path / "d.jsonl", source="bm25",
                       max_queries=0)


def test_union_mining_with_a_tiny_encoder_end_to_end(ray_local, toy_beir, tmp_path,
                                                     tiny_encoder_dir):
    """Guards dense mining end to end (Ray Data encoding -> faiss), its union with BM25, the
    Ray Data text lookup, and sharded parquet output driven by a DataSpec."""
    from raykd.config import DataSpec
    from raykd.negatives import mine_from_spec

    spec = DataSpec(dataset=str(toy_beir), split="train", negatives_from="union", depth=6,
                    num_negatives=3, sampling="random", seed=5)
    report = mine_from_spec(spec, tmp_path / "union", model=tiny_encoder_dir, num_shards=2,
                            fmt="parquet", concurrency=1, batch_size=4)
    assert len(report.outputs) == 2 and report.groups == 2 and report.negatives == 6
    assert {"bm25", "dense"} <= set(report.seconds)
    groups = [g for path in report.outputs for g in iter_groups(path)]
    corpus_ids = {c["pid"] for c in CORPUS}
    text = {c["pid"]: f"{c['title']} {c['text']}" for c in CORPUS}
    for g in groups:
        positives = [p for p, grade in QRELS[g["qid"]].items() if grade > 0]
        assert g["pids"][:len(positives)] == positives and g["labels"] == [1] + [0] * 3
        assert not set(g["pids"][len(positives):]) & set(positives)
        assert set(g["pids"]) <= corpus_ids and len(set(g["pids"])) == len(g["pids"])
        assert g["texts"] == [text[p] for p in g["pids"]]


def test_refresh_mines_with_the_student_and_the_stage_policy(monkeypatch, tmp_path):
    """Guards PROD's refresh wiring: dense retrieval by the given student (source 'student'),
    with the stage's depth, sampling, window and seed, whatever source the spec names."""
    from raykd.config import DataSpec
    from raykd.negatives import candidates

    seen = {}
    monkeypatch.setattr(candidates, "mine_negatives",
                        lambda data, split, out, **kw: seen.update(kw, data=data, split=split))
    spec = DataSpec(dataset=str(tmp_path), split="train", negatives_from="bm25", depth=100,
                    num_negatives=15, sampling="hardest", window=(2, 50), seed=9)
    candidates.refresh_negatives(tmp_path / "student", spec, tmp_path / "out", concurrency=3)
    assert seen["source"] == "student" and seen["model"] == str(tmp_path / "student")
    assert (seen["depth"], seen["num_negatives"], seen["sampling"], seen["window"],
            seen["seed"], seen["concurrency"]) == (100, 15, "hardest", (2, 50), 9, 3)
