"""A cheap, periodic dev measure during training: re-rank fixed dev candidates with the student.

The driver side (`write_probe_groups`) takes the first-stage top-`depth` (BM25 or the union of
BM25 and dense) of a seeded sample of the dev queries once, as candidate groups labelled from the
qrels, into a file named by its content (shared by every run and sweep trial). The worker side
(`DevProbe`) scores those groups with the current student on rank 0 and computes the measure
(default nDCG@10) against the dev qrels of the sampled queries: the same candidates every time,
so values compare across steps and trials. It is a re-ranking measure (bounded by the
candidates' recall), not full retrieval; the stage-end evaluation stays full retrieval.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

PROBE_PREFIX = "probe/"


@dataclass
class ProbeSpec:
    """What the worker needs: the groups file, the qrels of its queries and when to measure."""

    groups: str
    qrels: dict[str, dict[str, int]]
    every: int
    measures: list[str] = field(default_factory=lambda: ["nDCG@10"])
    batch_size: int = 64

    def to_dict(self) -> dict:
        return asdict(self)

    def metric(self, measure: str = "nDCG@10") -> str:
        return PROBE_PREFIX + measure


def probe_sample(qrels: dict, queries: dict, max_queries: int | None,
                 seed: int = 13) -> list[str]:
    """The probe's queries, sorted: the judged queries with a text, or a seeded sample of
    `max_queries` of them."""
    qids = sorted(q for q in qrels if q in queries)
    if max_queries is not None and max_queries < len(qids):
        qids = sorted(random.Random(seed).sample(qids, max_queries))
    return qids


def write_probe_groups(dataset_dir: str, split: str, out_dir: str | Path, *, depth: int = 20,
                       source: str = "bm25", max_queries: int | None = None, seed: int = 13,
                       model: str = "minilm", embedding_cache: str | None = None,
                       concurrency: int = 2) -> tuple[str, dict[str, dict[str, int]]]:
    """(groups file, qrels of its queries): first-stage top-`depth` of the split's queries
    (a seeded sample of `max_queries`), cached under `out_dir` by content."""
    from raykd.data.beir import BeirDataset
    from raykd.eval.rerank import write_rerank_groups
    from raykd.negatives.first_stage import first_stage

    dataset = BeirDataset.from_dir(dataset_dir)
    qrels = dataset.qrels(split)
    texts = dataset.queries(split)
    qids = probe_sample(qrels, texts, max_queries, seed)
    queries = {q: texts[q] for q in qids}
    kwargs = {"cache_dir": embedding_cache} if embedding_cache else {}
    stage = first_stage(dataset, split, depth=depth, source=source, model=model,
                        concurrency=concurrency, queries=queries, **kwargs)
    candidates = stage.rankings[source]
    judged = {q: qrels[q] for q in qids}
    path = write_rerank_groups(Path(out_dir), dataset, queries, candidates, judged)
    return str(path), judged


class DevProbe:
    """Rank 0's periodic measure: the student re-ranks the probe groups (no gradients)."""

    def __init__(self, spec: ProbeSpec):
        from raykd.data.groups import iter_groups

        self.spec = spec
        self.groups = list(iter_groups(spec.groups))

    @classmethod
    def from_config(cls, raw: dict | None) -> DevProbe | None:
        return cls(ProbeSpec(**raw)) if raw else None

    def due(self, step: int, final: bool) -> bool:
        return final or step % self.spec.every == 0

    @torch.no_grad()
    def measure(self, student) -> dict[str, float]:
        """`probe/<measure>` for the student as it is now (restores its train/eval mode)."""
        from raykd.eval.metrics import evaluate_run

        was_training = student.training
        student.eval()
        try:
            run = {g["qid"]: dict(zip(g["pids"], self._scores(student, g), strict=True))
                   for g in self.groups}
        finally:
            student.train(was_training)
        metrics = evaluate_run(self.spec.qrels, run, self.spec.measures)
        return {self.spec.metric(k): float(v) for k, v in metrics.items()}

    def _scores(self, student, group: dict) -> list[float]:
        device = next(student.parameters()).device
        q_in = {k: v.to(device) for k, v in student.tokenize([group["query"]], "query").items()}
        scores = []
        texts = list(group["texts"])
        for start in range(0, len(texts), self.spec.batch_size):
            chunk = texts[start:start + self.spec.batch_size]
            p_in = {k: v.to(device) for k, v in student.tokenize(chunk, "passage").items()}
            scores.extend(_pair_scores(student, q_in, p_in, len(chunk)))
        return scores


def _pair_scores(student, q_in: dict, p_in: dict, n: int) -> list[float]:
    """One query against n passages, with the student's own similarity (bi-encoder or MaxSim)."""
    q_emb, p_emb = student(q_in, p_in)
    if isinstance(q_emb, tuple):  # late interaction: (tokens, mask) pairs
        from raykd.students.late_interaction import maxsim

        (q, q_mask), (p, p_mask) = q_emb, p_emb
        return maxsim(q.float()[:, None], q_mask[:, None], p.float()[None], p_mask[None],
                      student.options.similarity)[0].tolist()
    return student.score(q_emb.float(), p_emb.float())[0].tolist()
