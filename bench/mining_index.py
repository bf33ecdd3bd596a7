"""Dense mining's faiss index: per-query cost of flat and IVF search, and IVF's recall.

    python bench/mining_index.py                         # both parts
    python bench/mining_index.py --skip-recall           # the cost part only (about 2 min)

1. cost: `--vectors` clustered random vectors of `--dim` (768: BERT-base), one faiss thread;
   batched flat search and IVF (the `ivf_nlist` rule, nprobe 64) over the same 500 queries,
   top 100: seconds per query and per scanned vector x dimension, and k-means seconds per
   point x list x dimension x iteration (the IVF build), the figures the MS MARCO estimate in
   BENCHMARKS.md scales;
2. recall: SciFact under the bundled MiniLM (the corpus encoded once into `--cache-dir`, the
   embedding store `make run` uses), every query of every split: recall@10 and @100 of IVF
   against exact flat search, per nprobe.
"""

from __future__ import annotations

import argparse
import os
import time

for _key, _value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
                     ("TOKENIZERS_PARALLELISM", "false"), ("RAY_USAGE_STATS_ENABLED", "0")):
    os.environ.setdefault(_key, _value)

import numpy as np  # noqa: E402


def recall(exact: list[list[str]], found: list[list[str]]) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(a)
                          for a, b in zip(exact, found, strict=True)]))


def search_cost(num_vectors: int, dim: int, nprobe: int = 64, queries: int = 500,
                seed: int = 0) -> None:
    import faiss

    from raykd.index.faiss_index import TRAIN_PER_LIST, ivf_nlist

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(2000, dim)).astype(np.float32)
    x = centres[rng.integers(0, 2000, num_vectors)] + rng.normal(
        size=(num_vectors, dim)).astype(np.float32)
    q = x[rng.choice(num_vectors, queries, replace=False)] + 0.1 * rng.normal(
        size=(queries, dim)).astype(np.float32)
    nlist = ivf_nlist(num_vectors)
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.niter = 5
    sample = x[rng.choice(num_vectors, TRAIN_PER_LIST * nlist, replace=False)]
    start = time.perf_counter()
    ivf.train(sample)
    train = time.perf_counter() - start
    ivf.add(x)
    ivf.nprobe = nprobe
    flat = faiss.IndexFlatIP(dim)
    flat.add(x)
    print(f"cost: {num_vectors:,} x {dim} clustered random vectors, {queries} queries, top 100, "
          f"1 faiss thread")
    for name, index, scanned in (("flat", flat, num_vectors),
                                 (f"ivf nlist {nlist} nprobe {nprobe}", ivf,
                                  nprobe * num_vectors / nlist + nlist)):
        index.search(q[:20], 100)
        start = time.perf_counter()
        index.search(q, 100)
        per_query = (time.perf_counter() - start) / queries
        print(f"  {name}: {per_query * 1e3:.2f} ms/query, {scanned:,.0f} vectors scanned, "
              f"{per_query / scanned / dim * 1e9:.3f} ns per vector x dim")
    work = ivf.cp.niter * len(sample) * nlist * dim
    print(f"  k-means ({len(sample):,} points, {nlist} lists, {ivf.cp.niter} iterations): "
          f"{train:.1f} s, {train / work * 1e9:.3f} ns per point x list x dim x iteration")


def scifact_recall(cache_dir: str, nprobes: list[int]) -> None:
    import ray

    from raykd.data.beir import BeirDataset
    from raykd.datasets import scifact_dir
    from raykd.index.store import corpus_embeddings
    from raykd.runtime import init_ray
    from raykd.students import BiEncoder, resolve_model

    options = {"similarity": "cosine", "query_max_length": 64, "passage_max_length": 256}
    model = resolve_model("minilm")
    dataset = BeirDataset.from_dir(scifact_dir())
    init_ray()
    try:
        store, _ = corpus_embeddings(model, dataset.corpus_path, student_options=options,
                                     cache_dir=cache_dir)
    finally:
        ray.shutdown()
    texts = list(dataset.all_queries().values())
    vectors = BiEncoder.from_pretrained(model, **options).encode_queries(texts, batch_size=64)
    flat = store.index("flat")
    print(f"recall: SciFact, MiniLM, {len(store.pids):,} passages x {store.dim}, "
          f"{len(texts):,} queries")
    for depth in (10, 100):
        exact = flat.search(vectors, depth)[1]
        for nprobe in nprobes:
            index = store.index("ivf", nprobe=nprobe)
            print(f"  nlist {index.nlist} nprobe {nprobe} ({nprobe / index.nlist:.1%} of lists): "
                  f"recall@{depth} {recall(exact, index.search(vectors, depth)[1]):.3f}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vectors", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--cache-dir", default="outputs/embedding_cache")
    p.add_argument("--nprobes", default="1,2,4,8,16,64")
    p.add_argument("--skip-cost", action="store_true")
    p.add_argument("--skip-recall", action="store_true")
    args = p.parse_args(argv)
    if not args.skip_cost:
        search_cost(args.vectors, args.dim)
    if not args.skip_recall:
        scifact_recall(args.cache_dir, [int(n) for n in args.nprobes.split(",")])


if __name__ == "__main__":
    main()
