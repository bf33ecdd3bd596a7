"""Candidate groups from mined rankings: positives first (label 1), then sampled negatives.

    mine_negatives(data, split, out, source="union", depth=100, num_negatives=7, ...)

Flow, one chunk of queries at a time: rankings (BM25 / dense / union) -> per-query sampling
(seeded by qid) -> plans spilled to disk; then the texts of the chosen pids only, from a second
corpus stream (`raykd.negatives.spill`) -> groups validated and written as JSONL or parquet
(one file, or `num_shards` files in a folder) with a `_mining.yaml` / `<file>.mining.yaml`
record of the parameters and counts.
"""

from __future__ import annotations

import logging
import random
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path

import yaml

from raykd.errors import ConfigError, DataError
from raykd.negatives.mining import QUERY_CHUNK, Rankings, Source, corpus_path_of
from raykd.negatives.rankers import open_ranker, query_chunks
from raykd.negatives.sampling import NegativeSampler
from raykd.negatives.spill import PlanSpill, plan_texts

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "jsonl.gz", "parquet")


@dataclass
class MiningReport:
    """Counts and timings of one mining run."""

    source: str
    split: str
    outputs: list[str] = field(default_factory=list)
    queries: int = 0
    groups: int = 0
    skipped_no_positive: int = 0
    positives: int = 0
    negatives: int = 0
    short_groups: int = 0  # fewer negatives than asked for
    positive_in_topk: int = 0  # queries with a labelled positive in their top `depth`
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        recall = self.positive_in_topk / self.groups if self.groups else 0.0
        return (f"{self.groups} groups from {self.queries} {self.split} queries "
                f"({self.skipped_no_positive} without a positive skipped); "
                f"{self.positives} positives, {self.negatives} negatives, "
                f"{self.short_groups} groups short of negatives; a positive in the "
                f"{self.source} top-k for {recall:.1%} of queries")

    def to_dict(self) -> dict:
        return asdict(self)


def plan_groups(rankings: Rankings, qrels: Mapping[str, Mapping[str, int]],
                sampler: NegativeSampler, *, min_rel: int = 1,
                report: MiningReport | None = None) -> Iterator[dict]:
    """Per query (in `rankings` order): ``{qid, pids, labels, kinds, ranks}`` without texts.

    Positives are the qrels with grade >= `min_rel`, in qrels order; any pid judged relevant
    (grade > 0) is excluded from the negatives. Queries without a positive are skipped."""
    report = report or MiningReport("?", "?")
    for qid, ranking in rankings.items():
        judged = qrels.get(qid, {})
        positives = [p for p, g in judged.items() if g >= min_rel]
        report.queries += 1
        if not positives:
            report.skipped_no_positive += 1
            continue
        exclude = {p for p, g in judged.items() if g > 0}
        chosen = sampler.sample(qid, ranking, exclude)
        if len(chosen) < sampler.num_negatives:
            report.short_groups += 1
        if not set(positives).isdisjoint(ranking[:sampler.depth]):
            report.positive_in_topk += 1
        report.groups += 1
        report.positives += len(positives)
        report.negatives += len(chosen)
        yield {"qid": qid,
               "pids": positives + [pid for _, pid in chosen],
               "labels": [1] * len(positives) + [0] * len(chosen),
               "kinds": ["pos"] * len(positives) + ["neg"] * len(chosen),
               "ranks": [-1] * len(positives) + [rank for rank, _ in chosen]}


def fill_texts(plans: Iterable[dict], queries: Mapping[str, str], texts: Mapping[str, str],
               source: str = "<corpus>") -> Iterator[dict]:
    """Candidate groups (the DESIGN.md contract) from plans, query texts and passage texts."""
    for plan in plans:
        missing = [p for p in plan["pids"] if p not in texts]
        if missing:
            raise DataError(source, None, "pid", f"query {plan['qid']!r}: passage(s) "
                            f"{missing[:5]} are not in the corpus")
        yield {"qid": plan["qid"], "query": queries[plan["qid"]], "pids": plan["pids"],
               "texts": [texts[p] for p in plan["pids"]], "labels": plan["labels"],
               "kinds": plan["kinds"]}


def _output_format(out: Path, fmt: str | None) -> tuple[str, bool]:
    """(format, single_file) for an output path."""
    name = out.name
    for candidate in ("jsonl.gz", "jsonl", "parquet"):
        if name.endswith("." + candidate):
            if fmt and fmt != candidate:
                raise ConfigError("out", f"{out} does not end in .{fmt}")
            return candidate, True
    fmt = fmt or "jsonl"
    if fmt not in FORMATS:
        raise ConfigError("format", f"{fmt!r} is not one of {FORMATS}")
    return fmt, False


