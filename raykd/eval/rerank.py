"""Evaluate a teacher by re-ranking first-stage candidates, or the top of another run.

    spec = teacher_preset("ensemble")                    # BM25 + MiniLM bi-encoder, z-score
    result = rerank(BeirDataset.from_dir(root), "dev", spec, depth=100)
    result = rerank(dataset, "dev", ce_spec, cascade_run="outputs/rerank/ensemble-dev/run.trec",
                    cascade_k=20)

Candidates, per query of the split:

* default: the set union of BM25 top-`depth` and dense (bi-encoder, default MiniLM) top-`depth`
  (`raykd.negatives.first_stage`); every candidate gets the teacher's score and the run is
  the candidates sorted by it.
* cascade (`cascade_run`, `cascade_k`): the top-`cascade_k` of a TREC run are re-ranked by the
  teacher and stay on top; the rest of that run follows in its own order. This is how an
  expensive cross-encoder becomes affordable on a CPU.

Scores come from the Ray Data scoring stage (`score_candidate_groups`) with the score cache, so
a rerun, or another experiment over the same (teacher, query, passage) pairs, costs no teacher
call. The candidate file and the scored shards are named by their content (candidate hash and
teacher fingerprint), so a rerun resumes and never mixes two teachers. Needs Ray running
(`raykd.runtime.init_ray`).
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from raykd.config import TeacherSpec, load_teacher_spec, teacher_spec
from raykd.data.beir import BeirDataset
from raykd.errors import ConfigError
from raykd.eval.metrics import evaluate_run, read_trec_run
from raykd.eval.retrieval import RetrievalResult
from raykd.recipes import bundled_file, bundled_names
from raykd.teachers.base import stable_hash

log = logging.getLogger(__name__)

TEACHER_PRESETS = ("ensemble", "bm25", "bi_encoder", "cross_encoder")
DEFAULT_SCORE_CACHE = "outputs/score_cache"
DEFAULT_EMBEDDING_CACHE = "outputs/embedding_cache"
CANDIDATE_RECALL = "R@cand"


# ------------------------------------------------------------------ teachers


def teacher_preset(name: str, model: str | None = None, *, query_max_length: int = 64,
                   passage_max_length: int = 256, batch_size: int = 32) -> TeacherSpec:
    """A TeacherSpec from a short name.

    `ensemble`: BM25 + bi-encoder (`model`, default the bundled MiniLM), per-query z-scores,
    equal weights. `bm25`. `bi_encoder` (`model`, default MiniLM). `cross_encoder` (`model`
    required: a HF folder or id).
    """
    lengths = {"query_max_length": query_max_length, "passage_max_length": passage_max_length,
               "batch_size": batch_size}
    if name == "ensemble":
        return teacher_spec(kind="ensemble", normalization="zscore", members=[
            {"kind": "bm25"}, {"kind": "bi_encoder", "model": model or "minilm", **lengths}])
    if name == "bm25":
        if model:
            raise ConfigError("teacher.model", "a bm25 teacher takes no model")
        return teacher_spec(kind="bm25")
    if name == "bi_encoder":
        return teacher_spec(kind="bi_encoder", model=model or "minilm", **lengths)
    if name == "cross_encoder":
        if not model:
            raise ConfigError("teacher.model", "a cross_encoder teacher needs a model "
                                               "(--model PATH: a HF folder, e.g. one written by "
                                               "raykd train-teacher)")
        return teacher_spec(kind="cross_encoder", model=model, **lengths)
    raise ConfigError("teacher", f"{name!r} is neither a preset {TEACHER_PRESETS}, an "
                                 "existing TeacherSpec YAML/JSON file nor a bundled one "
                                 f"({', '.join(bundled_names('teacher'))})")


def resolve_teacher(teacher: str, model: str | None = None, **preset_options) -> TeacherSpec:
    """`teacher` is a preset name, a spec file or a bundled spec's name (raykd/recipes/teachers/:
    `bm25_contrastive`); `model` goes with presets only."""
    if teacher in TEACHER_PRESETS:
        return teacher_preset(teacher, model, **preset_options)
    path = bundled_file(teacher, "teacher")
    if path is not None:
        if model:
            raise ConfigError("teacher.model", "--model goes with a preset (--teacher "
                                               "cross_encoder ...), not with a spec file")
        return load_teacher_spec(path)
    return teacher_preset(teacher, model)  # raises, naming the presets


def teacher_name(spec: TeacherSpec) -> str:
    """A short, readable name for output folders."""
    if spec.kind == "ensemble":
        return "ensemble-" + "+".join(teacher_name(m) for m in spec.members)
    if getattr(spec, "model", None):
        return f"{spec.kind}-{Path(spec.model.rstrip('/')).name}"
    return spec.kind


# ------------------------------------------------------------------ candidates


def ranked_ids(scores: Mapping[str, float]) -> list[str]:
    """Passage ids of one query of a run, best first; ties by passage id, descending, as
    `write_trec_run` and trec_eval order them (so a run and its file agree)."""
    by_id = sorted(scores.items(), key=lambda kv: kv[0], reverse=True)
    return [pid for pid, _ in sorted(by_id, key=lambda kv: -kv[1])]


def top_of_run(run_path: str | Path, qids: list[str]) -> dict[str, list[str]]:
    """Each query's full ranking from a TREC run; a query of the split without any row is an
    error (a cascade over the wrong split or a truncated run)."""
    run_path = Path(run_path)
    if not run_path.is_file():
        raise ConfigError("cascade_run", f"{run_path} does not exist")
    run = read_trec_run(run_path)
    missing = [q for q in qids if not run.get(q)]
    if missing:
        raise ConfigError("cascade_run", f"{run_path} ranks nothing for {len(missing)} of the "
                                         f"{len(qids)} queries (e.g. {missing[:3]}); was it made "
                                         "on this split?")
    return {q: ranked_ids(run[q]) for q in qids}


def candidate_recall(qrels: Mapping[str, Mapping[str, int]], candidates: Mapping[str, list],
                     rel: int = 1) -> float:
    """Mean over judged queries of the share of their relevant passages among the candidates
    (the ceiling of any re-ranking's recall)."""
    values = []
    for qid, judged in qrels.items():
        relevant = {p for p, g in judged.items() if g >= rel}
        if not relevant:
            continue
        found = relevant & set(candidates.get(qid, []))
        values.append(len(found) / len(relevant))
    return sum(values) / len(values) if values else 0.0


def write_rerank_groups(folder: Path, dataset: BeirDataset, queries: Mapping[str, str],
                        candidates: Mapping[str, list[str]],
                        qrels: Mapping[str, Mapping[str, int]], rel: int = 1) -> Path:
    """Candidate groups (labels from the qrels) in a parquet file named by their content."""
    from raykd.data.groups import write_groups_parquet
    from raykd.negatives.mining import fetch_passage_texts

    key = stable_hash({"candidates": {q: list(c) for q, c in candidates.items()},
                       "queries": {q: queries[q] for q in candidates}, "rel": rel,
                       "corpus": str(dataset.corpus_path)})
    path = folder / f"candidates-{key}.parquet"
    if path.is_file():
        return path
    texts = fetch_passage_texts(dataset.corpus_path, {p for c in candidates.values() for p in c})
    lost = sorted({p for c in candidates.values() for p in c} - set(texts))
    if lost:
        raise ConfigError("candidates", f"{len(lost)} candidate passage(s) are not in the "
                                        f"corpus {dataset.corpus_path} (e.g. {lost[:3]})")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{path.name}.tmp"

    def groups():
        for qid, pids in candidates.items():
            judged = qrels.get(qid, {})
            yield {"qid": qid, "query": queries[qid], "pids": list(pids),
                   "texts": [texts[p] for p in pids],
                   "labels": [int(judged.get(p, 0) >= rel) for p in pids]}

    write_groups_parquet(tmp, groups())
    tmp.replace(path)
    return path


# ------------------------------------------------------------------ the evaluation


@dataclass
class RerankResult(RetrievalResult):
    """A re-ranking run: its metrics plus how the candidates were made and scored."""

    info: dict = field(default_factory=dict)

    def save(self, out_dir: str | Path) -> Path:
        out = super().save(out_dir)
        payload = json.loads((out / "metrics.json").read_text())
        payload["info"] = self.info
        (out / "metrics.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
        return out


def rerank_measures(depth: int) -> list[str]:
    """nDCG@10, RR@10, R@100 and R@depth (once when depth is 100)."""
    return list(dict.fromkeys(["nDCG@10", "RR@10", "R@100", f"R@{depth}"]))


def check_rerank_options(depth: int, cascade_run, cascade_k, concurrency: int,
                         num_shards: int, groups_per_batch: int) -> None:
    """Clear errors for bad options, before any work starts."""
    if depth < 1:
        raise ConfigError("depth", f"must be >= 1, got {depth}")
    if (cascade_run is None) != (cascade_k is None):
        raise ConfigError("cascade", "a cascade needs both a run file (--cascade-run) and how "
                                     "many of its top passages to re-rank (--cascade K)")
    if cascade_k is not None and cascade_k < 1:
        raise ConfigError("cascade", f"K must be >= 1, got {cascade_k}")
    for name, value in (("concurrency", concurrency), ("num_shards", num_shards),
                        ("groups_per_batch", groups_per_batch)):
        if value < 1:
            raise ConfigError(name, f"must be >= 1, got {value}")


def rerank(dataset: BeirDataset, split: str, spec: TeacherSpec, *, depth: int = 100,
           first_stage_model: str = "minilm", cascade_run: str | Path | None = None,
           cascade_k: int | None = None, name: str | None = None,
           work_dir: str | Path = "outputs/rerank/_work",
           score_cache: str | None = DEFAULT_SCORE_CACHE,
           embedding_cache: str | Path = DEFAULT_EMBEDDING_CACHE, concurrency: int = 2,
           num_gpus: float = 0.0, num_cpus: float | None = None,
           groups_per_batch: int = 8, num_shards: int = 4, rel: int = 1,
           echo: Callable[[str], None] = log.info) -> RerankResult:
    """Re-rank a split's candidates with the teacher `spec` and evaluate the run."""
    from raykd.negatives.first_stage import first_stage
    from raykd.teachers.bi_encoder import StoredPassages
    from raykd.teachers.factory import build_teacher
    from raykd.teachers.scoring import remote_fingerprint, score_candidate_groups
    from raykd.teachers.verification import scored_pairs

    check_rerank_options(depth, cascade_run, cascade_k, concurrency, num_shards,
                         groups_per_batch)
    name = name or teacher_name(spec)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    queries = dataset.queries(split)
    qrels = dataset.qrels(split)
    qids = list(queries)
    if cascade_run is not None:
        base = top_of_run(cascade_run, qids)
        candidates = {q: base[q][:cascade_k] for q in qids}
        protocol = f"cascade: top-{cascade_k} of {cascade_run}"
        cut = cascade_k
    else:
        stage = first_stage(dataset, split, depth=depth, source="union",
                            model=first_stage_model, cache_dir=embedding_cache)
        base, candidates = None, stage.union
        protocol = (f"union of BM25 top-{depth} and dense ({first_stage_model}) "
                    f"top-{depth}")
        cut = depth
        seconds.update({f"first_stage_{k}": v for k, v in stage.seconds.items()})
    sizes = [len(c) for c in candidates.values()]
    recall = candidate_recall(qrels, candidates, rel)
    echo(f"{split}: {len(qids)} queries, {sum(sizes)} candidates ({min(sizes)}-{max(sizes)}, "
         f"mean {sum(sizes) / len(sizes):.1f} per query); {protocol}; candidate recall "
         f"{recall:.4f}")
    work = Path(work_dir)
    groups_path = write_rerank_groups(work, dataset, queries, candidates, qrels, rel)
    seconds["candidates"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    make_teacher = StoredPassages(functools.partial(build_teacher, spec, str(dataset.root)),
                                  embedding_cache, dataset.corpus_path)
    fingerprint = remote_fingerprint(make_teacher)
    scored_dir = work / f"scored-{fingerprint}-{groups_path.stem.split('-', 1)[1]}"
    report = score_candidate_groups(
        groups_path, scored_dir, make_teacher, fingerprint, num_shards=num_shards,
        concurrency=concurrency, num_gpus=num_gpus, num_cpus=num_cpus,
        batch_size=spec.batch_size, groups_per_batch=groups_per_batch, cache=score_cache)
    seconds["score"] = time.perf_counter() - t1
    echo(f"teacher {fingerprint}: {report.summary()}")

    scores = scored_pairs(scored_dir)
    run: dict[str, dict[str, float]] = {}
    for qid in qids:
        ranked = {pid: float(scores[(qid, pid)]) for pid in candidates[qid]}
        if base is not None:  # the rest of the base run, below every re-ranked passage
            floor = min(ranked.values()) if ranked else 0.0
            for i, pid in enumerate(base[qid][cascade_k:], start=1):
                ranked[pid] = floor - i
        run[qid] = ranked
    measures = rerank_measures(cut)
    metrics = evaluate_run(qrels, run, measures, rel)
    metrics[CANDIDATE_RECALL] = recall
    seconds["total"] = time.perf_counter() - t0
    info = {"protocol": protocol, "teacher": spec.model_dump(mode="json", exclude_defaults=True),
            "fingerprint": fingerprint, "candidates": str(groups_path),
            "scored": str(scored_dir), "queries": len(qids), "pairs": sum(sizes),
            "pairs_scored": report.pairs_scored, "pairs_cached": report.pairs_cached,
            "teacher_calls": report.teacher_calls}
    return RerankResult(name, split, metrics, run, seconds, info)
