"""CollectiveKD's teacher inputs (METHODS.md 4(b), 4(d)), built before training:

1. the corpus indexed at token level by the teacher (`raykd.index.late_interaction`);
2. the teacher's ranking of the training queries: hard negatives from its top `data.depth`
   (`teacher_candidates`, for `data.negatives_from: teacher`);
3. the PRF expansions of the training queries from its top `prf.docs` (`collective_expansions`),
   cached under a key of the teacher, its weights, the corpus and the queries.

The trainers then score in-batch with `raykd.train.online_teacher.CollectiveOnlineTeacher`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path

from raykd.config import DataSpec, TeacherSpec, spec_key
from raykd.errors import ConfigError
from raykd.teachers.prf import Expansions, expand_queries

log = logging.getLogger(__name__)

ENCODER_FLAGS = ("projection_dim", "similarity", "query_augmentation", "mask_punctuation")


def encoder_options(spec: TeacherSpec) -> dict:
    """`LateInteractionEncoder.from_pretrained` options of a collective teacher: its lengths,
    and the options the recipe set (others keep a saved folder's own)."""
    options = {"query_max_length": spec.query_max_length,
               "passage_max_length": spec.passage_max_length}
    options.update({k: getattr(spec, k) for k in ENCODER_FLAGS if k in spec.model_fields_set})
    return options


def _check(spec: TeacherSpec | None) -> TeacherSpec:
    if spec is None or spec.kind != "collective":
        raise ConfigError("teacher.kind", "CollectiveKD inputs need a `collective` teacher, got "
                                          f"{spec.kind if spec else None!r}")
    return spec


def teacher_index(spec: TeacherSpec, corpus_path, *, cache_dir: str | None = None,
                  concurrency: int = 1, num_gpus: float = 0.0):
    """(TokenIndex, encoder) of the corpus under the teacher model."""
    from raykd.index.late_interaction import corpus_token_index

    return corpus_token_index(_check(spec).model, corpus_path, encoder_options(spec),
                              cache_dir=cache_dir, concurrency=concurrency, num_gpus=num_gpus)


def teacher_rows(index, encoder, queries: Mapping[str, str], k: int) -> dict[str, list[int]]:
    """The teacher's top-k passage rows of `index` per query (exact MaxSim after faiss)."""
    from raykd.index.late_interaction import query_tokens

    qids = list(queries)
    tokens = query_tokens(encoder, [queries[q] for q in qids])
    similarity = encoder.options.similarity
    return {q: index.search(t, k, similarity)[0].tolist()
            for q, t in zip(qids, tokens, strict=True)}


def training_queries(data: DataSpec) -> dict[str, str]:
    """The stage's training queries: the split's, or the seeded `max_queries` sample of its
    labelled ones (the same sample negative mining takes)."""
    from raykd.data.beir import BeirDataset
    from raykd.negatives.candidates import sample_queries

    dataset = BeirDataset.from_dir(data.dataset_dir())
    queries = dataset.queries(data.split)
    if data.max_queries is not None:
        queries = sample_queries(queries, dataset.qrels(data.split), data.max_queries, data.seed)
    return queries


def teacher_candidates(spec: TeacherSpec, data: DataSpec, out, *, cache_dir: str | None = None,
                       concurrency: int = 1, num_gpus: float = 0.0):
    """Candidate groups (parquet, in folder `out`) whose negatives are sampled from the
    teacher's own top `data.depth` (METHODS.md 4(b)); returns the `MiningReport`."""
    import yaml

    from raykd.data.beir import BeirDataset
    from raykd.data.lines import open_for_write
    from raykd.negatives.candidates import (
        MiningReport,
        fill_texts,
        plan_groups,
        write_candidate_groups,
    )
    from raykd.negatives.mining import fetch_passage_texts
    from raykd.negatives.sampling import NegativeSampler

    dataset = BeirDataset.from_dir(data.dataset_dir())
    queries = training_queries(data)
    report = MiningReport("teacher", data.split)
    start = time.perf_counter()
    index, encoder = teacher_index(spec, dataset.corpus_path, cache_dir=cache_dir,
                                   concurrency=concurrency, num_gpus=num_gpus)
    rows = teacher_rows(index, encoder, queries, data.depth)
    rankings = {q: [index.pids[r] for r in ranked] for q, ranked in rows.items()}
    report.seconds["mine"] = time.perf_counter() - start
    sampler = NegativeSampler(num_negatives=data.num_negatives, sampling=data.sampling,
                              depth=data.depth, window=tuple(data.window), seed=data.seed)
    plans = list(plan_groups(rankings, dataset.qrels(data.split), sampler, report=report))
    texts = fetch_passage_texts(dataset.corpus_path, {p for plan in plans for p in plan["pids"]})
    report.outputs = write_candidate_groups(
        fill_texts(plans, queries, texts, str(dataset.corpus_path)), out, fmt="parquet")
    with open_for_write(Path(out) / "_mining.yaml") as handle:
        yaml.safe_dump({"params": {"source": "teacher", "teacher": spec.model_dump(mode="json"),
                                   **data.model_dump(mode="json")},
                        "report": report.to_dict()}, handle, sort_keys=False)
    log.info("%s", report.summary())
    return report


def group_queries(candidates: str) -> dict[str, str]:
    """{qid: query} of a candidate-group file or folder."""
    from raykd.data.ray_datasets import groups_dataset

    out = {}
    rows = groups_dataset(candidates).select_columns(["qid", "query"])
    for batch in rows.iter_batches(batch_size=1024, batch_format="numpy"):
        out.update(zip(map(str, batch["qid"]), map(str, batch["query"]), strict=True))
    return out


def expansions_key(spec: TeacherSpec, corpus_path, queries: Mapping[str, str]) -> str:
    """What decides the expansions: the teacher (options, PRF settings, weights), the corpus
    and the queries."""
    from raykd.fingerprint import file_sha256, stable_hash, weights_sha256
    from raykd.students.bundled import resolve_model

    model = Path(resolve_model(spec.model))
    teacher = spec_key(spec, exclude={"batch_size"})
    return stable_hash({"teacher": teacher,
                        "weights": weights_sha256(model) if model.is_dir() else str(model),
                        "corpus": file_sha256(corpus_path),
                        "queries": stable_hash(sorted(queries.items()))})


def collective_expansions(spec: TeacherSpec, corpus_path, queries: Mapping[str, str],
                          cache_root, *, cache_dir: str | None = None, concurrency: int = 1,
                          num_gpus: float = 0.0) -> Path:
    """The PRF expansions file of `queries` under `cache_root` (built once per key)."""
    _check(spec)
    path = Path(cache_root) / f"expansions-{expansions_key(spec, corpus_path, queries)}.npz"
    if path.exists():
        return path
    start = time.perf_counter()
    params = spec.prf
    index, encoder = teacher_index(spec, corpus_path, cache_dir=cache_dir,
                                   concurrency=concurrency, num_gpus=num_gpus)
    feedback = teacher_rows(index, encoder, queries, params.docs)
    expansions: Expansions = expand_queries(index, feedback, params)
    expansions.meta["feedback"] = {q: [index.pids[r] for r in rows]
                                   for q, rows in feedback.items()}
    expansions.save(path)
    log.info("PRF expansions of %d queries in %.0fs -> %s", len(expansions),
             time.perf_counter() - start, path)
    return path
