"""Mining at corpus scale: the IVF index and its list-count rule, and mining streamed per
query chunk (the same groups as the whole-set path)."""

from __future__ import annotations

import numpy as np
import pytest

from raykd.data.groups import iter_groups
from raykd.errors import ConfigError
from raykd.index.faiss_index import (
    DEFAULT_NPROBE,
    FLAT_BELOW,
    ivf_nlist,
    resolve_kind,
    training_rows,
)
from raykd.index.store import EmbeddingStore


def test_nlist_grows_as_the_square_root_of_the_corpus():
    """Guards the list-count rule: about 4 sqrt(N) lists (search visits nprobe of them, so
    per-query cost grows as sqrt(N), not N), never more lists than 40 training points allow,
    at least one, at most 65,536."""
    assert ivf_nlist(100_000) == 1265 and ivf_nlist(1_000_000) == 4000
    assert ivf_nlist(8_841_823) == 11894  # MS MARCO passage
    assert ivf_nlist(1000) == 25 and ivf_nlist(10) == 1 and ivf_nlist(0) == 1
    assert ivf_nlist(10**12) == 65_536


def test_auto_is_exact_below_the_threshold_and_a_bad_kind_names_the_field():
    """Guards the default: SciFact-sized corpora keep exact flat search (their mined
    candidates do not change); large ones get IVF; a typo fails naming the field."""
    assert resolve_kind("auto", 5_183) == "flat" and resolve_kind("auto", FLAT_BELOW - 1) == "flat"
    assert resolve_kind("auto", FLAT_BELOW) == "ivf" and resolve_kind("flat", 10**7) == "flat"
    with pytest.raises(ConfigError, match="index.kind"):
        resolve_kind("hnsw", 10)


@pytest.mark.parametrize("options,field", [({"index_kind": "hnsw"}, "data.mining_index"),
                                           ({"nprobe": 0}, "data.mining_nprobe")])
def test_bad_mining_index_settings_fail_naming_the_field(toy_beir_dir, tmp_path, options,
                                                         field):
    """Guards eager validation: a bad index kind or nprobe fails naming the recipe field
    before any corpus is encoded (no Ray needed to see it)."""
    from raykd.negatives import mine_negatives

    with pytest.raises(ConfigError, match=field):
        mine_negatives(toy_beir_dir, "train", tmp_path / "x.jsonl", source="dense", **options)


