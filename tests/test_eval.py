"""Metrics, run files, faiss and BM25 indexes, and full retrieval on a toy BEIR dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from raykd.errors import ConfigError
from raykd.eval.metrics import evaluate_run, read_trec_run, write_trec_run
from raykd.index import BM25Index, DenseIndex

QRELS = {"q1": {"d1": 2, "d2": 1, "d3": 0}, "q2": {"d4": 3}}
RUN = {"q1": {"d3": 3.0, "d2": 2.0, "d1": 1.0}, "q2": {"d5": 2.0, "d4": 1.0}}


def test_metrics_match_hand_computed_values():
    """Guards the metric wiring against METHODS.md 6.3 (ir_measures, trec_eval conventions)."""
    got = evaluate_run(QRELS, RUN, ["RR@10", "nDCG@10", "R@1000"])
    assert got["RR@10"] == pytest.approx(0.5, abs=1e-6)
    assert got["nDCG@10"] == pytest.approx(0.625418, abs=1e-6)
    assert got["R@1000"] == pytest.approx(1.0)
    assert evaluate_run(QRELS, RUN, ["RR@10"], rel=2)["RR@10"] == pytest.approx(0.416667, abs=1e-6)


def test_query_missing_from_run_counts_as_zero():
    """Guards the BEIR convention: an unanswered query scores 0 instead of being dropped."""
    got = evaluate_run(QRELS, {"q1": RUN["q1"]}, ["RR@10"])
    assert got["RR@10"] == pytest.approx(0.25)


def test_trec_run_round_trip_and_tie_order(tmp_path):
    """Guards the run file: same scores back, ties broken by docid descending."""
    run = {"q1": {"a": 1.0, "b": 1.0, "ab": 1.0, "c": 2.5}, "q2": {"x": -0.5}}
    write_trec_run(tmp_path / "run.trec", run, tag="t")
    lines = (tmp_path / "run.trec").read_text().splitlines()
    assert [line.split()[2] for line in lines[:4]] == ["c", "b", "ab", "a"]
    assert lines[0].split()[3:] == ["1", "2.500000", "t"]
    assert read_trec_run(tmp_path / "run.trec") == run


def test_flat_index_equals_exact_inner_product_and_ivf_agrees():
    """Guards faiss search: flat is exact; IVF probing every list finds the same neighbours."""
    rng = np.random.default_rng(0)
    passages = rng.normal(size=(500, 16)).astype(np.float32)
    queries = rng.normal(size=(7, 16)).astype(np.float32)
    ids = [f"p{i}" for i in range(500)]
    flat = DenseIndex(16)
    for start in range(0, 500, 128):  # added in streamed batches
        flat.add(ids[start:start + 128], passages[start:start + 128])
    scores, got = flat.search(queries, 10)
    exact = queries @ passages.T
    top = np.argsort(-exact, axis=1)[:, :10]
    assert got == [[ids[j] for j in row] for row in top]
    np.testing.assert_allclose(scores, np.take_along_axis(exact, top, 1), rtol=1e-5)

    ivf = DenseIndex(16, kind="ivf", nlist=8, nprobe=8, train_size=256)
    for start in range(0, 500, 100):
        ivf.add(ids[start:start + 100], passages[start:start + 100])
    assert ivf.search(queries, 10)[1] == got
    with pytest.raises(ConfigError, match="index.kind"):
        DenseIndex(16, kind="hnsw")


def test_bm25_ranks_the_matching_passage_first():
    """Guards BM25 wiring: stemming and stopwords let 'mitochondrial' match 'mitochondria'."""
    index = BM25Index().index([("a", "The mitochondria produce energy in cells"),
                               ("b", "Rivers flow to the sea"),
                               ("c", "Bank interest rates rose again")], show_progress=False)
    scores, ids = index.search(["mitochondrial energy", "interest rate"], 2, show_progress=False)
    assert ids[0][0] == "a" and ids[1][0] == "c"
    assert scores[0][0] > scores[0][1]


@pytest.fixture()
def toy_beir(tmp_path):
    root = tmp_path / "toy"
    (root / "qrels").mkdir(parents=True)
    docs = [("d1", "Mitosis", "Cells divide by mitosis into two daughter cells."),
            ("d2", "Rivers", "Rivers carry water from mountains to the sea."),
            ("d3", "Vitamin D", "Vitamin D supplements reduce fractures in the elderly."),
            ("d4", "Banks", "Central banks raise interest rates to slow inflation.")]
    with open(root / "corpus.jsonl", "w") as f:
        for pid, title, text in docs:
            f.write(json.dumps({"_id": pid, "title": title, "text": text}) + "\n")
    with open(root / "queries.jsonl", "w") as f:
        f.write(json.dumps({"_id": "q1", "text": "how do cells divide"}) + "\n")
        f.write(json.dumps({"_id": "q2", "text": "vitamin d and fractures"}) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t1\n")
    return root


def test_dense_and_bm25_retrieval_end_to_end(ray_local, toy_beir, tiny_encoder_dir, tmp_path):
    """Guards the evaluation path: Ray Data encoding, faiss search, metrics and written outputs."""
    from raykd.data.beir import BeirDataset
    from raykd.eval.retrieval import bm25_retrieval, dense_retrieval
    from raykd.students import BiEncoder

    dataset = BeirDataset.from_dir(toy_beir)
    dense = dense_retrieval(tiny_encoder_dir, dataset, "test", k=4, concurrency=1, batch_size=2)
    assert set(dense.run) == {"q1", "q2"} and all(len(r) == 4 for r in dense.run.values())
    # The ranking must equal an in-process exact computation with the same model.
    model = BiEncoder.from_pretrained(tiny_encoder_dir)
    texts = [f"{r['title']} {r['text']}" for r in dataset.iter_corpus()]
    pids = [r["pid"] for r in dataset.iter_corpus()]
    q = model.encode_queries(["how do cells divide"])
    exact = (q @ model.encode_passages(texts).T)[0]
    assert list(dense.run["q1"]) == [pids[j] for j in np.argsort(-exact)]

    bm25 = bm25_retrieval(dataset, "test", k=4)
    assert bm25.metrics["RR@10"] == pytest.approx(1.0)
    out = bm25.save(tmp_path / "out")
    assert json.loads((out / "metrics.json").read_text())["metrics"]["RR@10"] == pytest.approx(1.0)
    assert read_trec_run(out / "run.trec").keys() == {"q1", "q2"}


def test_corpus_embeddings_are_cached_by_weights_not_path(ray_local, toy_beir, tiny_encoder_dir,
                                                          tmp_path, monkeypatch):
    """Guards the embedding cache: a copy of the same student reuses the encoded corpus, and a
    different pooling config does not."""
    import shutil

    import raykd.index.encode as encode
    from raykd.index.search import corpus_index
    from raykd.students import BiEncoder

    cache = str(tmp_path / "emb")
    corpus = str(toy_beir / "corpus.jsonl")
    student = BiEncoder.from_pretrained(tiny_encoder_dir, pooling="mean")
    first_dir = student.save(tmp_path / "a")
    first = corpus_index(str(first_dir), corpus, cache_dir=cache, concurrency=1)
    copy_dir = shutil.copytree(first_dir, tmp_path / "b")

    def no_encoding(*args, **kwargs):
        raise AssertionError("the corpus was encoded again")

    monkeypatch.setattr(encode, "encode_corpus", no_encoding)
    again = corpus_index(str(copy_dir), corpus, cache_dir=cache, concurrency=1)
    query = student.encode_queries(["how do cells divide"])
    assert again.search(query, 4)[1] == first.search(query, 4)[1]
    cls_dir = BiEncoder.from_pretrained(str(first_dir), pooling="cls").save(tmp_path / "c")
    with pytest.raises(AssertionError, match="encoded again"):
        corpus_index(str(cls_dir), corpus, cache_dir=cache, concurrency=1)


def test_evaluation_in_a_searcher_actor_ranks_as_in_the_driver(ray_local, toy_beir,
                                                               tiny_encoder_dir, tmp_path):
    """Guards moving a large corpus's evaluation out of the driver: the same flat index
    searched in a `StoreSearcher` actor (unpinned, 2 CPUs and faiss threads) gives the
    driver's run exactly, scores included; `auto` on a small corpus is flat in the driver."""
    from raykd.data.beir import BeirDataset
    from raykd.eval.retrieval import dense_retrieval
    from raykd.index.search import SearcherPlacement

    dataset = BeirDataset.from_dir(toy_beir)
    common = dict(k=4, concurrency=1, batch_size=2, cache_dir=str(tmp_path / "emb"))
    here = dense_retrieval(tiny_encoder_dir, dataset, "test", **common)
    auto = dense_retrieval(tiny_encoder_dir, dataset, "test", index_kind="auto", **common)
    actor = dense_retrieval(tiny_encoder_dir, dataset, "test", in_actor=True,
                            searcher=SearcherPlacement(cpus=2, pinned=False), **common)
    uncached = dense_retrieval(tiny_encoder_dir, dataset, "test", k=4, concurrency=1,
                               batch_size=2)
    assert here.run == auto.run == actor.run
    assert {q: list(r) for q, r in here.run.items()} == \
        {q: list(r) for q, r in uncached.run.items()}
    assert here.metrics == actor.metrics