def write_candidate_groups(groups: Iterable[Mapping], out, *, num_shards: int = 1,
                           fmt: str | None = None, count: int | None = None) -> list[str]:
    """Write groups to `out`: a ``.jsonl[.gz]``/``.parquet`` file (num_shards must be 1), or a
    folder of ``part-XXXXX-of-YYYYY.<fmt>`` shards holding contiguous runs of the groups.
    Each file is validated and written atomically; returns the paths. With the groups'
    `count` known, shards are written as the groups stream in; without it they are listed."""
    from raykd.data.groups import write_groups_jsonl, write_groups_parquet

    out = Path(out)
    fmt, single = _output_format(out, fmt)
    if num_shards < 1:
        raise ConfigError("num_shards", f"must be >= 1, got {num_shards}")
    write = write_groups_parquet if fmt == "parquet" else write_groups_jsonl
    if single:
        if num_shards != 1:
            raise ConfigError("num_shards", f"{out} is one file; give a folder to shard")
        write(out, groups)
        return [str(out)]
    if count is None:
        groups = list(groups)
        count = len(groups)
    groups = iter(groups)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("part-*-of-*.*"):
        stale.unlink()
    size = -(-count // num_shards) if count else 0
    paths = []
    for shard in range(num_shards):
        path = out / f"part-{shard:05d}-of-{num_shards:05d}.{fmt}"
        write(path, islice(groups, size))
        paths.append(str(path))
    leftover = sum(1 for _ in groups)
    if leftover:
        raise ValueError(f"write_candidate_groups: {leftover} groups beyond count={count}")
    return paths


def mine_negatives(data, split: str, out, *, source: Source = "union",
                   model: str | None = "minilm", depth: int = 100, num_negatives: int = 7,
                   sampling: str = "random", window: tuple[int, int] = (0, 100), seed: int = 13,
                   min_rel: int = 1, num_shards: int = 1, fmt: str | None = None,
                   concurrency: int = 2, num_gpus: float = 0.0, batch_size: int = 64,
                   student_options: dict | None = None, index_kind: str = "auto",
                   nprobe: int | None = None, k1: float = 1.5, b: float = 0.75,
                   max_queries: int | None = None, cache_dir: str | None = None,
                   chunk: int = QUERY_CHUNK, searcher=None) -> MiningReport:
    """Mine, sample and write the candidate groups of a BEIR split (`data`: a folder or a
    `BeirDataset`). Dense sources need Ray (`raykd.runtime.init_ray()`). `max_queries` keeps a
    seeded sample of the split's labelled queries (a smaller training budget). Dense search
    uses `index_kind` (``auto``: exact flat below `raykd.index.faiss_index.FLAT_BELOW` passages,
    IVF with `nprobe` above); queries stream through ranking, sampling and writing `chunk` at
    a time. Dense mining encodes the corpus on `concurrency` actors of `num_gpus` each and
    searches it in an actor placed by `searcher` (a `raykd.index.search.SearcherPlacement`)."""
    from raykd.data.beir import BeirDataset

    dataset = data if isinstance(data, BeirDataset) else BeirDataset.from_dir(data)
    sampler = NegativeSampler(num_negatives=num_negatives, sampling=sampling, depth=depth,
                              window=tuple(window), seed=seed)
    report = MiningReport(source, split)
    start = time.perf_counter()
    queries = dataset.queries(split)
    qrels = dataset.qrels(split)
    if max_queries is not None:
        queries = sample_queries(queries, qrels, max_queries, seed)
    corpus = corpus_path_of(dataset)
    _rank_sample_write(report, start, corpus, queries, qrels, sampler, out, min_rel=min_rel,
                       num_shards=num_shards, fmt=fmt, source=source, depth=depth,
                       model=model, k1=k1, b=b, concurrency=concurrency, num_gpus=num_gpus,
                       batch_size=batch_size, student_options=student_options,
                       index_kind=index_kind, nprobe=nprobe, cache_dir=cache_dir, chunk=chunk,
                       searcher=searcher)
    _write_record(Path(out), report, {
        "data": str(dataset.root), "split": split, "source": source,
        "model": model if source != "bm25" else None, "depth": depth,
        "num_negatives": num_negatives, "sampling": sampling, "window": list(window),
        "seed": seed, "min_rel": min_rel, "max_queries": max_queries,
        **_index_record(index_kind, nprobe)})
    log.info("%s", report.summary())
    return report


def mine_pseudo_queries(data, out, *, count: int, rule: str = "sentence", pseudo_seed: int = 13,
                        min_words: int = 5, max_words: int = 40, source: Source = "union",
                        model: str | None = "minilm", depth: int = 100, num_negatives: int = 7,
                        sampling: str = "random", window: tuple[int, int] = (0, 100),
                        seed: int = 13, num_shards: int = 1, fmt: str | None = None,
                        concurrency: int = 2, num_gpus: float = 0.0, batch_size: int = 64,
                        student_options: dict | None = None, index_kind: str = "auto",
                        nprobe: int | None = None, k1: float = 1.5, b: float = 0.75,
                        cache_dir: str | None = None, searcher=None,
                        source_as_positive: bool = False, echo=log.info) -> MiningReport:
    """Candidate groups for queries nobody labelled: pseudo-queries made from a seeded sample
    of `count` corpus passages (`raykd.data.pseudo_queries`), ranked by the same first stage
    as labelled queries, negatives sampled by the same policy.

    Each group is the source passage first, with the query's sentence removed from its text
    (inverse cloze), then the sampled negatives (the source excluded). No candidate carries a
    label (`labels` all 0; the source's kind is `source`): their training signal is the
    teacher's scores alone. No labelled query of any split can become a pseudo-query (exact
    matches up to case and spacing are dropped and counted). With `source_as_positive` the
    source passage is labelled instead (inverse-cloze contrastive training)."""
    from raykd.data.beir import BeirDataset
    from raykd.data.pseudo_queries import make_pseudo_queries

    dataset = data if isinstance(data, BeirDataset) else BeirDataset.from_dir(data)
    sampler = NegativeSampler(num_negatives=num_negatives, sampling=sampling, depth=depth,
                              window=tuple(window), seed=seed)
    report = MiningReport(source, "corpus")
    start = time.perf_counter()
    corpus = corpus_path_of(dataset)
    made, made_report = make_pseudo_queries(
        ((row["pid"], row["title"], row["text"]) for row in dataset.iter_corpus()),
        count=count, rule=rule, seed=pseudo_seed, min_words=min_words, max_words=max_words,
        exclude_texts=list(dataset.all_queries().values()))
    echo(f"[raykd] pseudo-queries: {made_report.summary()}")
    if not made:
        raise DataError(str(corpus), None, "text", f"no pseudo-query could be made from "
                        f"{made_report.sampled} sampled passages ({made_report.summary()})")
    sources = {q.qid: q for q in made}
    qrels = {q.qid: {q.pid: 1} for q in made}  # the source, kept out of the negatives
    _rank_sample_write(report, start, corpus, {q.qid: q.text for q in made}, qrels, sampler,
                       out, num_shards=num_shards, fmt=fmt,
                       shape=lambda groups: _pseudo_groups(groups, sources, source_as_positive),
                       source=source, depth=depth, model=model, k1=k1, b=b,
                       concurrency=concurrency, num_gpus=num_gpus, batch_size=batch_size,
                       student_options=student_options, index_kind=index_kind,
                       nprobe=nprobe, cache_dir=cache_dir, searcher=searcher)
    if not source_as_positive:  # the sources only steered sampling: no candidate is labelled
        report.positives = 0
    _write_record(Path(out), report, {
        "data": str(dataset.root), "queries": "corpus", "rule": rule, "count": count,
        "pseudo_seed": pseudo_seed, "min_words": min_words, "max_words": max_words,
        "pseudo": made_report.summary(), "source": source,
        "model": model if source != "bm25" else None, "depth": depth,
        "num_negatives": num_negatives, "sampling": sampling, "window": list(window),
        "seed": seed, "source_as_positive": source_as_positive,
        **_index_record(index_kind, nprobe)})
    echo(f"[raykd] {report.summary()}")
    return report


def _rank_sample_write(report: MiningReport, start: float, corpus, queries: Mapping[str, str],
                       qrels: Mapping, sampler: NegativeSampler, out, *, min_rel: int = 1,
                       num_shards: int = 1, fmt: str | None = None, shape=None, source: Source,
                       depth: int, model: str | None, chunk: int = QUERY_CHUNK,
                       **mine_options) -> None:
    """The one candidate writer, streamed per chunk of `chunk` queries: rankings from `source`
    and sampled plans spilled to disk, the chosen passages' texts fetched in one corpus stream,
    groups (reshaped by `shape`, if given) written; timings and counts in `report`. The driver
    holds one chunk's rankings, plans and texts at a time."""
    with tempfile.TemporaryDirectory(prefix="raykd-plans-") as tmp:
        spill = PlanSpill(Path(tmp) / "plans.jsonl")
        count = 0
        with open_ranker(source, corpus, depth, model=model, timings=report.seconds,
                         **mine_options) as rank:
            for part in query_chunks(queries, chunk):
                count += spill.append(plan_groups(rank(part), qrels, sampler, min_rel=min_rel,
                                                  report=report))
        report.seconds["mine"] = time.perf_counter() - start
        start = time.perf_counter()
        with plan_texts(corpus, spill) as lookup:
            report.seconds["texts"] = time.perf_counter() - start
            start = time.perf_counter()
            groups = (group for plans in spill.chunks(chunk)
                      for group in fill_texts(plans, queries,
                                              lookup({p for plan in plans for p in plan["pids"]}),
                                              str(corpus)))
            report.outputs = write_candidate_groups(shape(groups) if shape else groups, out,
                                                    num_shards=num_shards, fmt=fmt, count=count)
        report.seconds["write"] = time.perf_counter() - start


def _pseudo_groups(groups: Iterable[dict], sources: Mapping, source_as_positive: bool
                   ) -> Iterator[dict]:
    """Pseudo-query groups: the source passage's text without the query; no labels, or the
    source labelled as the positive."""
    for group in groups:
        source = sources[group["qid"]]
        group["texts"][0] = source.passage_text
        rest = len(group["pids"]) - 1
        group["labels"] = [int(source_as_positive)] + [0] * rest
        group["kinds"] = ["pos" if source_as_positive else "source"] + ["neg"] * rest
        yield group


def sample_queries(queries: dict[str, str], qrels: dict, limit: int, seed: int
                   ) -> dict[str, str]:
    """A seeded sample of `limit` labelled queries (all of them when there are fewer)."""
    if limit < 1:
        raise ConfigError("data.max_queries", f"must be >= 1, got {limit}")
    labelled = sorted(q for q in queries if qrels.get(q))
    if len(labelled) <= limit:
        return {q: queries[q] for q in labelled}
    chosen = sorted(random.Random(seed).sample(labelled, limit))
    return {q: queries[q] for q in chosen}


def _index_record(index_kind: str, nprobe: int | None) -> dict:
    """The dense index settings for the mining record, when not the defaults (so that records
    written before they existed stay the same)."""
    out = {"index_kind": index_kind} if index_kind != "auto" else {}
    return out | ({"nprobe": nprobe} if nprobe is not None else {})


def _write_record(out: Path, report: MiningReport, params: dict) -> None:
    from raykd.data.lines import open_for_write

    path = out / "_mining.yaml" if out.is_dir() else out.with_name(out.name + ".mining.yaml")
    with open_for_write(path) as handle:
        yaml.safe_dump({"params": params, "report": report.to_dict()}, handle, sort_keys=False)


def mine_from_spec(spec, out, *, model: str | None = "minilm", **options) -> MiningReport:
    """Mine with a `raykd.config.DataSpec` (negatives_from, depth, sampling, window, seed,
    mining_index, mining_nprobe); resources (`concurrency`, `num_gpus`, `searcher`) come in
    `options`."""
    return mine_negatives(spec.dataset_dir(), spec.split, out, source=spec.negatives_from,
                          model=model, depth=spec.depth, num_negatives=spec.num_negatives,
                          sampling=spec.sampling, window=tuple(spec.window), seed=spec.seed,
                          max_queries=spec.max_queries, index_kind=spec.mining_index,
                          nprobe=spec.mining_nprobe, **options)


def refresh_negatives(student, spec, out, **options) -> MiningReport:
    """Re-mine a stage's negatives with the current student (PROD's refresh between stages):
    dense top-`spec.depth` retrieval by the student at `student` (a saved student folder),
    sampled with the spec's policy."""
    options.pop("source", None)
    return mine_negatives(spec.dataset_dir(), spec.split, out, source="student",
                          model=str(student), depth=spec.depth,
                          num_negatives=spec.num_negatives, sampling=spec.sampling,
                          window=tuple(spec.window), seed=spec.seed,
                          index_kind=spec.mining_index, nprobe=spec.mining_nprobe, **options)