def _clustered(n: int, dim: int = 32, centres: int = 200, seed: int = 0) -> np.ndarray:
    """Unit vectors around random centres (embeddings cluster by topic; i.i.d. Gaussian
    vectors, IVF's worst case, do not)."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, dim))
    x = c[rng.integers(0, centres, n)] + 0.7 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_ivf_recall_against_flat_at_the_default_nprobe():
    """Guards the approximate search mining uses at scale: on 20k clustered random vectors,
    recall@50 of IVF (the rule's lists, k-means on a seeded sample, default nprobe) against exact
    flat search is at least 0.95, it is really approximate (one probe does worse), and the
    index is the same for the same seed."""
    vectors = _clustered(20_500)
    queries, corpus = vectors[:200], vectors[200:]
    store = EmbeddingStore("test", [f"p{i}" for i in range(len(corpus))],
                           np.zeros(len(corpus), np.uint64), corpus)
    _, exact = store.index("flat").search(queries, 50)
    ivf = store.index("ivf")
    assert ivf.nlist == ivf_nlist(len(corpus)) and ivf.nprobe == DEFAULT_NPROBE

    def recall(found):
        return np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(exact, found, strict=True)])

    _, approx = ivf.search(queries, 50)
    assert recall(approx) >= 0.95
    assert recall(store.index("ivf", nprobe=1).search(queries, 50)[1]) < recall(approx)
    assert store.index("auto").search(queries, 50)[1] == exact  # 20k < FLAT_BELOW: exact
    assert store.index("ivf").search(queries, 50)[1] == approx
    assert list(training_rows(10**6, 100, seed=0)) == list(training_rows(10**6, 100, seed=0))


def _old_path_groups(data, queries, qrels, source, depth, sampler, **options):
    """The whole-set path mining used before streaming: every query's ranking at once, every
    plan, every chosen text, then the groups."""
    from raykd.negatives import fetch_passage_texts, fill_texts, mine_rankings, plan_groups

    rankings = mine_rankings(source, data / "corpus.jsonl", queries, depth, **options)
    plans = list(plan_groups(rankings, qrels, sampler))
    texts = fetch_passage_texts(data / "corpus.jsonl", {p for pl in plans for p in pl["pids"]})
    return list(fill_texts(plans, queries, texts))


@pytest.mark.parametrize("num_shards,fmt", [(1, "parquet"), (3, "jsonl")])
def test_streamed_bm25_mining_writes_the_groups_of_the_whole_set_path(
        toy_beir_dir, tmp_path, num_shards, fmt):
    """Guards streaming per query chunk: 16 queries in chunks of 3 (rankings, plans and texts
    one chunk at a time, plans spilled to disk) give the same groups, in the same order and
    shards, as ranking the whole query set at once."""
    from pathlib import Path

    from raykd.data.beir import BeirDataset
    from raykd.negatives import NegativeSampler, mine_negatives, write_candidate_groups

    data = Path(toy_beir_dir)
    dataset = BeirDataset.from_dir(data)
    queries, qrels = dataset.queries("train"), dataset.qrels("train")
    sampler = NegativeSampler(num_negatives=3, sampling="random", depth=8, seed=4)
    old = _old_path_groups(data, queries, qrels, "bm25", 8, sampler, model=None)
    out = tmp_path / ("s.parquet" if num_shards == 1 else "shards")
    report = mine_negatives(data, "train", out, source="bm25", depth=8, num_negatives=3,
                            seed=4, num_shards=num_shards, fmt=fmt, chunk=3)
    assert report.groups == len(old) == 16 and len(report.outputs) == num_shards
    assert [g for path in report.outputs for g in iter_groups(path)] == old
    if num_shards > 1:  # the shards split as the listing writer splits them, byte for byte
        listed = write_candidate_groups(old, tmp_path / "listed", num_shards=num_shards,
                                        fmt=fmt)
        assert ([Path(p).read_bytes() for p in listed] ==
                [Path(p).read_bytes() for p in report.outputs])


def test_streamed_union_mining_equals_the_whole_set_path(ray_local, toy_beir_dir, tmp_path,
                                                          tiny_encoder_dir):
    """Guards the streamed dense path with Ray (the searcher actor kept across chunks, the
    texts actor): union mining in chunks of 5 equals the whole-set path, byte for byte
    whatever the chunk size and wherever the searcher runs (pinned with 1 CPU, or placed by
    Ray with 2 CPUs and faiss threads), with flat or IVF search."""
    from pathlib import Path

    from raykd.data.beir import BeirDataset
    from raykd.index.search import SearcherPlacement
    from raykd.negatives import NegativeSampler, mine_negatives

    data = Path(toy_beir_dir)
    dataset = BeirDataset.from_dir(data)
    queries, qrels = dataset.queries("train"), dataset.qrels("train")
    options = dict(model=tiny_encoder_dir, cache_dir=str(tmp_path / "cache"), concurrency=1,
                   batch_size=16)
    sampler = NegativeSampler(num_negatives=4, sampling="random", depth=10, seed=2)
    old = _old_path_groups(data, queries, qrels, "union", 10, sampler, **options)
    outs = {}
    placed = {5: None, 1024: SearcherPlacement(cpus=2, pinned=False)}
    for chunk in (5, 1024):
        outs[chunk] = tmp_path / f"c{chunk}.parquet"
        report = mine_negatives(data, "train", outs[chunk], source="union", depth=10,
                                num_negatives=4, seed=2, chunk=chunk, searcher=placed[chunk],
                                **options)
        assert report.groups == len(old) and {"bm25", "dense", "texts"} <= set(report.seconds)
    assert list(iter_groups(outs[5])) == old
    assert outs[5].read_bytes() == outs[1024].read_bytes()
    ivf = mine_negatives(data, "train", tmp_path / "ivf.parquet", source="dense", depth=10,
                         num_negatives=4, seed=2, index_kind="ivf", nprobe=2, **options)
    assert ivf.groups == len(old)
    assert (tmp_path / "ivf.parquet.mining.yaml").read_text().count("index_kind: ivf") == 1
